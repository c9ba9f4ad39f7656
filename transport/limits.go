package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Bounds on what clients can hold open on a node (issue 12: about 20,000
// idle unauthenticated connections exhausted a node's file descriptors, and
// 5,000 idle watches doubled its memory):
//
//   - every HTTP server (the API and the one for forwarded requests) reads a
//     request's headers within 10s and its body within 30s, writes an
//     answer within 60s and drops a keep-alive connection idle for 60s. The
//     routes that stream for longer (GET /v1/facts/watch, backup, restore)
//     lift these deadlines for themselves and set their own per write;
//   - a request refused for its credentials (401, 403) closes its
//     connection after the answer: a client without a valid token gets no
//     keep-alive to hold;
//   - each listener (API, Raft port) accepts at most MaxConns connections
//     at once and closes the ones over the limit at once;
//   - at most MaxWatches watches are open on a node (503 beyond); a watch
//     ends when a token file reload revokes its token or lowers its role.
const (
	DefaultMaxConns   = 4096
	DefaultMaxWatches = 1024

	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 60 * time.Second
	// streamWriteTimeout bounds one write of a stream: a watcher that stops
	// reading is dropped instead of holding its buffers.
	streamWriteTimeout = 30 * time.Second
)

// HardenHTTPServer sets the read, write and idle timeouts every API server
// of a node uses.
func HardenHTTPServer(srv *http.Server) *http.Server {
	srv.ReadHeaderTimeout = httpReadHeaderTimeout
	srv.ReadTimeout = httpReadTimeout
	srv.WriteTimeout = httpWriteTimeout
	srv.IdleTimeout = httpIdleTimeout
	return srv
}

// LimitListener accepts at most max connections at once from ln; a
// connection over the limit is closed as soon as it is accepted, and
// counted. max <= 0 means DefaultMaxConns.
func LimitListener(ln net.Listener, max int, logger hclog.Logger) *LimitedListener {
	if max <= 0 {
		max = DefaultMaxConns
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &LimitedListener{Listener: ln, max: int64(max), logger: logger}
}

// LimitedListener is a listener with a bound on open connections.
type LimitedListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused atomic.Uint64
	logger  hclog.Logger
	warned  atomic.Int64 // unix seconds of the last warning
}

// Accept returns the next connection under the limit.
func (l *LimitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Add(1)
			c.Close()
			if now := time.Now().Unix(); l.warned.Swap(now) != now {
				l.logger.Warn("connection limit reached; closing new connections", "addr", l.Addr().String(), "limit", l.max, "refused_total", l.refused.Load())
			}
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// Open is the number of connections open now; Refused how many were closed
// for the limit.
func (l *LimitedListener) Open() int64     { return l.open.Load() }
func (l *LimitedListener) Refused() uint64 { return l.refused.Load() }

type limitedConn struct {
	net.Conn
	l    *LimitedListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// ---- watches ----

// errTooManyWatches: MaxWatches are open.
var errTooManyWatches = errors.New("too many open watches")

// acquireWatch takes a watch slot; release it when the watch ends.
func (s *Server) acquireWatch() (release func(), err error) {
	if s.watches.Add(1) > int64(s.cfg.MaxWatches) {
		s.watches.Add(-1)
		return nil, errTooManyWatches
	}
	return func() { s.watches.Add(-1) }, nil
}

// Watches is the number of open watches.
func (s *Server) Watches() int64 { return s.watches.Load() }

// revoked reports whether r's credentials no longer grant what its route
// needs (checked again after a token file reload).
func (s *Server) revoked(r *http.Request) bool {
	need := s.requiredRole(r)
	if need == RoleNone || !s.cfg.Auth.Enabled() {
		return false
	}
	viaPeer, _ := r.Context().Value(viaPeerKey{}).(bool)
	viaPeer = viaPeer && (s.cfg.Mux == nil || s.cfg.Mux.PeersAuthenticated())
	p, aerr := s.cfg.Auth.authenticate(r, viaPeer)
	return aerr != nil || p.Role < need
}

// untilChanged returns a context that ends with ctx or when the token set
// changes, whichever is first.
func (s *Server) untilChanged(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(ctx)
	if ch := s.cfg.Auth.Changed(); ch != nil {
		go func() {
			select {
			case <-ch:
				cancel()
			case <-cctx.Done():
			}
		}()
	}
	return cctx, cancel
}

// streamDeadlines lifts the server's read and write timeouts for a
// response that streams, and returns a function that sets the deadline of
// the next write.
func streamDeadlines(w http.ResponseWriter) (nextWrite func()) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	return func() { _ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) }
}
