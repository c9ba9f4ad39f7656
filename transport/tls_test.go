package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// peerRequest opens a connection to a Raft port as a peer would (TLS with
// cfg when not nil, then the forwarding protocol byte and proof), sends GET
// /v1/internal/node and returns the status line of the answer, or the
// error that ended the exchange.
func peerRequest(addr string, cfg *tls.Config, proof []byte) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.ServerName = "127.0.0.1"
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		conn = tc
	}
	msg := append([]byte{protoForward}, proof...)
	msg = append(msg, "GET /v1/internal/node HTTP/1.1\r\nHost: peer\r\n\r\n"...)
	if _, err := conn.Write(msg); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestTLSRefusesPlaintextAndForeignCertificates(t *testing.T) {
	ca, other := newSecCA(t, "ca-one"), newSecCA(t, "ca-two")
	n := startSecNode(t, "n1", secOpts{bootstrap: true, tls: ca.nodeTLS(t, "n1")})
	n.waitLeading()
	alice := ca.clientTLS(t, "alice", false, ca)

	// The API.
	status, _, body := rawDo(t, nil, "", "GET", "http://"+n.httpAddr+"/v1/bundles", nil)
	if status == http.StatusOK || strings.Contains(string(body), "device_migration") {
		t.Fatalf("plain HTTP was served: %d %s", status, body)
	}
	t.Logf("plain HTTP: %d %s", status, strings.TrimSpace(string(body)))
	noCert := &tls.Config{RootCAs: alice.RootCAs}
	cases := []struct {
		name string
		cfg  *tls.Config
	}{
		{"HTTPS without a client certificate", noCert},
		{"client certificate of another CA", other.clientTLS(t, "mallory", false, ca)},
		{"node certificate of another CA", other.clientTLS(t, "n9", true, ca)},
	}
	for _, tc := range cases {
		status, e, _ := rawDo(t, tc.cfg, "", "GET", n.url("/v1/bundles"), nil)
		if status != -1 {
			t.Errorf("%s: served with %d", tc.name, status)
		} else {
			t.Logf("%s: refused: %s", tc.name, e.Message)
		}
	}
	if status, e, _ := rawDo(t, alice, "", "GET", n.url("/v1/bundles"), nil); status != http.StatusOK {
		t.Fatalf("alice's certificate: %d %v", status, e)
	}

	// The Raft port: only node certificates of the cluster's CA.
	refused := []struct {
		name string
		cfg  *tls.Config
	}{
		{"plain TCP", nil},
		{"an operator's client-only certificate", alice},
		{"node certificate of another CA", other.clientTLS(t, "n9", true, ca)},
		{"no client certificate", noCert},
	}
	for _, tc := range refused {
		line, err := peerRequest(n.raftAddr, tc.cfg, nil)
		if strings.HasPrefix(line, "HTTP/") {
			t.Errorf("raft port with %s: answered %q", tc.name, line)
		} else {
			t.Logf("raft port with %s: refused (%v)", tc.name, err)
		}
	}
	line, err := peerRequest(n.raftAddr, ca.clientTLS(t, "n2", true, ca), nil)
	if line != "HTTP/1.1 200 OK" {
		t.Fatalf("raft port with a node certificate of the CA: %q %v", line, err)
	}
	mustContain(t, "n1's log", n.logs.String(), "raft port: TLS handshake failed")
}

// A node whose certificate comes from another CA cannot join, and even
// when an admin adds it to the configuration it gets nothing over Raft.
func TestTLSNodeOfAnotherCACannotJoin(t *testing.T) {
	ca, other := newSecCA(t, "ca-one"), newSecCA(t, "ca-two")
	n1 := startSecNode(t, "n1", secOpts{bootstrap: true, tls: ca.nodeTLS(t, "n1")})
	n1.waitLeading()
	n2 := startSecNode(t, "n2", secOpts{tls: ca.nodeTLS(t, "n2")})
	if _, err := n2.joinVia(n1.httpAddr, true); err != nil {
		t.Fatalf("n2 (same CA) join: %v", err)
	}

	rogue := startSecNode(t, "n3", secOpts{tls: other.nodeTLS(t, "n3")})
	_, err := rogue.joinVia(n1.httpAddr, true)
	var apiErr *APIError
	if err == nil || errors.As(err, &apiErr) {
		t.Fatalf("a node of another CA joined, or was answered by the API: %v", err)
	}
	t.Logf("join refused: %v", err)

	// An admin adds it anyway (as a non-voter, so the cluster keeps its
	// quorum): the leader cannot replicate to it.
	alice := ca.clientTLS(t, "alice", false, ca)
	admin := n1.client([]string{n1.httpAddr}, alice, "")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	no := false
	if _, err := admin.JoinCluster(ctx, JoinRequest{ID: "n3", RaftAddr: rogue.raftAddr, Voter: &no}); err != nil {
		t.Fatalf("admin join of n3: %v", err)
	}
	// A write through the follower, as alice: applied everywhere it can be.
	cl := n1.client([]string{n2.httpAddr}, alice, "")
	cl.FollowLeader = false
	auth, sess := "authority-"+secNewUUID(), "session-"+secNewUUID()
	res, err := cl.AddFootprint(ctx, auth, FootprintAddRequest{SessionID: sess})
	if err != nil {
		t.Fatalf("write through the follower: %v", err)
	}
	secWait(t, 10*time.Second, "n2 to apply", func() (bool, string) {
		return n2.node.FSM().AppliedIndex() >= res.Index, ""
	})
	time.Sleep(2 * time.Second)
	if got := rogue.node.FSM().AppliedIndex(); got != 0 {
		t.Errorf("the rogue node applied up to %d", got)
	}
	if id, _ := rogue.node.Leader(); id != "" {
		t.Errorf("the rogue node knows leader %s", id)
	}
	mustContain(t, "leader's log", n1.logs.String(), "principal=cert:alice/admin", "certificate signed by unknown authority")
	mustContain(t, "rogue's log", rogue.logs.String(), "raft port: TLS handshake failed")
}

// Without TLS, nodes prove the cluster token on the Raft port and on join;
// forwarded requests are authorized again on the leader with its tokens.
func TestClusterTokenAndForwardedAuthorization(t *testing.T) {
	const tokX = "token-x-0123456789abc"
	d1, d2 := t.TempDir(), t.TempDir()
	// tokX is read on n1 (the leader) and admin on n2.
	n1 := startSecNode(t, "n1", secOpts{bootstrap: true, clusterToken: tokCluster, tokenFile: writeTokens(t, d1, baseTokens+tokX+" read\n")})
	n1.waitLeading()
	n2 := startSecNode(t, "n2", secOpts{clusterToken: tokCluster, tokenFile: writeTokens(t, d2, baseTokens+tokX+" admin\n")})
	if _, err := n2.joinVia(n1.httpAddr, true); err != nil {
		t.Fatalf("n2 join: %v", err)
	}
	mustContain(t, "n1's log", n1.logs.String(), "join accepted: id=n2", "principal=cluster/admin")

	auth, sess := "authority-"+secNewUUID(), "session-"+secNewUUID()
	body := map[string]any{"session_id": sess}
	path := "/v1/footprints/" + auth + "/sessions"
	if status, e, _ := rawDo(t, nil, tokWrite, "POST", n2.url(path), body); status != 200 {
		t.Fatalf("write token through the follower: %d %v", status, e)
	}
	mustContain(t, "leader's log", n1.logs.String(), "applied: type=extend_footprint", "principal=token:"+TokenFingerprint(tokWrite)+"/write")
	if status, e, _ := rawDo(t, nil, tokRead, "POST", n2.url(path), body); status != 403 || e.Code != CodeForbidden {
		t.Fatalf("read token through the follower: %d %v", status, e)
	}
	// n2 lets tokX write; the leader does not.
	status, e, _ := rawDo(t, nil, tokX, "POST", n2.url(path), map[string]any{"session_id": "session-" + secNewUUID()})
	if status != 403 || !strings.Contains(e.Message, "has read") {
		t.Fatalf("tokX through n2 (admin there, read on the leader): %d %v", status, e)
	}
	// Nobody talks to the Raft port without the proof.
	if line, err := peerRequest(n1.raftAddr, nil, nil); strings.HasPrefix(line, "HTTP/") {
		t.Fatalf("raft port without the proof: %q", line)
	} else {
		t.Logf("raft port without the proof: %v", err)
	}
	if line, _ := peerRequest(n1.raftAddr, nil, peerProof("some-other-token-123")); strings.HasPrefix(line, "HTTP/") {
		t.Fatalf("raft port with a wrong proof: %q", line)
	}
	if line, err := peerRequest(n1.raftAddr, nil, peerProof(tokCluster)); line != "HTTP/1.1 200 OK" {
		t.Fatalf("raft port with the proof: %q %v", line, err)
	}
	mustContain(t, "n1's log", n1.logs.String(), "wrong cluster token proof")

	// A node with another cluster token cannot join.
	n3 := startSecNode(t, "n3", secOpts{clusterToken: "not-the-cluster-token", tokenFile: writeTokens(t, t.TempDir(), baseTokens)})
	_, err := n3.joinVia(n1.httpAddr, true)
	if !IsCode(err, CodeUnauthorized) || !IsFatalJoinError(err) {
		t.Fatalf("join with another cluster token: %v", err)
	}
}
