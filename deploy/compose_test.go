// Package deploy_test brings deploy/docker-compose.yml up on the local
// Docker engine and drives the cluster it runs: the deployment files are
// tested the way operators use them. It skips only when no Docker engine
// answers.
package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/reconf/reconf/transport"
)

// repoRoot is the module root (this package is deploy/).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

func must(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// composeCmd is docker-compose (v1), or the docker compose plugin.
func composeCmd(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if _, err := run(t, nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	t.Fatal("a Docker engine answers but neither docker-compose nor the docker compose plugin is installed")
	return nil
}

func TestComposeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the Docker compose test takes about a minute")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI: the compose test needs a Docker engine")
	}
	if out, err := run(t, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("no Docker engine answers (docker info: %v: %s)", err, out)
	}
	compose := composeCmd(t)
	root := repoRoot(t)
	start := time.Now()

	// 1. Static binaries and the FROM scratch image, as `make image` does,
	// in a build context of their own.
	ctxDir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{{"reconfd", "./cmd/node"}, {"reconfctl", "./cmd/ctl"}} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(ctxDir, "bin", "linux", b.out), b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.out, err, out)
		}
	}
	must(t, nil, "cp", "-r", filepath.Join(root, "deploy"), filepath.Join(ctxDir, "deploy"))
	tag := fmt.Sprintf("reconf/reconfd:compose-test-%d", os.Getpid())
	must(t, nil, "docker", "build", "-q", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", tag, ctxDir)
	t.Cleanup(func() { _, _ = run(t, nil, "docker", "rmi", "-f", tag) })
	t.Logf("image %s built in %v", tag, time.Since(start).Round(time.Millisecond))

	// 2. The compose file as shipped, with the test's image, a project of
	// its own and ports Docker picks.
	project := fmt.Sprintf("reconftest%d", os.Getpid())
	env := []string{"RECONF_IMAGE=" + tag, "RECONF_N1_PORT=127.0.0.1:", "RECONF_N2_PORT=127.0.0.1:", "RECONF_N3_PORT=127.0.0.1:"}
	dc := func(args ...string) (string, error) {
		full := append(append(append([]string{}, compose[1:]...), "-p", project, "-f", filepath.Join(root, "deploy", "docker-compose.yml")), args...)
		return run(t, env, compose[0], full...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := dc("logs", "--no-color", "--tail", "40")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := dc("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	if out, err := dc("up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	ids := map[string]string{}
	addrs := map[string]string{}
	for _, svc := range []string{"n1", "n2", "n3"} {
		id, err := dc("ps", "-q", svc)
		if err != nil || id == "" {
			t.Fatalf("container of %s: %v %q", svc, err, id)
		}
		ids[svc] = id
		port, err := dc("port", svc, "8101")
		if err != nil {
			t.Fatalf("port of %s: %v %s", svc, err, port)
		}
		addrs[svc] = strings.Replace(port, "0.0.0.0", "127.0.0.1", 1)
	}
	healthy := func(svcs ...string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for _, svc := range svcs {
			for {
				st, _ := run(t, nil, "docker", "inspect", "-f", "{{.State.Health.Status}}", ids[svc])
				if st == "healthy" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s is %q, not healthy, after 60s", svc, st)
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
	}
	healthy("n1", "n2", "n3")
	t.Logf("three nodes healthy after %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := func(svcs ...string) *transport.Client {
		var a []string
		for _, s := range svcs {
			a = append(a, addrs[s])
		}
		c := transport.NewClient(a)
		c.FollowLeader = false // the leader's advertised address (n1:8101) only resolves inside the network
		c.RetryFor = 30 * time.Second
		return c
	}
	st, err := client("n1", "n2", "n3").Status(ctx)
	if err != nil || st.Leader == nil || len(st.Nodes) != 3 {
		t.Fatalf("cluster status: %+v %v", st, err)
	}

	// 3. Writes through one node.
	type written struct{ auth, sess string }
	var all []written
	write := func(c *transport.Client, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			w := written{"authority-" + uuid(), "session-" + uuid()}
			if _, err := c.AddFootprint(ctx, w.auth, transport.FootprintAddRequest{SessionID: w.sess}); err != nil {
				t.Fatalf("write %d: %v", len(all), err)
			}
			all = append(all, w)
		}
	}
	write(client("n2"), 10)

	// 4. Kill the leader's container; the other two elect a leader and
	// take writes.
	leader := st.Leader.ID
	must(t, nil, "docker", "kill", ids[leader])
	var rest []string
	for _, s := range []string{"n1", "n2", "n3"} {
		if s != leader {
			rest = append(rest, s)
		}
	}
	t.Logf("killed the leader %s; writing through %v", leader, rest)
	write(client(rest...), 10)

	// 5. Everything reads back, linearizably and from each survivor's own
	// state, and the survivors' digests agree.
	// check waits until the given nodes agree (same applied index and
	// digest), then reads every write back from each one's own state
	// (stale reads), and linearizably through them.
	check := func(svcs ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var ds []string
			var first *transport.DigestJSON
			same := true
			for _, s := range svcs {
				var d transport.DigestJSON
				if err := client(s).CallAt(ctx, addrs[s], "GET", "/v1/cluster/digest", nil, &d); err != nil {
					same = false
					ds = append(ds, s+": "+err.Error())
					continue
				}
				ds = append(ds, fmt.Sprintf("%s@%d=%.12s", s, d.Index, d.Digest))
				if first == nil {
					first = &d
				} else if d != *first {
					same = false
				}
			}
			if same {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nodes did not converge: %v", ds)
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, s := range svcs {
			c := client(s)
			c.Stale = true
			for _, w := range all {
				fp, err := c.ShowFootprint(ctx, w.auth)
				if err != nil || len(fp.NativeSessions) != 1 || fp.NativeSessions[0] != w.sess {
					t.Fatalf("%s: footprint of %s: %+v %v", s, w.auth, fp, err)
				}
			}
		}
		lin := client(svcs...)
		for _, w := range all {
			if fp, err := lin.ShowFootprint(ctx, w.auth); err != nil || len(fp.NativeSessions) != 1 {
				t.Fatalf("linearizable read of %s: %+v %v", w.auth, fp, err)
			}
		}
	}
	check(rest...)

	// 6. The killed node comes back from its volume and catches up.
	must(t, nil, "docker", "start", ids[leader])
	healthy(leader)
	port, err := dc("port", leader, "8101") // Docker picked a new host port
	if err != nil {
		t.Fatalf("port of %s: %v %s", leader, err, port)
	}
	addrs[leader] = strings.Replace(port, "0.0.0.0", "127.0.0.1", 1)
	check("n1", "n2", "n3")
	t.Logf("%d writes read back from every node; %v in all", len(all), time.Since(start).Round(time.Millisecond))
}

func uuid() string {
	b := make([]byte, 16)
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, _ = f.Read(b)
		f.Close()
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
