package jepsen

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestFlipAll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	id := []byte("req-0123456789")
	orig := append(append(append([]byte("head"), id...), []byte("mid")...), id...)
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := flipAll(path, id)
	got, _ := os.ReadFile(path)
	if err != nil || n != 2 || bytes.Contains(got, id) || len(got) != len(orig) {
		t.Fatalf("flipped %d, %v: % x", n, err, got)
	}
	diff := 0
	for i := range got {
		if got[i] != orig[i] {
			diff++
		}
	}
	if diff != 2 {
		t.Fatalf("%d bytes changed, want one per occurrence", diff)
	}
}

// A damaged node may serve reads from before its damaged entry, never at
// or past it; answers of other nodes and answers from before the damage
// do not count.
func TestCheckDamaged(t *testing.T) {
	faults := []*Fault{{Kind: FaultFlip, Start: 100, End: 200, Damage: &Damage{Node: "n2", Index: 50}}}
	ops := []*Op{
		{ID: 1, F: mReadSession, Type: TypeOK, Served: "n2", Invoke: 10, Index: 80},  // before the damage
		{ID: 2, F: mReadSession, Type: TypeOK, Served: "n2", Invoke: 150, Index: 49}, // before the entry
		{ID: 3, F: mReadSession, Type: TypeOK, Served: "n1", Invoke: 150, Index: 90}, // another node
		{ID: 4, F: mReadSession, Type: TypeFail, Served: "n2", Invoke: 150, Index: 90},
	}
	if v := CheckDamaged(ops, faults); !v.Valid || v.Checked != 1 {
		t.Fatalf("valid history judged %+v", v)
	}
	ops = append(ops, &Op{ID: 5, F: mReadFootprnt, Type: TypeOK, Served: "n2", Invoke: 300, Index: 50})
	if v := CheckDamaged(ops, faults); v.Valid || len(v.Problems) != 1 {
		t.Fatalf("a read at the damaged entry judged %+v", v)
	}
}
