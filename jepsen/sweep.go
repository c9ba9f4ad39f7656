package jepsen

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SweepRow sums up the runs of one fault set.
type SweepRow struct {
	Faults   string
	Runs     int
	Valid    int
	Injected int            // faults injected, over all runs
	Ops      int            // operations, over all runs
	Reads    int            // reads judged by read_index
	Failed   map[string]int // checker -> runs it failed
	Worst    string         // the results dir of one failed run
}

// Sweep reads every summary.json below root and groups the runs by the set
// of faults they injected, for docs/jepsen.md (bin/jepsen -table).
func Sweep(root string) ([]SweepRow, error) {
	rows := map[string]*SweepRow{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "summary.json" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var s Summary
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		var kinds []string
		for k := range s.FaultCount {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		key := strings.Join(kinds, ",")
		if key == "" {
			key = "(none)"
		}
		r := rows[key]
		if r == nil {
			r = &SweepRow{Faults: key, Failed: map[string]int{}}
			rows[key] = r
		}
		r.Runs++
		if s.Valid {
			r.Valid++
		} else {
			r.Worst = filepath.Dir(path)
		}
		for _, n := range s.FaultCount {
			r.Injected += n
		}
		r.Ops += s.Ops["total"]
		r.Reads += s.Checkers["read_index"].Checked
		for name, v := range s.Checkers {
			if !v.Valid {
				r.Failed[name]++
			}
		}
		return nil
	})
	var out []SweepRow
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Faults < out[j].Faults })
	return out, err
}

// SweepTable renders rows as a Markdown table.
func SweepTable(rows []SweepRow) string {
	var b strings.Builder
	b.WriteString("| faults | runs | valid | faults injected | operations | reads judged by read_index | checkers failed (runs) |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		var failed []string
		for name, n := range r.Failed {
			failed = append(failed, fmt.Sprintf("%s (%d)", name, n))
		}
		sort.Strings(failed)
		f := "none"
		if len(failed) > 0 {
			f = strings.Join(failed, ", ")
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %s |\n", r.Faults, r.Runs, r.Valid, r.Injected, r.Ops, r.Reads, f)
	}
	return b.String()
}
