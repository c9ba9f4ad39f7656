package cluster_test

// Operations and bad environments: manual recovery after quorum loss,
// entries a replica cannot decode, and data dirs that are read-only, full,
// corrupt or from another cluster. Each must end in a clear error and no
// corruption.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

type capture struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.Write(p)
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// openAt opens a node on dir with a fresh listener; the caller shuts it down.
func openAt(t *testing.T, id, dir string, bootstrap bool, out *capture) (*cluster.Node, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lg hclog.Logger = hclog.NewNullLogger()
	if out != nil {
		lg = hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Debug, Output: out})
	}
	n, err := cluster.Open(cluster.Config{
		ID: id, DataDir: dir, AdvertiseRaft: ln.Addr().String(), StreamLayer: &tcpLayer{ln}, Bootstrap: bootstrap, Logger: lg,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	return n, nil
}

func shutdown(n *cluster.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}

func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q does not say %q", what, err, p)
		}
	}
	t.Logf("%s: %v", what, err)
}

func hashTree(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil))
}

// An entry with a command of a newer version (or an unknown type) halts
// every replica at that entry, the same way (Consul and Nomad panic on an
// unknown command rather than diverge): nothing of the entry is applied, the
// replicas stay equal, and each refuses reads and writes with the reason.
func TestUnknownCommandHaltsEveryReplica(t *testing.T) {
	n1 := newNode(t, "u1", true)
	waitReady(t, n1.n)
	n2, n3 := newNode(t, "u2", false), newNode(t, "u3", false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tn := range []*tnode{n2, n3} {
		if err := n1.n.Join(ctx, tn.id, tn.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	a, s := fsm.AuthorityID(uuid()), fsm.SessionID(uuid())
	w := propose(t, n1.n, native(a, s))
	good := fsm.EncodeCommand(native(a, fsm.SessionID(uuid())))
	newer := fsm.EncodeCommand(native(fsm.AuthorityID(uuid()), fsm.SessionID(uuid())))
	newer[1] = fsm.CommandVersion + 1 // type, version
	entry := fsm.JoinEntry([]fsm.EncodedCommand{good, newer})

	resp, err := n1.n.ApplyRawForTest(entry, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := resp.(*fsm.HaltError)
	if !ok || h.Index != w.Index+1 || !strings.Contains(h.Error(), "unknown command type 3 version 2") {
		t.Fatalf("response %#v", resp)
	}
	all := []*tnode{n1, n2, n3}
	waitFor(t, "every replica to halt", func() bool {
		for _, tn := range all {
			if tn.n.Halted() == nil {
				return false
			}
		}
		return true
	})
	_, d1 := n1.n.Digest()
	for _, tn := range all {
		idx, d := tn.n.Digest()
		if idx != w.Index || d != d1 {
			t.Errorf("%s: applied %d (want %d), digest equal %v", tn.id, idx, w.Index, d == d1)
		}
		if got := footprint(tn.n, a); len(got.Native) != 1 {
			t.Errorf("%s: the command beside the unknown one was applied: %+v", tn.id, got.Native)
		}
		if err := tn.n.Halted(); !errors.Is(err, cluster.ErrHalted) || !strings.Contains(err.Error(), fmt.Sprintf("index %d", w.Index+1)) {
			t.Errorf("%s: Halted() = %v", tn.id, err)
		}
		if err := tn.n.LinearizableRead(ctx); !errors.Is(err, cluster.ErrHalted) {
			t.Errorf("%s: linearizable read on a halted replica: %v", tn.id, err)
		}
	}
	// Whoever leads refuses writes with the reason.
	waitFor(t, "a leader", func() bool {
		for _, tn := range all {
			if tn.n.IsLeader() {
				_, err := tn.n.Propose(ctx, native(a, fsm.SessionID(uuid())))
				if !errors.Is(err, cluster.ErrHalted) {
					t.Fatalf("propose on a halted leader: %v", err)
				}
				return true
			}
		}
		return false
	})
}

func TestParsePeers(t *testing.T) {
	good := `[{"id":"n1","address":"10.0.0.1:8201"},{"id":"n2","address":"10.0.0.2:8201","non_voter":true}]`
	peers, err := cluster.ParsePeers(strings.NewReader(good))
	if err != nil || len(peers) != 2 || !peers[1].NonVoter || peers[0].Address != "10.0.0.1:8201" {
		t.Fatalf("%+v %v", peers, err)
	}
	for _, tc := range []struct{ in, want string }{
		{``, "want a JSON array"},
		{`{"id":"n1"}`, "want a JSON array"},
		{`[]`, "no peers"},
		{`[{"id":"n1","address":"a:1","extra":1}]`, "unknown field"},
		{`[{"id":"","address":"a:1"}]`, "id is empty"},
		{`[{"id":"n1","address":""}]`, "address is empty"},
		{`[{"id":"n1","address":"a:1"},{"id":"n1","address":"b:1"}]`, "id n1 is listed twice"},
		{`[{"id":"n1","address":"a:1"},{"id":"n2","address":"a:1"}]`, "address a:1 is listed twice"},
		{`[{"id":"n1","address":"a:1","non_voter":true}]`, "no voter"},
		{`[{"id":"n1","address":"a:1"}] x`, "unexpected data"},
	} {
		_, err := cluster.ParsePeers(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}

// Quorum loss: two of three voters are gone for good. The survivor cannot
// elect itself; after Recover with a peers file naming only it, it leads
// with all the state it had and takes writes again.
func TestRecoverAfterQuorumLoss(t *testing.T) {
	n1 := newNode(t, "q1", true)
	waitReady(t, n1.n)
	n2, n3 := newNode(t, "q2", false), newNode(t, "q3", false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tn := range []*tnode{n2, n3} {
		if err := n1.n.Join(ctx, tn.id, tn.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	a := fsm.AuthorityID(uuid())
	var last fsm.Result
	for i := 0; i < 5; i++ {
		last = propose(t, n1.n, native(a, fsm.SessionID(uuid())))
	}
	waitFor(t, "replication", func() bool { return n2.n.FSM().AppliedIndex() >= last.Index })
	_, before := n1.n.Digest()
	// A running node's data dir is refused.
	err := cluster.Recover(n1.dir, []cluster.Peer{{ID: "q1", Address: n1.addr}}, nil)
	wantErr(t, "recover a running node", err, "locked by another process")

	n2.close()
	n3.close()
	n1.close()
	n1.open(t)
	time.Sleep(2 * time.Second)
	if n1.n.IsLeader() {
		t.Fatal("one of three voters elected itself")
	}
	n1.close()

	err = cluster.Recover(n1.dir, []cluster.Peer{{ID: "q2", Address: n2.addr}}, nil)
	wantErr(t, "peers without this node", err, `node "q1"`, "does not list")
	err = cluster.Recover(t.TempDir(), []cluster.Peer{{ID: "q1", Address: n1.addr}}, nil)
	wantErr(t, "empty dir", err, "not a reconf data dir")

	if err := cluster.Recover(n1.dir, []cluster.Peer{{ID: "q1", Address: n1.addr}}, nil); err != nil {
		t.Fatalf("recover: %v", err)
	}
	n1.open(t)
	waitReady(t, n1.n)
	if _, d := n1.n.Digest(); d != before {
		t.Fatal("the recovered node's state differs from before the loss")
	}
	if got := footprint(n1.n, a); len(got.Native) != 5 {
		t.Fatalf("recovered footprint: %d sessions", len(got.Native))
	}
	propose(t, n1.n, native(a, fsm.SessionID(uuid())))
	if s, _ := n1.n.Servers(); len(s) != 1 || s[0].ID != "q1" {
		t.Fatalf("configuration after recovery: %+v", s)
	}
	// New members join the recovered cluster as usual.
	n4 := newNode(t, "q4", false)
	if err := n1.n.Join(ctx, n4.id, n4.addr, true); err != nil {
		t.Fatal(err)
	}
	w := propose(t, n1.n, native(a, fsm.SessionID(uuid())))
	waitFor(t, "q4 to catch up", func() bool { return n4.n.FSM().AppliedIndex() >= w.Index })
}

// roMount makes dir read-only: a read-only bind mount as root (root
// ignores file modes), else mode 0555.
func roMount(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o750) })
		return
	}
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount (%v: %s); a read-only data dir is covered by the chmod path for non-root users", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v: %s", err, out)
	}
}

func TestReadOnlyDataDir(t *testing.T) {
	// A fresh, empty dir.
	empty := t.TempDir()
	roMount(t, empty)
	_, err := openAt(t, "ro", empty, true, nil)
	wantErr(t, "empty read-only dir", err, empty)
	if !strings.Contains(err.Error(), "read-only file system") && !strings.Contains(err.Error(), "not writable") {
		t.Errorf("%v does not say read-only or not writable", err)
	}
	// A dir with a node's state.
	dir := t.TempDir()
	n, err := openAt(t, "ro", dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n)
	propose(t, n, native(fsm.AuthorityID(uuid()), fsm.SessionID(uuid())))
	shutdown(n)
	sum := hashTree(t, dir)
	roMount(t, dir)
	_, err = openAt(t, "ro", dir, true, nil)
	wantErr(t, "read-only dir with state", err, dir)
	if hashTree(t, dir) != sum {
		t.Fatal("the data dir changed")
	}
}

func TestCorruptRaftDB(t *testing.T) {
	dir := t.TempDir()
	n, err := openAt(t, "c1", dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n)
	for i := 0; i < 20; i++ {
		propose(t, n, native(fsm.AuthorityID(uuid()), fsm.SessionID(uuid())))
	}
	shutdown(n)
	path := filepath.Join(dir, "raft.db")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, len(orig))
	_, _ = rand.Read(garbage)
	zeroMeta := bytes.Clone(orig)
	copy(zeroMeta[:8192], make([]byte, 8192)) // both meta pages
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"random bytes", garbage},
		{"truncated", orig[:100]},
		{"empty", nil},
		{"zeroed meta pages", zeroMeta},
		{"text", []byte("this is not a database\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			sum := hashTree(t, dir)
			n, err := openAt(t, "c1", dir, true, nil)
			if err == nil {
				shutdown(n)
			}
			wantErr(t, tc.name, err, path, "not a readable Raft log store", "docs/operations.md")
			if hashTree(t, dir) != sum {
				t.Fatal("a failed start changed the data dir")
			}
		})
	}
	// The real file still opens, with its state.
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err = openAt(t, "c1", dir, true, nil)
	if err != nil {
		t.Fatalf("the original raft.db: %v", err)
	}
	waitReady(t, n)
	shutdown(n)

	// The log store gone altogether: the dir still says which cluster it
	// belonged to, so --bootstrap must not start a new one over it.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "snapshots"))
	n, err = openAt(t, "c1", dir, true, nil)
	if err == nil {
		shutdown(n)
	}
	wantErr(t, "bootstrap over a dir that lost its log", err, "belongs to cluster", "refusing to bootstrap")
}

// snapshotDirs lists the snapshot dirs, newest first.
func snapshotDirs(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*"))
	var out []string
	for _, d := range m {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && !strings.HasSuffix(d, ".tmp") {
			out = append(out, d)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

// corruptSnapshot flips bytes in the middle of a snapshot's state and
// fixes Raft's own CRC in meta.json, so that only the FSM's checks (the
// snapshot container's checksums) can tell.
func corruptSnapshot(t *testing.T, snapDir string) {
	t.Helper()
	state := filepath.Join(snapDir, "state.bin")
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+8 && i < len(b); i++ {
		b[i]++ // never undone by corrupting again
	}
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(snapDir, "meta.json")
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(mb, &meta); err != nil {
		t.Fatal(err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(b)
	meta["CRC"] = h.Sum(nil)
	mb, _ = json.Marshal(meta)
	if err := os.WriteFile(metaPath, mb, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A corrupt snapshot is refused by the FSM; Raft falls back to the older
// snapshot and the log, and the node comes back with the same state. With
// every snapshot corrupt, the start fails with a clear error.
func TestCorruptSnapshot(t *testing.T) {
	dir := t.TempDir()
	n, err := openAt(t, "s1", dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n)
	a := fsm.AuthorityID(uuid())
	for round := 0; round < 2; round++ {
		for i := 0; i < 10; i++ {
			propose(t, n, native(a, fsm.SessionID(uuid())))
		}
		if err := n.SnapshotNow(); err != nil {
			t.Fatal(err)
		}
	}
	last := propose(t, n, native(a, fsm.SessionID(uuid())))
	_, before := n.Digest()
	shutdown(n)
	snaps := snapshotDirs(t, dir)
	if len(snaps) != 2 {
		t.Fatalf("snapshots: %v", snaps)
	}
	corruptSnapshot(t, snaps[0])

	logs := &capture{}
	n, err = openAt(t, "s1", dir, false, logs)
	if err != nil {
		t.Fatalf("start with the newest snapshot corrupt: %v", err)
	}
	waitReady(t, n)
	waitFor(t, "replay to the last write", func() bool { return n.FSM().AppliedIndex() >= last.Index })
	if _, d := n.Digest(); d != before {
		t.Fatal("state after falling back to the older snapshot differs")
	}
	if got := footprint(n, a); len(got.Native) != 21 {
		t.Fatalf("%d sessions after the fallback, want 21", len(got.Native))
	}
	if !strings.Contains(logs.String(), "refusing snapshot") {
		t.Errorf("the FSM did not say it refused the snapshot:\n%s", logs.String())
	}
	shutdown(n)

	for _, s := range snapshotDirs(t, dir) {
		corruptSnapshot(t, s)
	}
	_, err = openAt(t, "s1", dir, false, nil)
	wantErr(t, "every snapshot corrupt", err, "no snapshot in", "could be restored", "docs/operations.md")
}

// A full disk: writes fail with an error that says so, the node neither
// panics nor loses an acknowledged write, and it takes writes again once
// there is space. Needs root for a small tmpfs.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs; run as root to test a full data dir")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s)", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	dir := filepath.Join(mnt, "data")
	n, err := openAt(t, "f1", dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { shutdown(n) }() // n is reopened below
	waitReady(t, n)

	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()

	a := fsm.AuthorityID(uuid())
	acked := 0
	var failure error
	for i := 0; i < 5000 && failure == nil; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.Propose(ctx, native(a, fsm.SessionID(uuid())))
		cancel()
		if err != nil {
			failure = err
		} else {
			acked++
		}
	}
	if failure == nil {
		t.Fatal("5000 writes fit on a full disk")
	}
	t.Logf("after %d acknowledged writes: %v", acked, failure)
	waitFor(t, "the node to report the storage error", func() bool { return n.StorageError() != nil })
	wantErr(t, "StorageError", n.StorageError(), "no space left on device", dir)

	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writes to work again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := n.Propose(ctx, native(a, fsm.SessionID(uuid()))); err != nil {
			return false
		}
		acked++
		return true
	})
	if err := n.StorageError(); err != nil {
		t.Errorf("storage error after recovery: %v", err)
	}
	got := len(footprint(n, a).Native)
	if got < acked {
		t.Fatalf("%d acknowledged writes, %d in the state", acked, got)
	}
	_, before := n.Digest()
	idx := n.FSM().AppliedIndex()
	shutdown(n)
	n, err = openAt(t, "f1", dir, false, nil)
	if err != nil {
		t.Fatalf("restart after the full disk: %v", err)
	}
	waitReady(t, n)
	waitFor(t, "replay", func() bool { return n.FSM().AppliedIndex() >= idx })
	if _, d := n.Digest(); d != before {
		t.Fatal("state after restart differs")
	}
}
