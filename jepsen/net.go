package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The test network: one Linux network namespace per node, all plugged
// into a bridge that lives in a hub namespace of its own, plus one veth from
// the root namespace (where the harness and its clients run) into the same
// bridge:
//
//	root ns                hub ns (rcjP-hub)           node ns (rcjP-nK)
//	rcjPh 10.77.S.1 ──veth── up0 ─┐
//	                              br0 ── vK ──veth── eth0 10.77.S.1K
//
// The bridge sits in its own namespace, not the root one, because the root
// namespace of a Docker host filters bridged traffic (br_netfilter plus a
// FORWARD policy of DROP); the hub's netfilter tables are empty. Nothing is
// routed anywhere else: the node namespaces have no default route.
//
// Partitions are iptables DROP rules inside the node namespaces (INPUT by
// source and OUTPUT by destination peer address), so packets between nodes
// are really dropped while the harness (10.77.S.1) still reaches every node.

// namePrefix starts every namespace and link the suite creates.
const namePrefix = "rcj"

// Network is one run's namespaces, bridge and links.
type Network struct {
	Prefix string   // rcj<pid>
	Subnet string   // "10.77.S"
	Hub    string   // hub namespace
	HostIf string   // root-namespace end of the harness veth
	HostIP string   // the harness's address
	NS     []string // node namespaces, index i is node i+1
	IPs    []string // node addresses

	up      atomic.Bool
	created []string // namespaces made, for teardown
	hostIf  bool
	mu      sync.Mutex
}

// run executes a command and returns its combined output as the error on
// failure.
func run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Preflight checks that this process can build the test network: it runs as
// root, `ip netns` works, and iptables works inside a fresh namespace. The
// error says what is missing.
func Preflight(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("jepsen: must run as root (it creates network namespaces, veth links and iptables rules)")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("jepsen: %s not found in PATH: %v", tool, err)
		}
	}
	name := fmt.Sprintf("%s%d-pre", namePrefix, os.Getpid())
	if _, err := run(ctx, nil, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("jepsen: `ip netns add` does not work here: %v", err)
	}
	defer run(context.Background(), nil, "ip", "netns", "del", name) //nolint:errcheck
	if _, err := run(ctx, nil, "ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-s", "10.77.254.254", "-j", "DROP"); err != nil {
		return fmt.Errorf("jepsen: iptables does not work inside a network namespace: %v", err)
	}
	out, err := run(ctx, nil, "ip", "netns", "exec", name, "iptables", "-S", "INPUT")
	if err != nil || !strings.Contains(out, "10.77.254.254") {
		return fmt.Errorf("jepsen: iptables rule inside a namespace did not stick: %v %s", err, out)
	}
	if _, err := run(ctx, iptablesRules(nil), "ip", "netns", "exec", name, "iptables-restore"); err != nil {
		return fmt.Errorf("jepsen: iptables-restore does not work inside a namespace: %v", err)
	}
	return nil
}

// CleanStale removes namespaces and links left behind by earlier runs whose
// process is gone (a run killed with SIGKILL cannot clean up after itself).
func CleanStale(ctx context.Context, logf func(string, ...any)) {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		pid, ok := stalePID(e.Name())
		if !ok || pidAlive(pid) {
			continue
		}
		if out, err := run(ctx, nil, "ip", "netns", "pids", e.Name()); err == nil {
			for _, f := range strings.Fields(out) {
				if p, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(p, syscall.SIGCONT)
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		if _, err := run(ctx, nil, "ip", "netns", "del", e.Name()); err == nil {
			logf("removed stale namespace %s", e.Name())
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		pid, ok := stalePID(i.Name)
		if ok && !pidAlive(pid) {
			if _, err := run(ctx, nil, "ip", "link", "del", i.Name); err == nil {
				logf("removed stale link %s", i.Name)
			}
		}
	}
}

// CleanOwn removes every namespace and link this process made, whatever
// state a run was left in: the last line of defence (deferred by callers of
// Run, and by the test's cleanup).
func CleanOwn() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	own := fmt.Sprintf("%s%d", namePrefix, os.Getpid())
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), own+"-") {
			continue
		}
		if out, err := run(ctx, nil, "ip", "netns", "pids", e.Name()); err == nil {
			for _, f := range strings.Fields(out) {
				if p, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(p, syscall.SIGCONT)
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		_, _ = run(ctx, nil, "ip", "netns", "del", e.Name())
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", own+"h")); err == nil {
		_, _ = run(ctx, nil, "ip", "link", "del", own+"h")
	}
}

// stalePID parses rcj<pid>-... and rcj<pid>h names.
func stalePID(name string) (int, bool) {
	if !strings.HasPrefix(name, namePrefix) {
		return 0, false
	}
	rest := name[len(namePrefix):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	if end == 0 || end == len(rest) || (rest[end] != '-' && rest[end] != 'h') {
		return 0, false
	}
	pid, err := strconv.Atoi(rest[:end])
	return pid, err == nil
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// pickSubnet finds a 10.77.S.0/24 no interface on this host uses.
func pickSubnet() (string, error) {
	used := map[string]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 10 && ip4[1] == 77 {
				used[strconv.Itoa(int(ip4[2]))] = true
			}
		}
	}
	start := os.Getpid() % 200
	for i := 0; i < 200; i++ {
		s := strconv.Itoa(20 + (start+i)%200)
		if !used[s] {
			return "10.77." + s, nil
		}
	}
	return "", errors.New("jepsen: no free 10.77.x.0/24 subnet")
}

// NewNetwork builds the namespaces, bridge and links for n nodes. On error
// everything made so far is torn down.
func NewNetwork(ctx context.Context, n int) (_ *Network, err error) {
	subnet, err := pickSubnet()
	if err != nil {
		return nil, err
	}
	p := fmt.Sprintf("%s%d", namePrefix, os.Getpid())
	nw := &Network{Prefix: p, Subnet: subnet, Hub: p + "-hub", HostIf: p + "h", HostIP: subnet + ".1"}
	defer func() {
		if err != nil {
			nw.Teardown()
		}
	}()
	if len(nw.HostIf) > 15 {
		return nil, fmt.Errorf("jepsen: interface name %q too long", nw.HostIf)
	}
	steps := func(cmds ...[]string) error {
		for _, c := range cmds {
			if _, err := run(ctx, nil, c[0], c[1:]...); err != nil {
				return err
			}
		}
		return nil
	}
	if err := nw.addNS(ctx, nw.Hub); err != nil {
		return nil, err
	}
	if err := steps(
		[]string{"ip", "-n", nw.Hub, "link", "add", "br0", "type", "bridge"},
		[]string{"ip", "-n", nw.Hub, "link", "set", "br0", "up"},
		[]string{"ip", "link", "add", nw.HostIf, "type", "veth", "peer", "name", "up0", "netns", nw.Hub},
	); err != nil {
		return nil, err
	}
	nw.hostIf = true
	if err := steps(
		[]string{"ip", "-n", nw.Hub, "link", "set", "up0", "master", "br0", "up"},
		[]string{"ip", "addr", "add", nw.HostIP + "/24", "dev", nw.HostIf},
		[]string{"ip", "link", "set", nw.HostIf, "up"},
	); err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-n%d", p, i)
		ip := fmt.Sprintf("%s.%d", subnet, 10+i)
		if err := nw.addNS(ctx, ns); err != nil {
			return nil, err
		}
		v := fmt.Sprintf("v%d", i)
		if err := steps(
			[]string{"ip", "-n", nw.Hub, "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", nw.Hub, "link", "set", v, "master", "br0", "up"},
			[]string{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		); err != nil {
			return nil, err
		}
		nw.NS = append(nw.NS, ns)
		nw.IPs = append(nw.IPs, ip)
	}
	// The harness must reach the subnet through its own veth and nothing
	// else, before a single packet is sent there.
	out, err := run(ctx, nil, "ip", "route", "get", nw.IPs[0])
	if err != nil || !strings.Contains(out, "dev "+nw.HostIf) {
		return nil, fmt.Errorf("jepsen: route to %s does not use %s: %v %s", nw.IPs[0], nw.HostIf, err, out)
	}
	if err := nw.Heal(ctx); err != nil {
		return nil, fmt.Errorf("jepsen: iptables in node namespaces: %w", err)
	}
	nw.up.Store(true)
	return nw, nil
}

func (nw *Network) addNS(ctx context.Context, name string) error {
	if _, err := run(ctx, nil, "ip", "netns", "add", name); err != nil {
		return err
	}
	nw.mu.Lock()
	nw.created = append(nw.created, name)
	nw.mu.Unlock()
	_, err := run(ctx, nil, "ip", "-n", name, "link", "set", "lo", "up")
	return err
}

// iptablesRules is an iptables-restore input that replaces the filter table
// with DROP rules for the given peer addresses, both directions.
func iptablesRules(drop []string) []byte {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, ip := range drop {
		fmt.Fprintf(&b, "-A INPUT -s %s/32 -j DROP\n-A OUTPUT -d %s/32 -j DROP\n", ip, ip)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// SetPartition installs, for every node i, DROP rules for the peers in
// drop[i] (node indexes), replacing whatever rules were there.
func (nw *Network) SetPartition(ctx context.Context, drop [][]int) error {
	errs := make([]error, len(nw.NS))
	var wg sync.WaitGroup
	for i := range nw.NS {
		var ips []string
		if i < len(drop) {
			for _, j := range drop[i] {
				ips = append(ips, nw.IPs[j])
			}
		}
		wg.Add(1)
		go func(i int, ips []string) {
			defer wg.Done()
			_, errs[i] = run(ctx, iptablesRules(ips), "ip", "netns", "exec", nw.NS[i], "iptables-restore")
		}(i, ips)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Heal removes every partition rule.
func (nw *Network) Heal(ctx context.Context) error { return nw.SetPartition(ctx, nil) }

// Rules lists the current rules of every node namespace, for the record.
func (nw *Network) Rules(ctx context.Context) map[string]string {
	out := map[string]string{}
	for i, ns := range nw.NS {
		s, _ := run(ctx, nil, "ip", "netns", "exec", ns, "iptables", "-S")
		out[fmt.Sprintf("n%d", i+1)] = s
	}
	return out
}

// Up reports whether the network exists (dials are refused otherwise).
func (nw *Network) Up() bool { return nw != nil && nw.up.Load() }

// Teardown kills whatever still runs in the namespaces and deletes them and
// the harness link. It is safe to call more than once.
func (nw *Network) Teardown() {
	if nw == nil {
		return
	}
	nw.up.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nw.mu.Lock()
	created := nw.created
	nw.created = nil
	nw.mu.Unlock()
	for _, ns := range created {
		if out, err := run(ctx, nil, "ip", "netns", "pids", ns); err == nil {
			for _, f := range strings.Fields(out) {
				if p, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(p, syscall.SIGCONT)
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
	}
	for i := len(created) - 1; i >= 0; i-- {
		_, _ = run(ctx, nil, "ip", "netns", "del", created[i])
	}
	if nw.hostIf {
		if _, err := os.Stat(filepath.Join("/sys/class/net", nw.HostIf)); err == nil {
			_, _ = run(ctx, nil, "ip", "link", "del", nw.HostIf)
		}
		nw.hostIf = false
	}
}

// dialGuard refuses connections anywhere but this run's node addresses while
// the network is up, and binds every socket to the harness's own link, so a
// stray request can never be routed off this machine.
func (nw *Network) dialer() *net.Dialer {
	allowed := map[string]bool{}
	for _, ip := range nw.IPs {
		allowed[ip] = true
	}
	return &net.Dialer{
		Timeout:   time.Second,
		KeepAlive: 10 * time.Second,
		Control: func(network, address string, c syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if !nw.up.Load() || !allowed[host] {
				return fmt.Errorf("jepsen: refusing to dial %s outside the test network", address)
			}
			var serr error
			err = c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, nw.HostIf)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}
