package transport

// A small in-process harness for the security, join and upgrade-gate tests
// (package-internal, so they can reach the mux and the gate): real nodes
// with real Raft, bbolt and TCP on 127.0.0.1, optionally with mutual TLS,
// tokens, a cluster token, and an advertised CommandSupport. Also a test
// PKI: CAs and node and client certificates made with crypto/x509.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reconf/reconf/cluster"
)

// ---- PKI ----

type secCA struct {
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
}

func newSecCA(t testing.TB, name string) *secCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &secCA{dir: t.TempDir(), cert: cert, key: key}
	ca.caFile = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.caFile, "CERTIFICATE", der)
	return ca
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue makes a node certificate (server+client auth, SANs localhost and
// 127.0.0.1) or a client certificate; returns the cert and key files.
func (ca *secCA) issue(t testing.TB, name string, node bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if node {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = []string{"localhost", name}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kd)
	return certFile, keyFile
}

func (ca *secCA) nodeTLS(t testing.TB, name string) *NodeTLS {
	t.Helper()
	c, k := ca.issue(t, name, true)
	nt, err := LoadNodeTLS(TLSFiles{CertFile: c, KeyFile: k, CAFile: ca.caFile})
	if err != nil {
		t.Fatal(err)
	}
	return nt
}

// clientTLS is an operator's (or a node's, node=true) client configuration.
func (ca *secCA) clientTLS(t testing.TB, name string, node bool, trust *secCA) *tls.Config {
	t.Helper()
	c, k := ca.issue(t, name, node)
	pair, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(trust.cert)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// ---- nodes ----

type secOpts struct {
	tls          *NodeTLS
	tokenFile    string
	clusterToken string
	support      *CommandSupport
	bootstrap    bool
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("RECONF_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type secNode struct {
	t        testing.TB
	id, dir  string
	opts     secOpts
	raftAddr string
	httpAddr string
	logs     *logBuffer

	mux     *Mux
	node    *cluster.Node
	api     *Server
	srv     *http.Server
	fwdDone chan struct{}
	running bool
}

func startSecNode(t testing.TB, id string, opts secOpts) *secNode {
	t.Helper()
	n := &secNode{t: t, id: id, dir: filepath.Join(t.TempDir(), id), opts: opts, logs: &logBuffer{}}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *secNode) start() {
	t := n.t
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Name: n.id, Level: hclog.Debug, Output: n.logs})
	raftListen, httpListen := n.raftAddr, n.httpAddr
	if raftListen == "" {
		raftListen = "127.0.0.1:0"
	}
	if httpListen == "" {
		httpListen = "127.0.0.1:0"
	}
	mcfg := MuxConfig{Listen: raftListen, ClusterToken: n.opts.clusterToken, Logger: logger.Named("mux")}
	if n.opts.tls != nil {
		mcfg.TLSServer, mcfg.TLSClient = n.opts.tls.PeerServerConfig(), n.opts.tls.ClientConfig()
	}
	var mux *Mux
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if mux, err = ListenMux(mcfg); err == nil {
			if ln, err = net.Listen("tcp", httpListen); err == nil {
				break
			}
			mux.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: listen: %v", n.id, err)
	}
	n.raftAddr, n.httpAddr = mux.Addr().String(), ln.Addr().String()
	node, err := cluster.Open(cluster.Config{
		ID: n.id, DataDir: n.dir, AdvertiseRaft: n.raftAddr, StreamLayer: mux.RaftLayer(),
		Bootstrap: n.opts.bootstrap, Logger: logger,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond,
	})
	if err != nil {
		ln.Close()
		mux.Close()
		t.Fatalf("open %s: %v", n.id, err)
	}
	auth, err := NewAuth(AuthConfig{TokenFile: n.opts.tokenFile, ClusterToken: n.opts.clusterToken, ClientCerts: n.opts.tls != nil})
	if err != nil {
		t.Fatal(err)
	}
	api := NewServer(ServerConfig{Node: node, Mux: mux, AdvertiseHTTP: n.httpAddr, Logger: logger.Named("api"), Auth: auth, Support: n.opts.support})
	if n.opts.tls != nil {
		ln = tls.NewListener(ln, n.opts.tls.APIServerConfig())
	}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(ln) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = api.ServeForwarded()
	}()
	n.mux, n.node, n.api, n.srv, n.fwdDone, n.running = mux, node, api, srv, done, true
}

func (n *secNode) stop() {
	if !n.running {
		return
	}
	n.running = false
	_ = n.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.node.Shutdown(ctx)
	_ = n.mux.Close()
	<-n.fwdDone
}

// client speaks to the node as a node would (its certificate, the cluster
// token), or as given.
func (n *secNode) client(addrs []string, tlsCfg *tls.Config, token string) *Client {
	var opts []ClientOption
	if tlsCfg != nil {
		opts = append(opts, WithTLS(tlsCfg))
	}
	c := NewClient(addrs, opts...)
	c.Token = token
	c.RetryFor = 5 * time.Second
	return c
}

func (n *secNode) nodeClient(addrs ...string) *Client {
	var cfg *tls.Config
	if n.opts.tls != nil {
		cfg = n.opts.tls.ClientConfig()
	}
	return n.client(addrs, cfg, n.opts.clusterToken)
}

// joinVia makes n join the cluster through the API at addr, as reconfd does.
func (n *secNode) joinVia(addr string, voter bool) (*JoinResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return n.nodeClient(addr).JoinCluster(ctx, JoinRequest{ID: n.id, RaftAddr: n.raftAddr, Voter: &voter, ClusterID: n.node.ClusterID()})
}

func secWait(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, diag := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, diag)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *secNode) waitLeading() {
	n.t.Helper()
	secWait(n.t, 20*time.Second, n.id+" to lead", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return n.node.IsLeader() && n.node.LinearizableRead(ctx) == nil, n.node.ID()
	})
}

// rawDo sends one request with an HTTP client of the given TLS config
// (nil: plain HTTP) and bearer token; no retries.
func rawDo(t testing.TB, cfg *tls.Config, token, method, url string, body any) (int, ErrorDetail, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := hc.Do(req)
	if err != nil {
		return -1, ErrorDetail{Code: "transport", Message: err.Error()}, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb ErrorBody
	_ = json.Unmarshal(b, &eb)
	return resp.StatusCode, eb.Error, b
}

func (n *secNode) url(path string) string {
	if n.opts.tls != nil {
		return "https://" + n.httpAddr + path
	}
	return "http://" + n.httpAddr + path
}

func mustContain(t testing.TB, what, got string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(got, p) {
			t.Errorf("%s: %q does not contain %q", what, got, p)
		}
	}
}

func secNewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
