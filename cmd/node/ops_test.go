package main

// Tests of reconfd as operators run it: the real binary in real processes,
// signals, exit statuses and the messages it prints.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reconf/reconf/transport"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// reconfdBin builds reconfd once per test run.
func reconfdBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reconfd-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "reconfd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if os.Getenv("RECONF_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	t        *testing.T
	id       string
	dir      string
	http     string
	raft     string
	extra    []string
	env      []string
	cmd      *exec.Cmd
	out      *syncBuf
	done     chan struct{}
	exitCode int
}

func newProc(t *testing.T, id string, extra ...string) *proc {
	return &proc{t: t, id: id, dir: filepath.Join(t.TempDir(), id), http: freeAddr(t), raft: freeAddr(t), extra: extra}
}

func (p *proc) start(more ...string) {
	p.t.Helper()
	args := []string{"--id", p.id, "--data-dir", p.dir, "--http-addr", p.http, "--raft-addr", p.raft,
		"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--shutdown-timeout", "3s"}
	args = append(append(args, p.extra...), more...)
	p.cmd = exec.Command(reconfdBin(p.t), args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.out = &syncBuf{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	p.t.Cleanup(func() { p.kill() })
}

func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Errorf("%s did not stop on SIGTERM", p.id)
		p.kill()
	}
}

// waitExit waits for the process to exit by itself; returns its status.
func (p *proc) waitExit(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(d):
		p.t.Fatalf("%s still runs after %v; output:\n%s", p.id, d, p.out.String())
	}
	return 0
}

func waitUntil(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status does one request; returns the HTTP status and error code.
func status(t *testing.T, method, url, token string, body any) (int, string) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	var eb transport.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Code
}

func (p *proc) waitReady() {
	p.t.Helper()
	waitUntil(p.t, 20*time.Second, p.id+" ready", func() bool {
		s, _ := status(p.t, "GET", "http://"+p.http+"/readyz", "", nil)
		return s == 200
	})
}

func uuidish() string {
	return fmt.Sprintf("%08x-1111-4111-8111-%012x", time.Now().UnixNano()&0xffffffff, time.Now().UnixNano()&0xffffffffffff)
}

func addFootprint(t *testing.T, addr, token string) (int, string) {
	t.Helper()
	return status(t, "POST", "http://"+addr+"/v1/footprints/authority-"+uuidish()+"/sessions", token,
		map[string]any{"session_id": "session-" + uuidish()})
}

const (
	tRead    = "read-token-1111111111111"
	tAdmin   = "admin-token-222222222222"
	tNew     = "new-write-token-33333333"
	tCluster = "cluster-token-4444444444"
)

// SIGHUP re-reads the token file: a new token works at once; a broken file
// is refused with the line named, and the tokens in use stay.
func TestReconfdSIGHUPReloadsTokens(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	write := func(s string) {
		if err := os.WriteFile(tokens, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tRead + " read\n" + tAdmin + " admin\n")
	p := newProc(t, "h1", "--bootstrap", "--token-file", tokens)
	p.env = []string{"RECONF_CLUSTER_TOKEN=" + tCluster}
	p.start()
	p.waitReady()
	if s, c := addFootprint(t, p.http, tNew); s != 401 || c != "unauthorized" {
		t.Fatalf("unknown token: %d %s", s, c)
	}
	if s, c := addFootprint(t, p.http, tRead); s != 403 {
		t.Fatalf("read token writing: %d %s", s, c)
	}
	write("# rotated\n" + tAdmin + " admin\n" + tNew + " write\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the new token to work", func() bool {
		s, _ := addFootprint(t, p.http, tNew)
		return s == 200
	})
	if s, _ := status(t, "GET", "http://"+p.http+"/v1/bundles", tRead, nil); s != 401 {
		t.Fatalf("removed token still works: %d", s)
	}
	write(tAdmin + " admin\n" + tNew + " superuser\n")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, 10*time.Second, "the failed reload in the log", func() bool {
		return strings.Contains(p.out.String(), "token file reload failed")
	})
	if !strings.Contains(p.out.String(), `line 2: unknown role \"superuser\"`) {
		t.Errorf("the log does not name the line:\n%s", p.out.String())
	}
	if s, _ := addFootprint(t, p.http, tNew); s != 200 {
		t.Fatalf("after a bad reload the tokens in use changed: %d", s)
	}
	if !strings.Contains(p.out.String(), "token file reloaded") || !strings.Contains(p.out.String(), "principal=token:") {
		t.Errorf("log lacks the reload or the principal:\n%s", p.out.String())
	}
	p.stop()
	if p.exitCode != 0 {
		t.Fatalf("exit %d after SIGTERM", p.exitCode)
	}
}

// Start-up refusals: each exits 1 with a message that says what is wrong,
// and changes nothing on disk.
func TestReconfdStartErrors(t *testing.T) {
	dir := t.TempDir()
	badTokens := filepath.Join(dir, "bad-tokens")
	_ = os.WriteFile(badTokens, []byte(tAdmin+" admin\nonly-one-field\n"), 0o600)
	goodTokens := filepath.Join(dir, "tokens")
	_ = os.WriteFile(goodTokens, []byte(tAdmin+" admin\n"), 0o600)

	// A data dir with a corrupt raft.db.
	corrupt := newProc(t, "c1", "--bootstrap")
	corrupt.start()
	corrupt.waitReady()
	corrupt.stop()
	_ = os.WriteFile(filepath.Join(corrupt.dir, "raft.db"), bytes.Repeat([]byte("garbage!"), 4096), 0o600)

	cases := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"token file with a bad line", []string{"--bootstrap", "--token-file", badTokens}, []string{"RECONF_CLUSTER_TOKEN=" + tCluster}, []string{"line 2", "want \"TOKEN ROLE\""}},
		{"tokens without TLS or cluster token", []string{"--bootstrap", "--token-file", goodTokens}, nil, []string{"--token-file without TLS needs --cluster-token"}},
		{"half the TLS flags", []string{"--bootstrap", "--tls-cert", "x.pem"}, nil, []string{"TLS needs all three"}},
		{"short cluster token", []string{"--bootstrap", "--token-file", goodTokens, "--cluster-token", "short"}, nil, []string{"cluster token", "at least 16"}},
		{"unexpected argument", []string{"serve"}, nil, []string{`unexpected argument "serve"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProc(t, "e1", tc.args...)
			p.env = tc.env
			p.start()
			if code := p.waitExit(20 * time.Second); code != 1 {
				t.Fatalf("exit %d; output:\n%s", code, p.out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(p.out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, p.out.String())
				}
			}
		})
	}
	t.Run("corrupt raft.db", func(t *testing.T) {
		before, _ := os.ReadFile(filepath.Join(corrupt.dir, "raft.db"))
		corrupt.start()
		if code := corrupt.waitExit(20 * time.Second); code != 1 {
			t.Fatalf("exit %d", code)
		}
		if !strings.Contains(corrupt.out.String(), "is not a readable Raft log store") {
			t.Errorf("output:\n%s", corrupt.out.String())
		}
		after, _ := os.ReadFile(filepath.Join(corrupt.dir, "raft.db"))
		if !bytes.Equal(before, after) {
			t.Error("raft.db changed")
		}
	})
	t.Run("read-only data dir", func(t *testing.T) {
		p := newProc(t, "ro1", "--bootstrap")
		if err := os.MkdirAll(p.dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", p.dir).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a read-only tmpfs: %v %s", err, out)
			}
			defer exec.Command("umount", p.dir).Run()
		} else {
			_ = os.Chmod(p.dir, 0o555)
			defer os.Chmod(p.dir, 0o750)
		}
		p.start()
		if code := p.waitExit(20 * time.Second); code != 1 {
			t.Fatalf("exit %d", code)
		}
		out := p.out.String()
		if !strings.Contains(out, "read-only file system") && !strings.Contains(out, "not writable") {
			t.Errorf("output:\n%s", out)
		}
	})
}

// The documented quorum-loss procedure, with real processes: two of three
// nodes are lost; the survivor is stopped, recovered with a peers.json
// naming only itself, restarted, and serves its state and new writes.
func TestReconfdRecoverAfterQuorumLoss(t *testing.T) {
	n1 := newProc(t, "n1", "--bootstrap")
	n1.start()
	n1.waitReady()
	var others []*proc
	for _, id := range []string{"n2", "n3"} {
		p := newProc(t, id, "--join", n1.http)
		p.start()
		p.waitReady()
		others = append(others, p)
	}
	for i := 0; i < 5; i++ {
		if s, c := addFootprint(t, n1.http, ""); s != 200 {
			t.Fatalf("write: %d %s", s, c)
		}
	}
	var before transport.DigestJSON
	cl := transport.NewClient([]string{n1.http})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.CallAt(ctx, n1.http, "GET", "/v1/cluster/digest", nil, &before); err != nil {
		t.Fatal(err)
	}
	for _, p := range others {
		p.kill() // lost for good
	}
	time.Sleep(time.Second)
	if s, c := addFootprint(t, n1.http, ""); s == 200 {
		t.Fatal("a write succeeded with two of three voters gone")
	} else {
		t.Logf("write without quorum: %d %s", s, c)
	}
	n1.stop()
	peers := filepath.Join(t.TempDir(), "peers.json")
	_ = os.WriteFile(peers, []byte(fmt.Sprintf(`[{"id": "n1", "address": %q}]`, n1.raft)), 0o600)
	out, err := exec.Command(reconfdBin(t), "recover", "--data-dir", n1.dir, "--peers", peers).CombinedOutput()
	if err != nil {
		t.Fatalf("reconfd recover: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "recovered") {
		t.Errorf("recover output: %s", out)
	}
	n1.extra = nil // no --bootstrap: the data dir has state
	n1.start()
	n1.waitReady()
	var after transport.DigestJSON
	if err := cl.CallAt(ctx, n1.http, "GET", "/v1/cluster/digest", nil, &after); err != nil {
		t.Fatal(err)
	}
	if after.Digest != before.Digest {
		t.Fatalf("state changed by the recovery: %s -> %s", before.Digest, after.Digest)
	}
	if s, c := addFootprint(t, n1.http, ""); s != 200 {
		t.Fatalf("write after recovery: %d %s", s, c)
	}
	// Misuse is refused.
	out, err = exec.Command(reconfdBin(t), "recover", "--data-dir", n1.dir, "--peers", peers).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "locked by another process") {
		t.Fatalf("recover on a running node: %v %s", err, out)
	}
}

// A node whose data dir belongs to another cluster, pointed at a cluster
// with --join, exits with an error naming both clusters. So does a node
// that asks to join under the id of a live member.
func TestReconfdRefusesForeignDataDirAndDuplicateID(t *testing.T) {
	a := newProc(t, "a1", "--bootstrap")
	a.start()
	a.waitReady()
	b := newProc(t, "b1", "--bootstrap")
	b.start()
	b.waitReady()
	x := newProc(t, "x1", "--join", a.http)
	x.start()
	x.waitReady()
	x.stop()
	x.extra = []string{"--join", b.http}
	x.start()
	if code := x.waitExit(30 * time.Second); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if out := x.out.String(); !strings.Contains(out, "belongs to cluster") || !strings.Contains(out, "cluster id mismatch") {
		t.Errorf("output:\n%s", out)
	}

	dup := newProc(t, "a1", "--join", a.http)
	dup.start()
	if code := dup.waitExit(30 * time.Second); code != 1 {
		t.Fatalf("duplicate id: exit %d", code)
	}
	if out := dup.out.String(); !strings.Contains(out, "member_conflict") {
		t.Errorf("output:\n%s", out)
	}
}

// reconfd healthcheck: 0 for a ready node, 1 otherwise; over TLS with the
// node's own certificate from the RECONF_TLS_* variables.
func TestReconfdHealthcheck(t *testing.T) {
	p := newProc(t, "hc", "--bootstrap")
	p.start()
	p.waitReady()
	run := func(env []string, args ...string) (int, string) {
		cmd := exec.Command(reconfdBin(t), append([]string{"healthcheck"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if code, out := run(nil, "--addr", p.http); code != 0 {
		t.Fatalf("ready node: %d %s", code, out)
	}
	if code, out := run([]string{"RECONF_HTTP_ADDR=0.0.0.0:" + strings.Split(p.http, ":")[1]}); code != 0 {
		t.Fatalf("address from RECONF_HTTP_ADDR: %d %s", code, out)
	}
	if code, _ := run(nil, "--addr", freeAddr(t)); code != 1 {
		t.Fatalf("nothing listening: %d", code)
	}

	// TLS: a CA and a node certificate made by the certificate code of
	// reconfctl's package would be a cycle; make them here.
	pki := t.TempDir()
	caFile, certFile, keyFile := makeTestPKI(t, pki)
	tp := newProc(t, "hct", "--bootstrap")
	tp.env = []string{"RECONF_TLS_CERT=" + certFile, "RECONF_TLS_KEY=" + keyFile, "RECONF_TLS_CA=" + caFile}
	tp.start()
	waitUntil(t, 20*time.Second, "TLS node ready", func() bool {
		code, _ := run(tp.env, "--addr", tp.http)
		return code == 0
	})
	if code, out := run(nil, "--addr", tp.http); code != 1 {
		t.Fatalf("plain healthcheck against TLS: %d %s", code, out)
	}
	// A plain HTTP client gets no answer from the API.
	if s, _ := status(t, "GET", "http://"+tp.http+"/readyz", "", nil); s == 200 {
		t.Fatal("plain HTTP served by a TLS node")
	}
}

// TestReconfdServesRaftMetrics: hashicorp/raft's own timings reach
// /metrics beside reconf's (raftmetrics.go).
func TestReconfdServesRaftMetrics(t *testing.T) {
	p := newProc(t, "m1")
	p.start("--bootstrap")
	p.waitReady()
	if code, e := addFootprint(t, p.http, ""); code != http.StatusOK {
		t.Fatalf("write: %d %s", code, e)
	}
	resp, err := http.Get("http://" + p.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"reconf_raft_commitTime_count", "reconf_raft_fsm_applyBatch_count", "reconf_raft_term", "reconf_read_index_rounds_total"} {
		if !strings.Contains(string(body), "\n"+want+" ") {
			t.Errorf("/metrics has no %s", want)
		}
	}
}
