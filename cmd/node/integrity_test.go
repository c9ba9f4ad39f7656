package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// 2,000 unauthenticated connections that send a request's headers and no
// body (half of them not even the end of the headers) are all closed by the
// server within 30 s (here: 20), and the node keeps answering a valid token meanwhile.
func TestReconfdClosesIdleUnauthenticatedConnections(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(tAdmin+" admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := newProc(t, "i1", "--bootstrap", "--token-file", tokens)
	p.env = []string{"RECONF_CLUSTER_TOKEN=" + tCluster}
	p.start()
	p.waitReady()

	const n = 2000
	var closed atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", p.http, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		req := "POST /v1/footprints/authority-x/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
		if i%2 == 1 {
			req = "POST /v1/footprints/authority-x/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" // headers never end
		}
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.Discard, c) // returns when the server closes
			closed.Add(1)
		}()
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if s, _ := status(t, "GET", "http://"+p.http+"/v1/cluster/status", tAdmin, nil); s != 200 {
		t.Fatalf("a valid token while %d connections are open: %d", n, s)
	}
	start := time.Now()
	// The issue asks for 30 s; headers time out after 10 s, refused requests
	// close at once: 20 s leaves room for a slow machine.
	waitUntil(t, 20*time.Second, "the server to close every idle connection", func() bool { return closed.Load() == n })
	t.Logf("%d connections closed by the server in %v", n, time.Since(start).Round(time.Millisecond))
	wg.Wait()
}

// A watch ends when a token file reload revokes its token; watches beyond
// --max-watches are refused with 503.
func TestReconfdRevokedWatchCloses(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	write := func(s string) {
		if err := os.WriteFile(tokens, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tRead + " read\n" + tAdmin + " admin\n")
	p := newProc(t, "w1", "--bootstrap", "--token-file", tokens, "--max-watches", "2")
	p.env = []string{"RECONF_CLUSTER_TOKEN=" + tCluster}
	p.start()
	p.waitReady()
	watch := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+p.http+"/v1/facts/watch", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	revoked, kept := watch(tRead), watch(tAdmin)
	defer revoked.Body.Close()
	defer kept.Body.Close()
	if revoked.StatusCode != 200 || kept.StatusCode != 200 {
		t.Fatalf("watches: %d %d", revoked.StatusCode, kept.StatusCode)
	}
	third := watch(tAdmin)
	third.Body.Close()
	if third.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a third watch with --max-watches 2: %d", third.StatusCode)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, revoked.Body)
		ended <- err
	}()
	write(tAdmin + " admin\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("the revoked watch ended with %v, want a clean end", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the watch of a revoked token is still open 20s after the reload")
	}
	waitUntil(t, 10*time.Second, "the log line of the closed watch", func() bool {
		return strings.Contains(p.out.String(), "watch closed: its token was revoked")
	})
	// The other watch stays open: a new watch beside it fits again.
	again := watch(tAdmin)
	again.Body.Close()
	if again.StatusCode != 200 {
		t.Fatalf("a watch after the revoked one ended: %d", again.StatusCode)
	}
}

// raft.db truncated to a third: reconfd exits non-zero within 30 s with a
// message naming the file (no panic, SIGBUS or hang).
func TestReconfdTruncatedRaftDBExits(t *testing.T) {
	p := newProc(t, "x1", "--bootstrap")
	p.start()
	p.waitReady()
	for i := 0; i < 200; i++ {
		if s, c := addFootprint(t, p.http, ""); s != 200 {
			t.Fatalf("write %d: %d %s", i, s, c)
		}
	}
	p.stop()
	path := filepath.Join(p.dir, "raft.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.start()
	code := p.waitExit(30 * time.Second)
	out := p.out.String()
	if code == 0 || !strings.Contains(out, path) || !strings.Contains(out, "not a readable Raft log store") {
		t.Fatalf("exit %d after %v:\n%s", code, time.Since(start), out)
	}
	for _, bad := range []string{"goroutine ", "SIGBUS", "fatal error"} {
		if strings.Contains(out, bad) {
			t.Fatalf("the output has %q:\n%s", bad, out)
		}
	}
	t.Logf("exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// --pprof on a non-loopback address is refused at start.
func TestReconfdPprofLoopbackOnly(t *testing.T) {
	p := newProc(t, "p1", "--bootstrap", "--pprof", "0.0.0.0:0")
	p.start()
	if code := p.waitExit(20 * time.Second); code == 0 || !strings.Contains(p.out.String(), "not a loopback address") {
		t.Fatalf("exit %d:\n%s", code, p.out.String())
	}
}
