package cluster

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// protoConfirm opens a leadership-confirmation connection (readindex.go) on
// the Raft stream. hashicorp/raft's own connections start with an RPC type
// byte below 0x10, so one byte tells the two apart; the node's Raft port
// needs no new listener, and a confirmation travels exactly where Raft does
// (same TLS, same peer proof).
const protoConfirm byte = 0xC1

// splitLayer sits between hashicorp/raft and the stream layer the node was
// given: connections whose first byte is protoConfirm are served here,
// every other one is handed to Raft with that byte put back.
type splitLayer struct {
	inner  raft.StreamLayer
	logger hclog.Logger
	serve  func(net.Conn) // serves a confirmation connection

	raftConns chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	serving map[net.Conn]struct{} // confirmation connections being served; closed with the layer
}

func newSplitLayer(inner raft.StreamLayer, logger hclog.Logger, serve func(net.Conn)) *splitLayer {
	l := &splitLayer{inner: inner, logger: logger, serve: serve, raftConns: make(chan net.Conn), closed: make(chan struct{}),
		serving: map[net.Conn]struct{}{}}
	go l.acceptLoop()
	return l
}

func (l *splitLayer) acceptLoop() {
	backoff := 5 * time.Millisecond
	for {
		conn, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			l.logger.Debug("raft stream accept", "error", err)
			select {
			case <-l.closed:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		go l.route(conn)
	}
}

// route reads the first byte without holding up other connections.
func (l *splitLayer) route(conn net.Conn) {
	var b [1]byte
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	if b[0] == protoConfirm {
		l.mu.Lock()
		select {
		case <-l.closed:
			l.mu.Unlock()
			conn.Close()
			return
		default:
		}
		l.serving[conn] = struct{}{}
		l.mu.Unlock()
		l.serve(conn)
		l.mu.Lock()
		delete(l.serving, conn)
		l.mu.Unlock()
		return
	}
	select {
	case l.raftConns <- &prefixConn{Conn: conn, first: b[0], pending: true}:
	case <-l.closed:
		conn.Close()
	}
}

// Accept hands Raft its connections.
func (l *splitLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.raftConns:
		return c, nil
	case <-l.closed:
		return nil, errors.New("raft stream closed")
	}
}

func (l *splitLayer) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.closed)
		for c := range l.serving {
			c.Close()
		}
		l.mu.Unlock()
		err = l.inner.Close()
	})
	return err
}

func (l *splitLayer) Addr() net.Addr { return l.inner.Addr() }

func (l *splitLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.inner.Dial(addr, timeout)
}

// dialConfirm opens a confirmation connection to a peer.
func (l *splitLayer) dialConfirm(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := l.inner.Dial(raft.ServerAddress(addr), timeout)
	if err != nil {
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte{protoConfirm}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// prefixConn gives back the byte route read.
type prefixConn struct {
	net.Conn
	first   byte
	pending bool
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.pending && len(p) > 0 {
		p[0] = c.first
		c.pending = false
		return 1, nil
	}
	return c.Conn.Read(p)
}
