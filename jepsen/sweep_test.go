package jepsen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSweepGroupsRunsByFault(t *testing.T) {
	root := t.TempDir()
	write := func(name string, s Summary) {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeJSON(filepath.Join(dir, "summary.json"), s); err != nil {
			t.Fatal(err)
		}
	}
	ok := Verdict{Valid: true, Checked: 10}
	write("a", Summary{Valid: true, FaultCount: map[string]int{FaultPause: 4}, Ops: map[string]int{"total": 100},
		Checkers: map[string]Verdict{"read_index": ok, "linearizable": ok}})
	write("b", Summary{Valid: false, FaultCount: map[string]int{FaultPause: 3}, Ops: map[string]int{"total": 50},
		Checkers: map[string]Verdict{"read_index": {Checked: 7}, "linearizable": {}}})
	write("c", Summary{Valid: true, FaultCount: map[string]int{FaultKill: 2}, Ops: map[string]int{"total": 10},
		Checkers: map[string]Verdict{"read_index": ok}})
	rows, err := Sweep(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Faults != FaultKill || rows[1].Faults != FaultPause {
		t.Fatalf("rows %+v", rows)
	}
	p := rows[1]
	if p.Runs != 2 || p.Valid != 1 || p.Injected != 7 || p.Ops != 150 || p.Reads != 17 || p.Failed["read_index"] != 1 || p.Failed["linearizable"] != 1 {
		t.Fatalf("pause-leader row %+v", p)
	}
	table := SweepTable(rows)
	if !strings.Contains(table, "| pause-leader | 2 | 1 | 7 | 150 | 17 | linearizable (1), read_index (1) |") {
		t.Fatalf("table:\n%s", table)
	}
}
