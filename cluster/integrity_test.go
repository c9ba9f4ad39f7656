package cluster_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

func newTunedNode(t *testing.T, id string, bootstrap bool, tune func(*cluster.Config)) *tnode {
	t.Helper()
	tn := &tnode{id: id, dir: t.TempDir(), bootstrap: bootstrap, tune: tune}
	tn.open(t)
	return tn
}

// flipInFiles flips one byte of every copy of marker in the files under
// root whose name matches keep, and returns how many copies it changed.
// bbolt writes pages copy-on-write, so a stale copy of an entry may sit in
// a freed page beside the live one: flip them all.
func flipInFiles(t *testing.T, root string, keep func(name string) bool, marker []byte) int {
	t.Helper()
	flipped := 0
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || !keep(fi.Name()) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n := 0
		for off := 0; ; {
			i := bytes.Index(b[off:], marker)
			if i < 0 {
				break
			}
			b[off+i+len(marker)-1] ^= 0x01 // the last character: still a valid request id
			off += i + len(marker)
			n++
		}
		if n > 0 {
			flipped += n
			return os.WriteFile(path, b, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return flipped
}

// A byte flipped in a committed entry of a stopped follower's log (raft.db,
// or a raft-wal segment) never makes that follower serve another state at
// the same index: it replays its log up to the damaged entry, refuses it
// (checksum), and halts there with the digest the leader had at that index;
// it refuses reads and writes with the reason, and the others go on.
func TestFlippedByteInFollowerLogHalts(t *testing.T) {
	for _, store := range []string{cluster.LogStoreBolt, cluster.LogStoreWAL} {
		t.Run(store, func(t *testing.T) {
			file := func(name string) bool { return name == "raft.db" }
			if store == cluster.LogStoreWAL {
				file = func(name string) bool { return strings.HasSuffix(name, ".wal") }
			}
			flippedFollowerHalts(t, store, file)
		})
	}
}

func flippedFollowerHalts(t *testing.T, store string, file func(string) bool) {
	tune := func(c *cluster.Config) { c.LogStore = store }
	n1 := newTunedNode(t, "f1", true, tune)
	waitReady(t, n1.n)
	n2, n3 := newTunedNode(t, "f2", false, tune), newTunedNode(t, "f3", false, tune)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tn := range []*tnode{n2, n3} {
		if err := n1.n.Join(ctx, tn.id, tn.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	a := fsm.AuthorityID(uuid())
	for i := 0; i < 5; i++ {
		propose(t, n1.n, native(a, fsm.SessionID(uuid())))
	}
	beforeIdx, beforeDigest := n1.n.Digest()
	var rnd [8]byte
	copy(rnd[:], uuid().String())
	marker := "flip-marker-" + hex.EncodeToString(rnd[:])
	damaged := propose(t, n1.n, fsm.Command{RequestID: marker, Op: &fsm.ExtendFootprint{Authority: a, Session: fsm.SessionID(uuid()), Class: fsm.Native}})
	if damaged.Index != beforeIdx+1 {
		t.Fatalf("the marked write is at %d, after %d", damaged.Index, beforeIdx)
	}
	var last fsm.Result
	for i := 0; i < 5; i++ {
		last = propose(t, n1.n, native(a, fsm.SessionID(uuid())))
	}
	waitFor(t, "f3 to apply everything", func() bool { return n3.n.FSM().AppliedIndex() >= last.Index })

	n3.close()
	if n := flipInFiles(t, n3.dir, file, []byte(marker)); n == 0 {
		t.Fatalf("the marked entry is not in %s's %s files", n3.id, store)
	}
	n3.open(t)

	waitFor(t, "f3 to halt at the damaged entry", func() bool { return n3.n.Halted() != nil })
	err := n3.n.Halted()
	if !errors.Is(err, cluster.ErrHalted) || !errors.Is(err, fsm.ErrChecksum) || !strings.Contains(err.Error(), "checksum does not match") {
		t.Fatalf("halt reason: %v", err)
	}
	if idx, d := n3.n.Digest(); idx != beforeIdx || d != beforeDigest {
		t.Fatalf("f3 halted at %d (want %d), digest equal to the leader's at that index: %v", idx, beforeIdx, d == beforeDigest)
	}
	if err := n3.n.LinearizableRead(ctx); !errors.Is(err, cluster.ErrHalted) {
		t.Fatalf("read on the halted follower: %v", err)
	}
	// The cluster goes on without it; it stays where it stopped.
	more := propose(t, n1.n, native(a, fsm.SessionID(uuid())))
	waitFor(t, "f2 to apply", func() bool { return n2.n.FSM().AppliedIndex() >= more.Index })
	if idx, _ := n3.n.Digest(); idx != beforeIdx {
		t.Fatalf("the halted follower moved to %d", idx)
	}
	if _, d2 := n2.n.Digest(); d2 == beforeDigest {
		t.Fatal("f2 did not move on")
	}
}

// raft.db cut short at several sizes: the node refuses to start with an
// error naming the file, within a bounded time, never a panic, a SIGBUS
// (which would kill this test process) or an endless loop; the file is
// left as it was. A cut that removes only the room bbolt preallocates past
// its last page leaves a sound database: then the node starts with all of
// its state.
func TestTruncatedRaftDB(t *testing.T) {
	dir := t.TempDir()
	n, err := openAt(t, "t1", dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n)
	a := fsm.AuthorityID(uuid())
	for i := 0; i < 300; i++ {
		propose(t, n, fsm.Command{RequestID: "fill-" + uuid().String(), Op: &fsm.ExtendFootprint{Authority: fsm.AuthorityID(uuid()), Session: fsm.SessionID(uuid()), Class: fsm.Native}})
	}
	propose(t, n, native(a, fsm.SessionID(uuid())))
	shutdown(n)
	path := filepath.Join(dir, "raft.db")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	sizes := map[string]int{
		"a third":               len(orig) / 3,
		"a third, page-aligned": len(orig) / 3 / page * page,
		"half":                  len(orig) / 2,
		"two thirds":            len(orig) * 2 / 3,
		"all but a page":        len(orig) - page,
		"all but a byte":        len(orig) - 1,
		"meta pages only":       2 * page,
		"one meta page":         page,
	}
	for name, size := range sizes {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, orig[:size], 0o600); err != nil {
				t.Fatal(err)
			}
			sum := hashTree(t, dir)
			done := make(chan error, 1)
			go func() {
				n, err := openAt(t, "t1", dir, true, nil)
				if err == nil {
					defer shutdown(n)
					waitReady(t, n)
					if fp := footprint(n, a); len(fp.Native) != 1 {
						err = fmt.Errorf("started without all of its state: %+v", fp)
					} else {
						t.Logf("%d of %d bytes: only preallocated room was cut; started with all the state", size, len(orig))
						done <- nil
						return
					}
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					return
				}
				wantErr(t, name, err, path, "not a readable Raft log store", "docs/operations.md")
			case <-time.After(30 * time.Second):
				t.Fatalf("%d of %d bytes: the node neither started nor refused within 30s", size, len(orig))
			}
			if hashTree(t, dir) != sum {
				t.Fatal("a failed start changed the data dir")
			}
		})
	}
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err = openAt(t, "t1", dir, true, nil)
	if err != nil {
		t.Fatalf("the whole file: %v", err)
	}
	waitReady(t, n)
	if fp := footprint(n, a); len(fp.Native) != 1 {
		t.Fatalf("the whole file lost state: %+v", fp)
	}
	shutdown(n)
}

// newestSnapshot is the snapshot dir with the highest index (dir names
// are term-index-time, which do not sort as strings).
func newestSnapshot(t *testing.T, dirs []string) string {
	t.Helper()
	best, bestIndex := "", -1.0
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "meta.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m struct{ Index float64 }
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Index > bestIndex {
			best, bestIndex = d, m.Index
		}
	}
	return best
}

// editMeta rewrites the Index in a snapshot's meta.json.
func editMeta(t *testing.T, snapDir string, delta uint64) {
	t.Helper()
	path := filepath.Join(snapDir, "meta.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["Index"] = m["Index"].(float64) + float64(delta)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The Index in the newest snapshot's meta.json raised by 6: the snapshot is
// refused (its header says otherwise) and the node comes back from the
// older snapshot and the log with every acknowledged write. When the log no
// longer reaches back to the older snapshot, the node refuses to start,
// saying so, instead of panicking on the missing entries.
func TestEditedSnapshotMeta(t *testing.T) {
	for _, reach := range []bool{true, false} {
		t.Run(fmt.Sprintf("log reaches the older snapshot %v", reach), func(t *testing.T) {
			dir := t.TempDir()
			tune := func(c *cluster.Config) {
				c.SnapshotThreshold = 1 << 20 // only SnapshotNow
				if !reach {
					c.TrailingLogs = 2
				} else {
					c.TrailingLogs = 10000
				}
			}
			tn := &tnode{id: "m1", dir: dir, bootstrap: true, tune: tune}
			tn.open(t)
			waitReady(t, tn.n)
			a := fsm.AuthorityID(uuid())
			write := func(k int) {
				for i := 0; i < k; i++ {
					propose(t, tn.n, native(a, fsm.SessionID(uuid())))
				}
			}
			write(5)
			if err := tn.n.SnapshotNow(); err != nil {
				t.Fatal(err)
			}
			write(10)
			if err := tn.n.SnapshotNow(); err != nil {
				t.Fatal(err)
			}
			write(6)
			_, want := tn.n.Digest()
			tn.close()
			snaps := snapshotDirs(t, dir)
			if len(snaps) != 2 {
				t.Fatalf("snapshots: %v", snaps)
			}
			editMeta(t, newestSnapshot(t, snaps), 6)
			// raft.db is opened before the check (bbolt commits a new
			// transaction id on open); the snapshots must stay as they are.
			sum := hashTree(t, filepath.Join(dir, "snapshots"))

			n, err := openAt(t, "m1", dir, false, nil)
			if !reach {
				if err == nil {
					shutdown(n)
				}
				wantErr(t, "log gap", err, dir, "cannot rebuild its state", "meta.json says index", "docs/operations.md")
				if hashTree(t, filepath.Join(dir, "snapshots")) != sum {
					t.Fatal("a failed start changed the data dir")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer shutdown(n)
			waitReady(t, n)
			if _, got := n.Digest(); got != want {
				t.Fatalf("restarted with another state: %d of 21 writes", len(footprint(n, a).Native))
			}
			if n.Halted() != nil {
				t.Fatal(n.Halted())
			}
		})
	}
}
