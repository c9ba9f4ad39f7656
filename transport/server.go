package transport

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// ServerConfig wires the API to a node.
type ServerConfig struct {
	Node          *cluster.Node
	Mux           *Mux
	AdvertiseHTTP string // this node's API address, as clients reach it
	Logger        hclog.Logger

	MaxBodyBytes    int64         // JSON request bodies; default 1 MiB
	MaxRestoreBytes int64         // uploaded backups; default 16 GiB
	LeaderWait      time.Duration // how long a request waits for an election; default 5s
	RequestTimeout  time.Duration // bound on one request; default 30s

	// Now stamps delegation timestamps on the leader; default time.Now.
	Now func() time.Time
	// UnsafeLocalReads serves "linearizable" reads from local state with no
	// leader check. Test-only: the jepsen suite must catch it.
	UnsafeLocalReads bool
}

// Server is the HTTP API v1 of one node.
type Server struct {
	cfg     ServerConfig
	node    *cluster.Node
	logger  hclog.Logger
	mux     *http.ServeMux
	forward *http.Client
	metrics *metrics
}

// NewServer builds the API handler for a node.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxRestoreBytes == 0 {
		cfg.MaxRestoreBytes = 16 << 30
	}
	if cfg.LeaderWait == 0 {
		cfg.LeaderWait = 5 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg: cfg, node: cfg.Node, logger: cfg.Logger, mux: http.NewServeMux(),
	}
	s.forward = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return cfg.Mux.dial(ctx, addr, protoForward)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
	s.metrics = newMetrics(cfg.Node)
	s.routes()
	return s
}

// Handler is the API.
func (s *Server) Handler() http.Handler { return s.metrics.instrument(s.mux) }

// ServeForwarded serves requests that peers forward over the Raft port until
// the port closes.
func (s *Server) ServeForwarded() error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	err := srv.Serve(s.cfg.Mux.ForwardListener())
	// The port is closed, so the node is going away: drop the connections
	// peers still hold too. Answering on them would speak for a node that no
	// longer runs, and, after a restart on the same port, keep peers talking
	// to the dead instance instead of the new one.
	_ = srv.Close()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ---- responses ----

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// statusOf maps an error code to its HTTP status (domain 9.11).
func statusOf(code string) int {
	switch fsm.Code(code) {
	case fsm.CodeInvalidArgument:
		return http.StatusBadRequest
	case fsm.CodeBundleNotFound, fsm.CodeBundleNotRegistered, fsm.CodeSessionNotFound, fsm.CodeAuthorityNotFound:
		return http.StatusNotFound
	case fsm.CodeMissingCapability:
		return http.StatusForbidden
	case fsm.CodeUnknownCommand:
		return http.StatusInternalServerError
	case fsm.CodeDuplicateBundle, fsm.CodeIncompatibleInterface, fsm.CodeOverlappingSessions, fsm.CodeSessionNotOwned,
		fsm.CodeCoherenceViolation, fsm.CodeInvalidLinkBoundary, fsm.CodeInvalidRuntimeUpgrade, fsm.CodeOwnerConflict,
		fsm.CodeStaleOwner, fsm.CodeSessionMismatch:
		return http.StatusConflict
	}
	switch code {
	case CodeUnavailable, CodeUnknownOutcome:
		return http.StatusServiceUnavailable
	case CodeNotFound:
		return http.StatusNotFound
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code, msg string) {
	writeJSON(w, statusOf(code), ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

func writeFSMError(w http.ResponseWriter, e *fsm.Error) {
	writeError(w, string(e.Code), e.Message)
}

func writeBadInput(w http.ResponseWriter, err error) {
	writeError(w, string(fsm.CodeInvalidArgument), err.Error())
}

// ---- reading requests ----

// readBody reads a JSON body within the size limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeBadInput(w, badField("body", "is larger than the %d-byte limit", s.cfg.MaxBodyBytes))
		} else {
			writeBadInput(w, badField("body", "could not be read: %v", err))
		}
		return nil, false
	}
	return body, true
}

// ---- writes ----

// builder turns a decoded request into a command, given the leader's clock.
type builder func(now time.Time) (fsm.Command, error)

// write runs one write request: decode and check the input (on whichever
// node received it), forward to the leader if this node does not lead, else
// propose the command and answer with render(result).
func (s *Server) write(w http.ResponseWriter, r *http.Request, req any, build builder, render func(fsm.Result) any) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if req != nil {
		if err := decodeStrict(bytes.NewReader(body), req); err != nil {
			writeBadInput(w, err)
			return
		}
	} else if len(bytes.TrimSpace(body)) > 0 {
		// A body here would be silently ignored, a request_id in it too.
		writeBadInput(w, badField("body", "must be empty: this route takes its input from the path and query (request_id too)"))
		return
	}
	cmd, err := build(s.cfg.Now())
	if err != nil {
		writeBadInput(w, err)
		return
	}
	if e := fsm.CheckRequestID(cmd.RequestID); e != nil {
		writeFSMError(w, e)
		return
	}
	if e := fsm.Check(cmd.Op); e != nil {
		writeFSMError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if !s.node.IsLeader() {
		s.forwardToLeader(ctx, w, r, body)
		return
	}
	start := time.Now()
	res, err := s.node.Propose(ctx, cmd)
	s.metrics.observeCommand(cmd.Op.Type(), res, err, time.Since(start))
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		s.forwardToLeader(ctx, w, r, body)
		return
	case errors.Is(err, cluster.ErrUnknownOutcome):
		writeError(w, CodeUnknownOutcome, err.Error()+"; retry with the same request_id to learn the outcome")
		return
	case err != nil:
		writeError(w, CodeUnavailable, err.Error())
		return
	}
	s.setLeaderHeader(w)
	w.Header().Set(HeaderIndex, strconv.FormatUint(res.Index, 10))
	if res.Err != nil {
		writeFSMError(w, res.Err)
		return
	}
	s.logger.Debug("applied", "type", cmd.Op.Type().String(), "index", res.Index, "request_id", cmd.RequestID, "deduped", res.Deduped)
	writeJSON(w, http.StatusOK, render(res))
}

func (s *Server) setLeaderHeader(w http.ResponseWriter) {
	if s.cfg.AdvertiseHTTP != "" {
		w.Header().Set(HeaderLeader, s.cfg.AdvertiseHTTP)
	}
}

// forwardToLeader sends the request on to the leader over the Raft port
// and copies its answer back. A request that was already forwarded once is
// not forwarded again: two nodes that disagree about the leader must not
// bounce a request between them.
func (s *Server) forwardToLeader(ctx context.Context, w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Header.Get(HeaderForwardedBy) != "" {
		writeError(w, CodeUnavailable, "this node received a forwarded request but is not the leader; retry")
		return
	}
	waitCtx, cancel := context.WithTimeout(ctx, s.cfg.LeaderWait)
	leaderID, leaderAddr, err := s.node.WaitLeader(waitCtx)
	cancel()
	if err != nil {
		writeError(w, CodeUnavailable, "no leader is known (election in progress or no quorum): "+err.Error())
		return
	}
	if leaderID == s.node.ID() {
		writeError(w, CodeUnavailable, "leadership is changing; retry")
		return
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+leaderAddr+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, CodeInternal, err.Error())
		return
	}
	for _, h := range []string{"Content-Type", "Authorization", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(HeaderForwardedBy, s.node.ID())
	resp, err := s.forward.Do(req)
	if err != nil {
		// Whether a write reached the leader is unknown once the request
		// may have been sent.
		writeError(w, CodeUnknownOutcome, fmt.Sprintf("forwarding to leader %s failed: %v; retry with the same request_id", leaderID, err))
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// ---- reads ----

// read serves a read: linearizable by default (forwarded to the leader
// unless this node leads), or from local state with ?consistency=stale.
func (s *Server) read(w http.ResponseWriter, r *http.Request, serve func(st *fsm.State) (any, *fsm.Error)) {
	consistency := r.URL.Query().Get("consistency")
	switch consistency {
	case "", "linearizable", "stale":
	default:
		writeBadInput(w, badField("consistency", "must be linearizable or stale, not %q", consistency))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if consistency != "stale" && !s.cfg.UnsafeLocalReads {
		if !s.node.IsLeader() {
			s.forwardToLeader(ctx, w, r, nil)
			return
		}
		if err := s.node.LinearizableRead(ctx); err != nil {
			if errors.Is(err, cluster.ErrNotLeader) {
				s.forwardToLeader(ctx, w, r, nil)
				return
			}
			writeError(w, CodeUnavailable, "linearizable read: "+err.Error())
			return
		}
		s.setLeaderHeader(w)
		w.Header().Set(HeaderConsistency, "linearizable")
	} else {
		w.Header().Set(HeaderConsistency, "stale")
		if !s.node.IsLeader() {
			st, _ := s.node.Status()
			if !st.LastContact.IsZero() {
				w.Header().Set(HeaderLastContact, time.Since(st.LastContact).Round(time.Millisecond).String())
			}
		}
	}
	var out any
	var ferr *fsm.Error
	var index uint64
	s.node.FSM().Read(func(st *fsm.State) {
		out, ferr = serve(st)
		index = st.AppliedIndex()
	})
	w.Header().Set(HeaderIndex, strconv.FormatUint(index, 10))
	if ferr != nil {
		writeFSMError(w, ferr)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func digestHex(d [32]byte) string { return hex.EncodeToString(d[:]) }
