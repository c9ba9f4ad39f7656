package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The Raft port carries two protocols, told apart by the first byte a
// client sends (the way Consul multiplexes its server port): Raft's own RPCs,
// and HTTP for requests a follower forwards to the leader. Forwarding over
// the Raft port means a follower needs nothing but the leader's Raft address,
// which Raft already knows, and that node-to-node traffic shares one
// listener (and, with TLS, one set of certificates).
const (
	protoRaft    byte = 'R'
	protoForward byte = 'H'
)

// Mux accepts connections on the Raft port and routes them by protocol.
type Mux struct {
	ln        net.Listener
	advertise net.Addr
	tlsServer *tls.Config // nil: plain TCP
	tlsClient *tls.Config
	proof     []byte // cluster token proof dialers send; nil: none (peerauth.go)
	logger    hclog.Logger

	clusterIDState // identity.go

	raftConns    chan net.Conn
	forwardConns chan net.Conn
	closed       chan struct{}
	closeOnce    sync.Once
}

// MuxConfig configures the Raft port.
type MuxConfig struct {
	Listen    string // address to listen on
	Advertise string // address peers dial; defaults to the listen address
	TLSServer *tls.Config
	TLSClient *tls.Config
	// ClusterToken, when set, must be shared by every node: each connection
	// to the port proves it knows the token (peerauth.go).
	ClusterToken string
	Logger       hclog.Logger
	// MaxConns bounds the connections open on the port at once (limits.go);
	// default DefaultMaxConns.
	MaxConns int
}

// ListenMux opens the Raft port.
func ListenMux(cfg MuxConfig) (*Mux, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on raft address %s: %w", cfg.Listen, err)
	}
	adv := ln.Addr()
	if na, ok := parseNameAddr(cfg.Advertise); ok {
		adv = na // a host name stays a name: peers resolve it when they dial
	} else if cfg.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("advertise address %s: %w", cfg.Advertise, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("advertise address %s is not routable", cfg.Advertise)
		}
		adv = a
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	m := &Mux{
		ln: LimitListener(ln, cfg.MaxConns, logger), advertise: adv, tlsServer: cfg.TLSServer, tlsClient: cfg.TLSClient, proof: peerProof(cfg.ClusterToken), logger: logger,
		raftConns: make(chan net.Conn, 16), forwardConns: make(chan net.Conn, 16), closed: make(chan struct{}),
	}
	go m.acceptLoop()
	return m, nil
}

// Addr is the advertised Raft address.
func (m *Mux) Addr() net.Addr { return m.advertise }

// Close stops accepting. Connections already handed to their owners (Raft,
// the forwarding server) are closed by them; those routed but not yet
// accepted have no owner, and are closed here: left open, a peer that sent
// a request on one would wait for its own timeout for an answer that never
// comes.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		err = m.ln.Close()
	})
	m.dropQueued()
	return err
}

// dropQueued closes the connections waiting to be accepted.
func (m *Mux) dropQueued() {
	for _, ch := range []chan net.Conn{m.raftConns, m.forwardConns} {
		for drained := false; !drained; {
			select {
			case c := <-ch:
				c.Close()
			default:
				drained = true
			}
		}
	}
}

// accept takes the next connection routed to ch; once the Mux is closed it
// takes none, even if some are queued (Close drops them).
func (m *Mux) accept(ch chan net.Conn) (net.Conn, bool) {
	select {
	case <-m.closed:
		return nil, false
	default:
	}
	select {
	case c := <-ch:
		return c, true
	case <-m.closed:
		return nil, false
	}
}

func (m *Mux) acceptLoop() {
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			m.logger.Warn("raft port accept", "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go m.route(conn)
	}
}

// route reads the protocol byte (after the TLS handshake, if any) and hands
// the connection on.
func (m *Mux) route(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m.tlsServer != nil {
		tc := tls.Server(conn, m.tlsServer)
		if err := tc.Handshake(); err != nil {
			m.logger.Warn("raft port: TLS handshake failed; connection refused", "remote", conn.RemoteAddr(), "error", err)
			conn.Close()
			return
		}
		conn = tc
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		m.logger.Debug("raft port: no protocol byte", "remote", conn.RemoteAddr(), "error", err)
		conn.Close()
		return
	}
	if !m.checkPeerProof(conn) {
		conn.Close()
		return
	}
	if b[0] == protoHello { // identity.go: the cluster hello, then the protocol byte
		if !m.acceptHello(conn) {
			conn.Close()
			return
		}
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			conn.Close()
			return
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	var ch chan net.Conn
	switch b[0] {
	case protoRaft:
		ch = m.raftConns
	case protoForward:
		ch = m.forwardConns
	default:
		m.logger.Warn("raft port: unknown protocol byte", "remote", conn.RemoteAddr(), "byte", b[0])
		conn.Close()
		return
	}
	select {
	case ch <- conn:
		// Close may have dropped the queue just before this send: then
		// nobody else will.
		select {
		case <-m.closed:
			m.dropQueued()
		default:
		}
	case <-m.closed:
		conn.Close()
	}
}

// dial opens a connection to a peer's Raft port for protocol proto, after
// the cluster hello (identity.go); a peer of an older release that does not
// answer the hello is dialled again without it.
func (m *Mux) dial(ctx context.Context, addr string, proto byte) (net.Conn, error) {
	conn, err := m.connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	switch err := m.dialHello(conn, deadline); {
	case err == nil:
		if _, err := conn.Write([]byte{proto}); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	case errors.Is(err, errNoHello):
		conn.Close()
		m.logger.Debug("raft port: peer does not answer the cluster hello (an older release); dialling without it", "addr", addr)
	default:
		conn.Close()
		return nil, err
	}
	if conn, err = m.connect(ctx, addr); err != nil {
		return nil, err
	}
	if _, err := conn.Write(append([]byte{proto}, m.proof...)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// connect opens a TCP (and TLS) connection to a peer's Raft port.
func (m *Mux) connect(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if m.tlsClient != nil {
		cfg := m.tlsClient
		if cfg.ServerName == "" {
			// Verify the peer's certificate against the host dialed.
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	return conn, nil
}

// RaftLayer is the raft.StreamLayer over this port.
func (m *Mux) RaftLayer() raft.StreamLayer { return &raftLayer{m: m} }

type raftLayer struct{ m *Mux }

func (l *raftLayer) Accept() (net.Conn, error) {
	if c, ok := l.m.accept(l.m.raftConns); ok {
		return c, nil
	}
	return nil, errors.New("raft port closed")
}

func (l *raftLayer) Close() error   { return l.m.Close() }
func (l *raftLayer) Addr() net.Addr { return l.m.advertise }

func (l *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.m.dial(ctx, string(addr), protoRaft)
}

// ForwardListener yields the connections peers opened to forward HTTP
// requests; serve the API on it.
func (m *Mux) ForwardListener() net.Listener { return &forwardListener{m: m} }

type forwardListener struct{ m *Mux }

func (l *forwardListener) Accept() (net.Conn, error) {
	if c, ok := l.m.accept(l.m.forwardConns); ok {
		return c, nil
	}
	return nil, net.ErrClosed
}

func (l *forwardListener) Close() error   { return nil } // the Mux owns the socket
func (l *forwardListener) Addr() net.Addr { return l.m.advertise }
