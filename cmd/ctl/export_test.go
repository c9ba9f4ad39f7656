package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reconf/reconf/fsm"
	"github.com/reconf/reconf/transport"
)

// TestExportHelperProcess is not a test: TestExportKilledAndResumed runs
// the test binary again with RECONF_EXPORT_ARGS set, and this runs reconfctl
// with those arguments in that child process, which the test then kills
// with SIGKILL.
func TestExportHelperProcess(t *testing.T) {
	args := os.Getenv("RECONF_EXPORT_ARGS")
	if args == "" {
		t.Skip("helper process only")
	}
	os.Exit(run(context.Background(), append([]string{"reconfctl"}, strings.Split(args, "\x1f")...), strings.NewReader(""), os.Stdout, os.Stderr))
}

// TestExportKilledAndResumed: an export through a consumer, killed with
// SIGKILL mid-run twice while delegations land and retention trims behind
// the consumer, then resumed: the files hold every fact exactly once, in
// order.
func TestExportKilledAndResumed(t *testing.T) {
	n := startNode(t, false)
	ctx := context.Background()
	c := transport.NewClient([]string{n.addr})
	mf, hard := uint64(300), uint64(1_000_000)
	if _, err := c.SetRetention(ctx, transport.RetentionJSON{MaxFacts: &mf, HardMaxFacts: &hard}); err != nil {
		t.Fatal(err)
	}
	a, b := fsm.AuthorityID(fsm.UUID{1}), fsm.AuthorityID(fsm.UUID{2})
	s := fsm.SessionID(fsm.UUID{3})
	if r := n.node.ProposeAll(ctx, []fsm.Command{{Op: &fsm.ExtendFootprint{Authority: a, Session: s, Class: fsm.Native}}}); r[0].Err != nil || r[0].Result.Err != nil {
		t.Fatalf("native: %+v", r[0])
	}
	const total = 6000
	var (
		wg    sync.WaitGroup
		wrote = make(chan struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(wrote)
		for i := 0; i < total; i += 100 {
			cmds := make([]fsm.Command, 100)
			for j := range cmds {
				from, to := a, b
				if (i+j)%2 == 1 {
					from, to = b, a
				}
				cmds[j] = fsm.Command{Op: &fsm.Delegate{Delegation: fsm.Delegation{Session: s, From: from, To: to, BundleID: "device_migration", AtMillis: uint64(time.Now().UnixMilli())}}}
			}
			for _, r := range n.node.ProposeAll(ctx, cmds) {
				if r.Err != nil || r.Result.Err != nil {
					t.Errorf("delegate: %v %v", r.Err, r.Result.Err)
					return
				}
			}
			time.Sleep(20 * time.Millisecond) // spread the writes over the export's runs
		}
	}()
	dir := t.TempDir()
	exportArgs := []string{"--addr", n.addr, "--timeout", "10s", "facts", "export", "--consumer", "audit", "--out", dir,
		"--page", "97", "--rotate-bytes", "40000"}
	cursor := func() uint64 {
		cs, _, err := c.Consumer(ctx, "audit")
		if err != nil || cs == nil {
			return 0
		}
		return cs.Cursor
	}
	// Two runs killed with SIGKILL once they have made progress.
	for run := 0; run < 2; run++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExportHelperProcess$")
		cmd.Env = append(os.Environ(), "RECONF_EXPORT_ARGS="+strings.Join(append(exportArgs, "--follow"), "\x1f"))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		start := cursor()
		deadline := time.Now().Add(30 * time.Second)
		for cursor() < start+700 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if cursor() <= start {
			t.Fatalf("run %d made no progress", run)
		}
	}
	wg.Wait()
	ret, err := c.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ret.LastSeq != total {
		t.Fatalf("last seq %d, want %d", ret.LastSeq, total)
	}
	// The last run catches up and stops.
	if r := ctlIn(t, n.addr, "", exportArgs[4:]...); r.code != 0 {
		t.Fatalf("final export: %d %s", r.code, r.stderr)
	}
	// Every fact exactly once, in order, across the rotated files.
	files, err := filepath.Glob(filepath.Join(dir, "facts-*.jsonl"))
	if err != nil || len(files) < 3 {
		t.Fatalf("files %v %v: want several (rotation)", files, err)
	}
	next := uint64(1)
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var fact transport.FactJSON
			if err := json.Unmarshal(sc.Bytes(), &fact); err != nil {
				t.Fatalf("%s: %v: %q", name, err, sc.Text())
			}
			if fact.Seq != next {
				t.Fatalf("%s: seq %d where %d was expected (duplicate or gap)", name, fact.Seq, next)
			}
			next++
		}
		f.Close()
	}
	if next != total+1 {
		t.Fatalf("exported through %d, want %d", next-1, total)
	}
	// Retention trimmed behind the consumer all along, never ahead of it.
	ret, _ = c.Retention(ctx)
	if ret.FirstSeq <= 1 || ret.FactsLost != 0 {
		t.Fatalf("retention %+v: want trimming and no loss", ret)
	}
	fmt.Fprintf(os.Stderr, "export: %d files, first_seq now %d\n", len(files), ret.FirstSeq)
}
