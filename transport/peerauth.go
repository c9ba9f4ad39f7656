package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"net"
	"strconv"
)

// Peer authentication on the Raft port without TLS: nodes that share a
// cluster token (reconfd --cluster-token) open every connection to a peer's
// Raft port, Raft RPCs and forwarded requests alike, with the protocol byte
// followed by a 32-byte proof, HMAC-SHA256(cluster token, "reconf raft port
// v1"). The port closes a connection whose proof does not match (compared
// in constant time) before it reads anything else from it.
//
// The proof is the same on every connection: it keeps out anyone who does
// not know the token, not someone who can watch the traffic (who can also
// read the Raft log going by). Use TLS (which is the peer authentication
// when configured) where the network is not trusted.

const peerProofLen = sha256.Size

func peerProof(clusterToken string) []byte {
	if clusterToken == "" {
		return nil
	}
	m := hmac.New(sha256.New, []byte(clusterToken))
	m.Write([]byte("reconf raft port v1"))
	return m.Sum(nil)
}

// checkPeerProof reads and checks a dialer's proof; true when the port
// needs none.
func (m *Mux) checkPeerProof(conn net.Conn) bool {
	if m.proof == nil {
		return true
	}
	got := make([]byte, peerProofLen)
	if _, err := io.ReadFull(conn, got); err != nil {
		m.logger.Warn("raft port: connection without the cluster token proof; refused", "remote", conn.RemoteAddr(), "error", err)
		return false
	}
	if subtle.ConstantTimeCompare(got, m.proof) != 1 {
		m.logger.Warn("raft port: wrong cluster token proof; refused (do all nodes have the same --cluster-token?)", "remote", conn.RemoteAddr())
		return false
	}
	return true
}

// PeersAuthenticated reports whether the Raft port authenticates the peers
// that connect to it (mutual TLS or the cluster token).
func (m *Mux) PeersAuthenticated() bool { return m.tlsServer != nil || m.proof != nil }

// nameAddr is an advertised address given as host name and port, kept as
// given: peers resolve it when they dial, so a node whose IP changes
// (a container restarted) keeps its Raft address.
type nameAddr string

func (a nameAddr) Network() string { return "tcp" }
func (a nameAddr) String() string  { return string(a) }

// parseNameAddr accepts host:port with a host name (not an IP) and a port
// from 1 to 65535.
func parseNameAddr(s string) (net.Addr, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || net.ParseIP(host) != nil {
		return nil, false
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return nil, false
	}
	return nameAddr(s), true
}
