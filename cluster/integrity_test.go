package cluster_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
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
