package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reconf/reconf/internal/loadavg"
	"github.com/reconf/reconf/internal/rawhttp"
)

const kvHelp = `A minimal hraftd-style key-value server, the "minimal reference" for an
HTTP write path over Raft. Starts three "refbench kv-node" processes (this
same binary) with their data in a temporary dir under --dir, each a
hashicorp/raft node over loopback TCP with raft-boltdb (--store wal:
raft-wal) and default Raft settings except --raft-timeout, serving
  PUT /key/{k} with body {"value":"..."}  ->  one raft.Apply of a JSON
  command on the leader  ->  200 {"index":N}
(followers redirect to the leader). The first node bootstraps and the
others join it. No batching or packing: one Apply per request.

Then --concurrency clients send PUTs to the leader in a closed loop (each
waits for its answer before sending the next), each on one keep-alive
connection: with --client raw (default) the hand-written HTTP/1.1 client
reconfctl bench uses (internal/rawhttp), with --client nethttp Go's
net/http client (which costs the shared machine more per request). 2 s
warm-up (--warmup), then --duration measured; prints requests per second
and latency percentiles. Each client cycles through --keys keys of its own.

The nodes' logs (stderr) go to files in the temporary dir and are printed
if something fails. Child processes and the dir are removed on exit, also
on Ctrl-C; a node also exits when this process goes away (its stdin
closes).
`

type kvResult struct {
	Mode       string `json:"mode"`
	Client     string `json:"client"`
	Echo       bool   `json:"echo,omitempty"`
	Store      string `json:"store"`
	ValueBytes int    `json:"value_bytes"`
	loadFigures
	Machine machine `json:"machine"`
	DataDir string  `json:"data_dir"`
}

// child is one kv-node process.
type child struct {
	id      string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	addr    kvJoin
	exited  chan struct{}
}

func runKV(ctx context.Context, args []string) error {
	fs := newFlags("kv", kvHelp)
	store := fs.String("store", "bolt", "log store of the nodes: bolt or wal")
	conc := fs.Int("concurrency", 64, "number of HTTP clients, each with one request in flight")
	duration := fs.Duration("duration", 10*time.Second, "measured time (after the warm-up)")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up time, not measured")
	valueBytes := fs.Int("value-bytes", 64, "length of each value in the PUT body")
	keys := fs.Int("keys", 100, "keys per client (written round-robin)")
	dir := fs.String("dir", os.TempDir(), "parent of the temporary data dir (must be on the disk to measure)")
	timeout := fs.Duration("raft-timeout", 500*time.Millisecond, "Raft heartbeat and election timeout of the nodes (leader lease: half)")
	logLevel := fs.String("log-level", "error", "Raft log level of the nodes (into their log files): trace, debug, info, warn, error, off")
	clientKind := fs.String("client", "raw", "load client: raw (hand-written HTTP/1.1, as reconfctl bench) or nethttp")
	echo := fs.Bool("echo", false, "the nodes answer PUTs without Raft: the HTTP-only ceiling of this machine")
	asJSON := fs.Bool("json", false, "print a JSON object instead of the human line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkLoadFlags(*conc, *warmup, *duration); err != nil {
		return err
	}
	if *keys < 1 || *valueBytes < 0 {
		return fmt.Errorf("--keys must be >= 1 and --value-bytes >= 0")
	}
	if *clientKind != "raw" && *clientKind != "nethttp" {
		return fmt.Errorf("--client %q: want raw or nethttp", *clientKind)
	}
	if *store != "bolt" && *store != "wal" {
		return fmt.Errorf("--store %q: want bolt or wal", *store)
	}
	warnIfRAM(*dir)
	m := newMachine()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(*dir, "refbench-kv-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var children []*child
	defer stopChildren(&children)
	failed := func(err error) error {
		dumpLogs(children)
		return err
	}
	start := func(id string, bootstrap bool) (*child, error) {
		c, err := startChild(ctx, exe, tmp, id, bootstrap,
			"--store", *store, "--raft-timeout", timeout.String(), "--log-level", *logLevel, "--echo="+strconv.FormatBool(*echo))
		if c != nil {
			children = append(children, c)
		}
		return c, err
	}

	setup := &http.Client{Timeout: 15 * time.Second}
	n1, err := start("n1", true)
	if err != nil {
		return failed(err)
	}
	if _, err := waitStatus(ctx, setup, []*child{n1}, 15*time.Second, func(st []kvStatus) bool {
		return st[0].State == "Leader"
	}); err != nil {
		return failed(fmt.Errorf("n1 did not become leader: %w", err))
	}
	for _, id := range []string{"n2", "n3"} {
		if _, err := start(id, false); err != nil {
			return failed(err)
		}
	}
	var lastIndex uint64
	for _, c := range children {
		idx, err := postJoin(ctx, setup, n1.addr.HTTP, c.addr)
		if err != nil {
			return failed(fmt.Errorf("joining %s: %w", c.id, err))
		}
		lastIndex = idx
	}
	st, err := waitStatus(ctx, setup, children, 20*time.Second, func(st []kvStatus) bool {
		for _, s := range st {
			if s.Voters != 3 || s.LeaderID == "" || s.LeaderID != st[0].LeaderID || s.Applied < lastIndex {
				return false
			}
		}
		return true
	})
	if err != nil {
		return failed(fmt.Errorf("cluster did not form: %w", err))
	}
	var leader *child
	for i, s := range st {
		if s.State == "Leader" {
			leader = children[i]
		}
	}
	if leader == nil {
		return failed(errors.New("no node says it is the leader"))
	}

	tr := &http.Transport{
		MaxIdleConns:        *conc + 16,
		MaxIdleConnsPerHost: *conc + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	body := []byte(`{"value":"` + strings.Repeat("v", *valueBytes) + `"}`)
	base := "http://" + leader.addr.HTTP + "/key/"
	raw := make([]rawhttp.Conn, *conc)
	for i := range raw {
		raw[i] = rawhttp.Conn{Addr: leader.addr.HTTP, Timeout: 15 * time.Second}
		defer raw[i].Close()
	}
	op := func(w int, seq uint64) error {
		if *clientKind == "raw" {
			status, msg, err := raw[w].Do(ctx, http.MethodPut, fmt.Sprintf("/key/c%d-%d", w, seq%uint64(*keys)), body)
			if err == nil && status != http.StatusOK {
				err = fmt.Errorf("%d %s: %s", status, http.StatusText(status), bytes.TrimSpace(msg))
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond)
			}
			return err
		}
		url := fmt.Sprintf("%sc%d-%d", base, w, seq%uint64(*keys))
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond)
		}
		return err
	}
	res := closedLoop(ctx, *conc, *warmup, *duration, op)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}
	m.LoadAfter = loadavg.Read()
	for _, c := range children {
		select {
		case <-c.exited:
			return failed(fmt.Errorf("%s exited during the run", c.id))
		default:
		}
	}
	r := kvResult{
		Mode: "kv", Client: *clientKind, Echo: *echo, Store: *store, ValueBytes: *valueBytes,
		loadFigures: res.figures(*conc, *warmup), Machine: m, DataDir: *dir,
	}
	mode := "kv --client " + *clientKind
	if *echo {
		mode += " --echo (no Raft)"
	}
	human := fmt.Sprintf("%s store=%s concurrency=%d: %.0f writes/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms (%d writes in %.1f s%s%s)",
		mode, *store, *conc, r.OpsPerSec, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Ops, r.Duration, errNote(res), loadNote(m))
	return emit(*asJSON, r, human)
}

// startChild starts a kv-node process and waits for its address line.
func startChild(ctx context.Context, exe, tmp, id string, bootstrap bool, extra ...string) (*child, error) {
	args := []string{"kv-node", "--id", id, "--dir", filepath.Join(tmp, id)}
	if bootstrap {
		args = append(args, "--bootstrap")
	}
	args = append(args, extra...)
	logPath := filepath.Join(tmp, id+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(exe, args...)
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	c := &child{id: id, cmd: cmd, stdin: stdin, logPath: logPath, exited: make(chan struct{})}
	lines := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout) // nothing more is expected; read to EOF
		close(readDone)
	}()
	go func() {
		<-readDone // os/exec: Wait only after the pipe's reads are done
		cmd.Wait()
		close(c.exited)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			return c, fmt.Errorf("%s exited before it was ready", id)
		}
		if err := json.Unmarshal([]byte(line), &c.addr); err != nil {
			return c, fmt.Errorf("%s: bad ready line %q: %v", id, line, err)
		}
		return c, nil
	case <-time.After(20 * time.Second):
		return c, fmt.Errorf("%s not ready after 20 s", id)
	case <-ctx.Done():
		return c, fmt.Errorf("interrupted")
	}
}

// stopChildren closes the nodes' stdin and sends SIGTERM, waits up to 5 s
// and kills those still running.
func stopChildren(children *[]*child) {
	for _, c := range *children {
		c.stdin.Close()
		if c.cmd.Process != nil {
			c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(5 * time.Second)
	for _, c := range *children {
		select {
		case <-c.exited:
		case <-deadline:
			fmt.Fprintf(os.Stderr, "refbench: %s (pid %d) did not stop; killing it\n", c.id, c.cmd.Process.Pid)
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
}

// dumpLogs prints the end of each node's log to stderr.
func dumpLogs(children []*child) {
	for _, c := range children {
		b, err := os.ReadFile(c.logPath)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(os.Stderr, "--- %s log (end) ---\n%s\n", c.id, strings.Join(lines, "\n"))
	}
}

func getStatus(ctx context.Context, hc *http.Client, addr string) (kvStatus, error) {
	var st kvStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitStatus polls the nodes' /status until ok says yes.
func waitStatus(ctx context.Context, hc *http.Client, nodes []*child, limit time.Duration, ok func([]kvStatus) bool) ([]kvStatus, error) {
	deadline := time.Now().Add(limit)
	var lastErr error
	for {
		st := make([]kvStatus, len(nodes))
		lastErr = nil
		for i, c := range nodes {
			if st[i], lastErr = getStatus(ctx, hc, c.addr.HTTP); lastErr != nil {
				break
			}
		}
		if lastErr == nil && ok(st) {
			return st, nil
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, fmt.Errorf("timed out after %v (last status: %+v)", limit, st)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interrupted")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// postJoin asks the leader to add a node; it answers with the index of the
// entry that recorded the node's HTTP address.
func postJoin(ctx context.Context, hc *http.Client, leaderHTTP string, j kvJoin) (uint64, error) {
	b, _ := json.Marshal(j)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+leaderHTTP+"/join", bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST /join: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var a struct {
		Index uint64 `json:"index"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return 0, err
	}
	return a.Index, nil
}
