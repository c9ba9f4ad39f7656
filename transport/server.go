package transport

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
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

	// Auth authenticates and authorizes requests (auth.go); nil: open.
	// With auth on, the Mux must authenticate peers (TLS or a cluster
	// token): requests forwarded over it are trusted to name their principal.
	Auth *Auth
	// Support is what this node advertises it decodes (gate.go); nil:
	// LocalSupport(). Tests set it to play an older release.
	Support *CommandSupport
	// MaxWatches bounds the open GET /v1/facts/watch streams (limits.go);
	// default DefaultMaxWatches.
	MaxWatches int
	// ExtraMetrics is served on /metrics beside the node's own (reconfd
	// passes hashicorp/raft's go-metrics there); nil: none.
	ExtraMetrics prometheus.Gatherer
	// ConsistencyCheckInterval: while this node leads, it runs a replica
	// consistency check this often (consistency.go); 0: only on demand.
	ConsistencyCheckInterval time.Duration
}

// Server is the HTTP API v1 of one node.
type Server struct {
	cfg     ServerConfig
	node    *cluster.Node
	logger  hclog.Logger
	mux     *http.ServeMux
	forward *http.Client
	metrics *metrics
	gate    *versionGate   // gate.go
	support CommandSupport // what this node advertises
	watches atomic.Int64   // open watches (limits.go)
	checks  consistency    // consistency.go
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
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = DefaultMaxWatches
	}
	s := &Server{
		cfg: cfg, node: cfg.Node, logger: cfg.Logger, mux: http.NewServeMux(),
	}
	s.forward = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return cfg.Mux.dial(ctx, addr, protoForward)
		},
		// Every request a follower is serving for a client may be waiting on
		// the leader at once: keep that many connections, not fewer (each
		// one over the limit would be dialled, and closed, per request).
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}}
	s.metrics = newMetrics(cfg.Node, cfg.ExtraMetrics)
	s.support = LocalSupport()
	if cfg.Support != nil {
		s.support = *cfg.Support
	}
	s.gate = newVersionGate(s)
	cfg.Node.SetGate(s.gate) // every proposal passes the gate, whoever proposes it
	if cfg.Mux != nil {
		cfg.Mux.SetClusterID(cfg.Node.ClusterID) // identity.go
	}
	s.routes()
	s.metrics.reg.MustRegister(consistencyCollector{s}) // consistency.go
	if cfg.ConsistencyCheckInterval > 0 {
		go s.checkLoop(cfg.ConsistencyCheckInterval)
	}
	return s
}

// Handler is the API.
func (s *Server) Handler() http.Handler { return s.metrics.instrument(s.authorize(s.mux)) }

// ServeForwarded serves requests that peers forward over the Raft port until
// the port closes.
func (s *Server) ServeForwarded() error {
	srv := HardenHTTPServer(&http.Server{Handler: s.Handler(),
		// Requests on these connections come from authenticated peers (auth.go).
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, viaPeerKey{}, true)
		}})
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
	if writeFastJSON(w, status, v) { // fastjson.go: the hot path's answers
		return
	}
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
	case fsm.CodeFactsTrimmed:
		return http.StatusGone
	case fsm.CodeConsumerNotFound:
		return http.StatusNotFound
	case fsm.CodeDuplicateBundle, fsm.CodeIncompatibleInterface, fsm.CodeOverlappingSessions, fsm.CodeSessionNotOwned,
		fsm.CodeCoherenceViolation, fsm.CodeInvalidLinkBoundary, fsm.CodeInvalidRuntimeUpgrade, fsm.CodeOwnerConflict,
		fsm.CodeStaleOwner, fsm.CodeSessionMismatch:
		return http.StatusConflict
	}
	switch code {
	case CodeUnavailable, CodeUnknownOutcome, CodeReplicaHalted, CodeReplicaInconsistent:
		return http.StatusServiceUnavailable
	case CodeNotFound:
		return http.StatusNotFound
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeUpgradeInProgress:
		return http.StatusServiceUnavailable
	case CodeClusterMismatch, CodeMemberConflict:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code, msg string) {
	writeJSON(w, statusOf(code), ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

func writeFSMError(w http.ResponseWriter, e *fsm.Error) {
	writeJSON(w, statusOf(string(e.Code)), ErrorBody{Error: fsmErrorDetail(e)})
}

func writeBadInput(w http.ResponseWriter, err error) {
	writeError(w, string(fsm.CodeInvalidArgument), err.Error())
}

// ---- reading requests ----

// readBody reads a JSON body within the size limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	return s.readBodyLimit(w, r, s.cfg.MaxBodyBytes)
}

func (s *Server) readBodyLimit(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	var body []byte
	var err error
	if n := r.ContentLength; n >= 0 && n <= limit {
		// The length is known and allowed: read it into one buffer of that
		// size, not io.ReadAll's doubling (a large batch was copied about
		// ten times). net/http's body reader stops at the length.
		body = make([]byte, n)
		if _, err = io.ReadFull(r.Body, body); err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeBadInput(w, badField("body", "is larger than the %d-byte limit", limit))
		} else {
			writeBadInput(w, badField("body", "could not be read: %v", err))
		}
		return nil, false
	}
	return body, true
}

// ---- writes ----

// write runs one write whose input was decoded and built on whichever node
// received it (writeops.go): forward it to the leader if this node does not
// lead, else propose the command and answer with its rendered result.
func (s *Server) write(w http.ResponseWriter, r *http.Request, body []byte, p prepared) {
	cmd := p.cmd
	if e := checkCommand(cmd); e != nil {
		writeFSMError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if !s.node.IsLeader() {
		s.forwardToLeader(ctx, w, r, body)
		return
	}
	if why := s.gate.check(ctx, cmd.Op.Type()); why != "" {
		writeError(w, CodeUpgradeInProgress, why)
		return
	}
	start := time.Now()
	res, err := s.node.Propose(ctx, cmd)
	s.metrics.observeCommand(cmd.Op.Type(), res, err, time.Since(start))
	if errors.Is(err, cluster.ErrNotLeader) {
		s.forwardToLeader(ctx, w, r, body)
		return
	}
	if err == nil {
		s.setLeaderHeader(w)
		w.Header().Set(HeaderIndex, strconv.FormatUint(res.Index, 10))
	}
	out, e := outcomeOf(p, res, err) // batch.go
	if e != nil {
		writeError(w, e.Code, e.Message)
		return
	}
	s.logger.Info("applied", "type", cmd.Op.Type().String(), "index", res.Index, "request_id", cmd.RequestID, "deduped", res.Deduped,
		"principal", PrincipalFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) setLeaderHeader(w http.ResponseWriter) {
	if s.cfg.AdvertiseHTTP != "" {
		w.Header().Set(HeaderLeader, s.cfg.AdvertiseHTTP)
	}
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
	if err := s.node.Halted(); err != nil {
		// Neither a stale nor a linearizable read: the state may be
		// behind, or wrong, for good.
		writeError(w, CodeReplicaHalted, err.Error())
		return
	}
	if why := s.inconsistent(); why != "" { // consistency.go: known wrong
		writeError(w, CodeReplicaInconsistent, why)
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
			if errors.Is(err, cluster.ErrHalted) {
				writeError(w, CodeReplicaHalted, err.Error())
				return
			}
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
