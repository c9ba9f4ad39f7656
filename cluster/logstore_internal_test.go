package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestOpenLogStoreChoosesAndKeepsTheStore(t *testing.T) {
	for _, kind := range []string{LogStoreBolt, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openLogStore(dir, kind, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")}}); err != nil {
				t.Fatal(err)
			}
			if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
				t.Fatal(err)
			}
			// A second process on the same dir is refused at once.
			if _, err := openLogStore(dir, "", nil); err == nil || !strings.Contains(err.Error(), "locked by another process") {
				t.Errorf("second open while the store is open: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Reopened without naming a store: the one the dir holds.
			s, err = openLogStore(dir, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var l raft.Log
			if err := s.GetLog(1, &l); err != nil || string(l.Data) != "x" {
				t.Errorf("log entry after reopen: %+v %v", l, err)
			}
			if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
				t.Errorf("stable store after reopen: %d %v", v, err)
			}
			_, isWAL := s.(*walStore)
			if isWAL != (kind == LogStoreWAL) {
				t.Errorf("reopened a %s dir as %T", kind, s)
			}
			other := LogStoreWAL
			if kind == LogStoreWAL {
				other = LogStoreBolt
			}
			s.Close()
			if _, err := openLogStore(dir, other, nil); err == nil || !strings.Contains(err.Error(), "holds a "+kind+" log store") {
				t.Errorf("opening a %s dir as %s: %v", kind, other, err)
			}
		})
	}
}

func TestOpenLogStoreRefusesUnknownAndMixedDirs(t *testing.T) {
	if _, err := openLogStore(t.TempDir(), "rocks", nil); err == nil {
		t.Error("unknown store name accepted")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := openLogStore(dir, "", nil); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("dir with both stores: %v", err)
	}
}
