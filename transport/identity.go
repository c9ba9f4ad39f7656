package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// Cluster identity on the Raft port.
//
// A Raft address that one cluster lists as a member may come to be served
// by a node of another cluster (an address reused, a data dir restored on
// the wrong host). Raft itself never asks: the leader would overwrite that
// node's log with its own, and the node's higher term would push the
// cluster into elections. So every connection a node opens to a peer's Raft
// port, for Raft RPCs and forwarded requests alike, starts with a hello
// that names the dialer's cluster id, and the port answers with its own:
//
//	dialer:   'I' proof(32 bytes, with a cluster token) len(u8) cluster_id
//	port:     'I' len(u8) cluster_id           accepted
//	          'X' len(u8) reason               refused; the port closes
//	dialer:   protocol byte (and proof), as without the hello
//
// Each side refuses the connection when both have a cluster id and they
// differ (etcd checks the cluster id on every Raft message the same way):
// neither side's log, term or state changes. A node that has not joined a
// cluster yet has no id (cluster/identity.go): it accepts any, and is
// accepted by any, which is what lets a fresh node join: the leader that
// adds it dials it before the join answer hands it the id, and it keeps
// that id from then on.
//
// Releases before this one do not know the hello byte and close the
// connection without answering; a dialer that gets no answer at all dials
// again without the hello, and the port accepts connections that start with
// a protocol byte directly. So a mixed-version cluster keeps working
// during a rolling upgrade, and the check holds between nodes of this
// release and later ones. A refusal ('X') is never retried that way.
const protoHello byte = 'I'

const (
	helloAccept byte = 'I'
	helloRefuse byte = 'X'
)

// ErrForeignCluster: the peer at a Raft address belongs to another cluster.
var ErrForeignCluster = errors.New("peer belongs to another cluster")

// errNoHello: the peer closed the connection without answering the hello
// (a release before it); dial again without.
var errNoHello = errors.New("peer does not answer the cluster hello")

// SetClusterID makes the port use id() for this node's cluster id (empty:
// none yet). cmd/node sets it from the data dir before the node opens, and
// NewServer to the node's own once it runs.
func (m *Mux) SetClusterID(id func() string) { m.clusterID.Store(&id) }

func (m *Mux) localClusterID() string {
	if f := m.clusterID.Load(); f != nil {
		return (*f)()
	}
	return ""
}

// RefusedForeign counts the connections this port refused, or was refused,
// because the other side belongs to another cluster.
func (m *Mux) RefusedForeign() uint64 { return m.foreignRefused.Load() }

// clusterIDState is the Mux's share of this file.
type clusterIDState struct {
	clusterID      atomic.Pointer[func() string]
	foreignRefused atomic.Uint64
}

func writeShortString(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	return append(append(b, byte(len(s))), s...)
}

func readShortString(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// acceptHello runs the port's side of the hello, after the hello byte and
// the peer proof. It reports whether the connection may go on; the caller
// then reads the protocol byte.
func (m *Mux) acceptHello(conn net.Conn) bool {
	theirs, err := readShortString(conn)
	if err != nil {
		m.logger.Debug("raft port: incomplete cluster hello", "remote", conn.RemoteAddr(), "error", err)
		return false
	}
	mine := m.localClusterID()
	if mine != "" && theirs != "" && mine != theirs {
		m.foreignRefused.Add(1)
		m.logger.Warn("raft port: connection from a node of another cluster refused (is a node of another cluster configured with this node's address?)",
			"remote", conn.RemoteAddr(), "their_cluster", theirs, "our_cluster", mine)
		_, _ = conn.Write(writeShortString([]byte{helloRefuse}, fmt.Sprintf("cluster mismatch: this node belongs to cluster %s, not %s", mine, theirs)))
		return false
	}
	if _, err := conn.Write(writeShortString([]byte{helloAccept}, mine)); err != nil {
		return false
	}
	return true
}

// dialHello runs the dialer's side on a fresh connection (after TLS).
func (m *Mux) dialHello(conn net.Conn, deadline time.Time) error {
	mine := m.localClusterID()
	msg := append([]byte{protoHello}, m.proof...)
	if _, err := conn.Write(writeShortString(msg, mine)); err != nil {
		return err
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(10 * time.Second)
	}
	_ = conn.SetReadDeadline(deadline)
	defer conn.SetReadDeadline(time.Time{})
	var kind [1]byte
	if _, err := io.ReadFull(conn, kind[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err) {
			return errNoHello
		}
		return err
	}
	text, err := readShortString(conn)
	if err != nil {
		return err
	}
	switch kind[0] {
	case helloAccept:
		if mine != "" && text != "" && mine != text {
			m.foreignRefused.Add(1)
			m.logger.Warn("raft port: peer belongs to another cluster; not talking to it", "remote", conn.RemoteAddr(), "their_cluster", text, "our_cluster", mine)
			return fmt.Errorf("%w: %s is a node of cluster %s, this node's is %s", ErrForeignCluster, conn.RemoteAddr(), text, mine)
		}
		return nil
	case helloRefuse:
		m.foreignRefused.Add(1)
		return fmt.Errorf("%w: %s refused the connection: %s", ErrForeignCluster, conn.RemoteAddr(), text)
	}
	return fmt.Errorf("raft port %s: unexpected answer %q to the cluster hello", conn.RemoteAddr(), kind[0])
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
