package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/transport"
)

func ctlRun(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"reconfctl"}, args...), nil, &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The dev CA in two commands, and what the certificates say.
func TestTLSCreateCommands(t *testing.T) {
	dir := t.TempDir()
	if r := ctlRun(t, "tls", "ca", "create", "--dir", dir); r.code != 0 {
		t.Fatalf("ca create: %+v", r)
	}
	if r := ctlRun(t, "tls", "cert", "create", "--node", "n1", "--dns", "n1.example.com", "--ip", "10.0.0.1", "--dir", dir); r.code != 0 {
		t.Fatalf("node cert: %+v", r)
	}
	if r := ctlRun(t, "tls", "cert", "create", "--client", "alice", "--dir", dir); r.code != 0 {
		t.Fatalf("client cert: %+v", r)
	}
	for _, f := range []string{"ca-key.pem", "n1-key.pem", "alice-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	if !ca.IsCA || ca.Subject.CommonName != "reconf-ca" || ca.NotAfter.Before(time.Now().AddDate(9, 11, 0)) {
		t.Errorf("CA: IsCA %v CN %q until %v", ca.IsCA, ca.Subject.CommonName, ca.NotAfter)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	node := readCert(t, filepath.Join(dir, "n1.pem"))
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := node.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}, DNSName: "n1.example.com"}); err != nil {
			t.Errorf("node cert for %v: %v", u, err)
		}
	}
	for _, name := range []string{"localhost", "n1", "127.0.0.1", "10.0.0.1"} {
		if err := node.VerifyHostname(name); err != nil {
			t.Errorf("node cert does not name %s: %v", name, err)
		}
	}
	client := readCert(t, filepath.Join(dir, "alice.pem"))
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	if slices.Contains(client.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || client.Subject.CommonName != "alice" {
		t.Errorf("client cert EKU %v CN %q", client.ExtKeyUsage, client.Subject.CommonName)
	}
	// reconfd accepts the node certificate as is.
	if _, err := transport.LoadNodeTLS(transport.TLSFiles{CertFile: filepath.Join(dir, "n1.pem"), KeyFile: filepath.Join(dir, "n1-key.pem"), CAFile: filepath.Join(dir, "ca.pem")}); err != nil {
		t.Errorf("reconfd would refuse the node cert: %v", err)
	}
	if _, err := transport.LoadNodeTLS(transport.TLSFiles{CertFile: filepath.Join(dir, "alice.pem"), KeyFile: filepath.Join(dir, "alice-key.pem"), CAFile: filepath.Join(dir, "ca.pem")}); err == nil {
		t.Error("reconfd would run with a client-only certificate")
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tls", "ca", "create", "--dir", dir}, 1, "exists; not overwriting"},
		{[]string{"tls", "cert", "create", "--node", "n1", "--dir", dir}, 1, "exists; not overwriting"},
		{[]string{"tls", "cert", "create", "--dir", dir}, 2, "exactly one of --node NAME and --client NAME"},
		{[]string{"tls", "cert", "create", "--node", "a", "--client", "b", "--dir", dir}, 2, "exactly one"},
		{[]string{"tls", "cert", "create", "--node", "n2", "--ip", "not-an-ip", "--dir", dir}, 2, "not an IP address"},
		{[]string{"tls", "cert", "create", "--node", "../evil", "--dir", dir}, 2, "use letters, digits"},
		{[]string{"tls", "cert", "create", "--client", "bob", "--dns", "x", "--dir", dir}, 2, "--dns and --ip are for node certificates"},
		{[]string{"tls", "cert", "create", "--node", "n3", "--dir", t.TempDir()}, 1, "make one with: reconfctl tls ca create"},
	} {
		r := ctlRun(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d %q; want %d %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

// reconfctl's --ca-file, --cert-file and --key-file against a node with
// mutual TLS made from `reconfctl tls` certificates.
func TestTLSEndToEnd(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", dir},
		{"tls", "cert", "create", "--node", "t1", "--dir", dir},
		{"tls", "cert", "create", "--client", "ops", "--dir", dir},
	} {
		if r := ctlRun(t, args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	p := func(f string) string { return filepath.Join(dir, f) }
	nt, err := transport.LoadNodeTLS(transport.TLSFiles{CertFile: p("t1.pem"), KeyFile: p("t1-key.pem"), CAFile: p("ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	mux, err := transport.ListenMux(transport.MuxConfig{Listen: "127.0.0.1:0", TLSServer: nt.PeerServerConfig(), TLSClient: nt.ClientConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	node, err := cluster.Open(cluster.Config{ID: "t1", DataDir: t.TempDir(), AdvertiseRaft: mux.Addr().String(), StreamLayer: mux.RaftLayer(),
		Bootstrap: true, HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Shutdown(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := transport.NewAuth(transport.AuthConfig{ClientCerts: true})
	api := transport.NewServer(transport.ServerConfig{Node: node, Mux: mux, AdvertiseHTTP: ln.Addr().String(), Auth: auth})
	srv := &http.Server{Handler: api.Handler(), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(tls.NewListener(ln, nt.APIServerConfig())) }()
	defer srv.Close()
	addr := ln.Addr().String()
	deadline := time.Now().Add(15 * time.Second)
	for !node.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	tlsArgs := []string{"--addr", addr, "--timeout", "5s", "--ca-file", p("ca.pem"), "--cert-file", p("ops.pem"), "--key-file", p("ops-key.pem")}
	r := ctlRun(t, append(tlsArgs, "cluster", "status")...)
	if r.code != 0 || !strings.Contains(r.stdout, "t1") {
		t.Fatalf("status over mutual TLS: %+v", r)
	}
	r = ctlRun(t, append(tlsArgs, "capabilities", "set", "reconfiguration=off")...)
	if r.code != 0 {
		t.Fatalf("write over mutual TLS: %+v", r)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain HTTP", []string{"--addr", addr, "--timeout", "3s"}},
		{"no client certificate", []string{"--addr", addr, "--timeout", "3s", "--ca-file", p("ca.pem")}},
		{"no CA (system roots)", []string{"--addr", addr, "--timeout", "3s", "--cert-file", p("ops.pem"), "--key-file", p("ops-key.pem")}},
	} {
		r := ctlRun(t, append(tc.args, "cluster", "status")...)
		if r.code != 1 {
			t.Errorf("%s: exit %d %+v", tc.name, r.code, r)
		}
		t.Logf("%s: %s", tc.name, strings.TrimSpace(r.stderr))
	}
	r = ctlRun(t, "--addr", addr, "--timeout", "3s", "cluster", "status")
	if !strings.Contains(r.stderr, "hint: the node speaks HTTPS") || !strings.Contains(r.stderr, "--ca-file") {
		t.Errorf("plain HTTP against TLS: the error should say the node speaks HTTPS: %q", r.stderr)
	}
}
