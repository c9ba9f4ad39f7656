package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

func (s *Server) routes() {
	m := s.mux
	for _, o := range writeOps { // writeops.go: every write, also served by POST /v1/batch
		m.HandleFunc(o.route(), s.writeRoute(o))
	}
	m.HandleFunc("POST /v1/batch", s.batch) // batch.go
	m.HandleFunc("GET /v1/bundles", s.listBundles)
	m.HandleFunc("GET /v1/bundles/{id}", s.showBundle)
	m.HandleFunc("GET /v1/footprints/{authority}", s.showFootprint)
	m.HandleFunc("GET /v1/sessions/{id}", s.showSession)
	m.HandleFunc("GET /v1/coherence", s.coherence)
	m.HandleFunc("GET /v1/upgrades/{bundle}", s.showUpgrade)
	m.HandleFunc("GET /v1/facts", s.listFacts)
	m.HandleFunc("GET /v1/facts/watch", s.watchFacts)
	s.factsRoutes() // facts_routes.go: retention and consumers
	m.HandleFunc("GET /v1/capabilities", s.showCapabilities)
	m.HandleFunc("GET /v1/cluster/status", s.clusterStatus)
	m.HandleFunc("POST /v1/cluster/join", s.clusterJoin)
	m.HandleFunc("POST /v1/cluster/remove", s.clusterRemove)
	m.HandleFunc("POST /v1/cluster/transfer-leadership", s.clusterTransfer)
	m.HandleFunc("POST /v1/cluster/snapshot", s.clusterSnapshot)
	m.HandleFunc("GET /v1/cluster/backup", s.clusterBackup)
	m.HandleFunc("POST /v1/cluster/restore", s.clusterRestore)
	m.HandleFunc("GET /v1/cluster/digest", s.clusterDigest)
	m.HandleFunc("GET /v1/internal/node", s.internalNode)
	m.HandleFunc("POST /v1/cluster/check", s.clusterCheck)               // consistency.go
	m.HandleFunc("GET /v1/internal/check/{index}", s.internalCheck)      // consistency.go
	m.HandleFunc("POST /v1/internal/consistency", s.internalConsistency) // consistency.go
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	m.Handle("GET /metrics", s.metrics.handler())
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, CodeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
}

// ---- bundles ----

func (s *Server) listBundles(w http.ResponseWriter, r *http.Request) {
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		out := []BundleJSON{}
		for _, b := range st.Bundles() {
			out = append(out, toBundleJSON(b))
		}
		return map[string]any{"bundles": out}, nil
	})
}

func (s *Server) showBundle(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		b, ok := st.Bundle(id)
		if !ok {
			return nil, &fsm.Error{Code: fsm.CodeBundleNotFound, Message: "bundle not found: " + id}
		}
		return toBundleJSON(b), nil
	})
}

// ---- footprints ----

func (s *Server) showFootprint(w http.ResponseWriter, r *http.Request) {
	auth, err := parseAuthority("authority", r.PathValue("authority"))
	if err != nil {
		writeBadInput(w, err)
		return
	}
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		f, ok := st.Footprint(auth)
		if !ok {
			return nil, &fsm.Error{Code: fsm.CodeAuthorityNotFound, Message: "no operation has touched authority " + auth.String()}
		}
		return AuthorityFootprint{AuthorityID: auth.String(), FootprintJSON: toFootprintJSON(f)}, nil
	})
}

// ---- delegations and live sessions ----

func (s *Server) showSession(w http.ResponseWriter, r *http.Request) {
	sess, err := parseSession("id", r.PathValue("id"))
	if err != nil {
		writeBadInput(w, err)
		return
	}
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		l, ok := st.LiveSession(sess)
		if !ok {
			return nil, &fsm.Error{Code: fsm.CodeSessionNotFound, Message: "live session " + sess.String() + " is not open"}
		}
		return toLiveSessionJSON(l), nil
	})
}

func (s *Server) coherence(w http.ResponseWriter, r *http.Request) {
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		if v := st.Coherence(); len(v) > 0 {
			s.logger.Error("reconfiguration coherence check failed", "violations", len(v))
			return CoherenceJSON{Status: "violations", Violations: v}, nil
		}
		return CoherenceJSON{Status: "coherent"}, nil
	})
}

// ---- runtime upgrades ----

func (s *Server) showUpgrade(w http.ResponseWriter, r *http.Request) {
	bundle := r.PathValue("bundle")
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		u, err := st.UpgradeSnapshot(bundle)
		if err != nil {
			return nil, err
		}
		return toUpgradeSnapshotJSON(u), nil
	})
}

// ---- facts ----

func factQuery(r *http.Request) (after uint64, limit int, err error) {
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, 0, badField("after", "must be a fact sequence number, not %q", v)
		}
	}
	limit = 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return 0, 0, badField("limit", "must be a number from 1 to 10000, not %q", v)
		}
		limit = n
	}
	return after, limit, nil
}

func (s *Server) listFacts(w http.ResponseWriter, r *http.Request) {
	after, limit, err := factQuery(r)
	if err != nil {
		writeBadInput(w, err)
		return
	}
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		if err := st.CheckFactsAfter(after); err != nil {
			return nil, err // 410 facts_trimmed, with first_seq (writeFSMError)
		}
		out := FactsResponse{Facts: []FactJSON{}, LastSeq: st.LastFactSeq(), FirstSeq: st.FirstFactSeq(), NextAfter: after}
		for _, f := range st.Facts(after, limit) {
			out.Facts = append(out.Facts, toFactJSON(&f))
			out.NextAfter = f.Seq
		}
		out.More = out.NextAfter < out.LastSeq
		return out, nil
	})
}

// watchFacts streams facts as JSON lines from this node's replica, in
// sequence order, as they are applied, until the client goes away.
func (s *Server) watchFacts(w http.ResponseWriter, r *http.Request) {
	after, _, err := factQuery(r)
	if err != nil {
		writeBadInput(w, err)
		return
	}
	var trimmed *fsm.Error
	s.node.FSM().Read(func(st *fsm.State) { trimmed = st.CheckFactsAfter(after) })
	if trimmed != nil {
		writeFSMError(w, trimmed)
		return
	}
	release, err := s.acquireWatch() // limits.go
	if err != nil {
		writeError(w, CodeUnavailable, fmt.Sprintf("%v: this node serves at most %d watches; retry later or follow another node", err, s.cfg.MaxWatches))
		return
	}
	defer release()
	nextWrite := streamDeadlines(w)
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		nextWrite()
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	ctx := r.Context()
	for {
		if s.node.Halted() != nil {
			return // the replica stopped applying: nothing more to say
		}
		var facts []fsm.Fact
		var applied uint64
		var trimmed *fsm.Error
		s.node.FSM().Read(func(st *fsm.State) {
			if trimmed = st.CheckFactsAfter(after); trimmed == nil {
				facts = st.Facts(after, 1000)
			}
			applied = st.AppliedIndex()
		})
		if trimmed != nil {
			// Retention passed this watcher: end the stream with the
			// error as its last line, never with a silent gap.
			_ = enc.Encode(ErrorBody{Error: fsmErrorDetail(trimmed)})
			return
		}
		for _, f := range facts {
			nextWrite()
			if err := enc.Encode(toFactJSON(&f)); err != nil {
				return
			}
			after = f.Seq
		}
		if flusher != nil && len(facts) > 0 {
			nextWrite()
			flusher.Flush()
		}
		if len(facts) == 1000 {
			continue
		}
		// Wait for the next entry, or a token reload: a watch whose token
		// was revoked ends there.
		wctx, cancel := s.untilChanged(ctx)
		err := s.node.FSM().WaitApplied(wctx, applied+1)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && s.revoked(r) {
			s.logger.Info("watch closed: its token was revoked or lost its role", "principal", PrincipalFrom(ctx).String())
			return
		}
	}
}

// ---- capabilities ----

func (s *Server) showCapabilities(w http.ResponseWriter, r *http.Request) {
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		on := st.Reconfiguration()
		return CapabilitiesJSON{Reconfiguration: &on}, nil
	})
}

// ---- cluster operations ----

func (s *Server) internalNode(w http.ResponseWriter, r *http.Request) {
	st, _ := s.node.Status()
	writeJSON(w, http.StatusOK, NodeJSON{ID: s.node.ID(), RaftAddr: s.cfg.Mux.Addr().String(), HTTPAddr: s.cfg.AdvertiseHTTP, State: st.State,
		ClusterID: s.node.ClusterID(), EntryFormat: s.support.EntryFormat, CommandVersion: s.support.CommandVersion, CommandTypes: s.support.CommandTypes})
}

// peerInfo asks a peer, over its Raft port, for its API address and state.
func (s *Server) peerInfo(ctx context.Context, raftAddr string) (NodeJSON, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+raftAddr+"/v1/internal/node", nil)
	if err != nil {
		return NodeJSON{}, err
	}
	req.Header.Set(HeaderForwardedBy, s.node.ID())
	resp, err := s.forward.Do(req)
	if err != nil {
		return NodeJSON{}, err
	}
	defer resp.Body.Close()
	var n NodeJSON
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("peer answered %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&n)
	return n, err
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.Status()
	if err != nil {
		writeError(w, CodeUnavailable, err.Error())
		return
	}
	out := StatusJSON{Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, Nodes: []NodeJSON{}, Self: st.ID}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	nodes := make([]NodeJSON, len(st.Servers))
	var wg sync.WaitGroup
	for i, sv := range st.Servers {
		nodes[i] = NodeJSON{ID: sv.ID, RaftAddr: sv.RaftAddr, Suffrage: "nonvoter", State: "unreachable"}
		if sv.Voter {
			nodes[i].Suffrage = "voter"
		}
		if sv.ID == st.ID {
			nodes[i].HTTPAddr, nodes[i].State = s.cfg.AdvertiseHTTP, st.State
			continue
		}
		wg.Add(1)
		go func(i int, addr string) {
			defer wg.Done()
			if info, err := s.peerInfo(ctx, addr); err == nil {
				nodes[i].HTTPAddr, nodes[i].State = info.HTTPAddr, info.State
			}
		}(i, sv.RaftAddr)
	}
	wg.Wait()
	for _, n := range nodes {
		if n.ID == st.LeaderID && st.LeaderID != "" {
			leader := n
			leader.Suffrage, leader.State = "", ""
			out.Leader = &leader
		}
	}
	out.Nodes = nodes
	out.Consistency = s.checks.verdict.Load() // consistency.go
	writeJSON(w, http.StatusOK, out)
}

// admin runs a leader-only cluster operation, forwarding when this node
// does not lead.
func (s *Server) admin(w http.ResponseWriter, r *http.Request, req any, op func(ctx context.Context) (any, error)) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if req != nil {
		if err := decodeStrict(bytesReader(body), req); err != nil {
			writeBadInput(w, err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if !s.node.IsLeader() {
		s.forwardToLeader(ctx, w, r, body)
		return
	}
	out, err := op(ctx)
	var coded *codedError
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		s.forwardToLeader(ctx, w, r, body)
	case errors.As(err, &coded):
		writeError(w, coded.code, coded.msg)
	case errors.Is(err, cluster.ErrUnknownMember):
		writeError(w, CodeNotFound, err.Error())
	case errors.Is(err, errBadRequest):
		writeBadInput(w, err)
	case err != nil:
		writeError(w, CodeUnavailable, err.Error())
	default:
		s.setLeaderHeader(w)
		writeJSON(w, http.StatusOK, out)
	}
}

var errBadRequest = errors.New("bad request")

func (s *Server) clusterJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	s.admin(w, r, &req, func(ctx context.Context) (any, error) {
		return s.join(ctx, r, &req) // join.go: cluster id and same-id checks
	})
}

func checkNodeID(field, id string) error {
	if id == "" || len(id) > fsm.MaxNameBytes {
		return fmt.Errorf("%w: %s: must be 1 to %d bytes", errBadRequest, field, fsm.MaxNameBytes)
	}
	return nil
}

// checkRaftAddr accepts host:port with a numeric port. A join names a
// server by id and address, and an existing member under the same id is
// replaced: an unchecked typo would swap a live member for an address no
// one listens on.
func checkRaftAddr(field, addr string) error {
	if addr == "" {
		return fmt.Errorf("%w: %s: is required", errBadRequest, field)
	}
	if len(addr) > fsm.MaxNameBytes {
		return fmt.Errorf("%w: %s: is %d bytes; the limit is %d", errBadRequest, field, len(addr), fsm.MaxNameBytes)
	}
	host, port, err := net.SplitHostPort(addr)
	if p, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || p == 0 {
		return fmt.Errorf("%w: %s: must be host:port with a port from 1 to 65535, not %q", errBadRequest, field, addr)
	}
	return nil
}

func (s *Server) clusterRemove(w http.ResponseWriter, r *http.Request) {
	var req NodeIDRequest
	s.admin(w, r, &req, func(ctx context.Context) (any, error) {
		if err := checkNodeID("id", req.ID); err != nil {
			return nil, err
		}
		if err := s.node.Remove(ctx, req.ID); err != nil {
			return nil, err
		}
		s.gate.invalidate()
		s.logChange(r, "member removed", "id", req.ID)
		return map[string]any{"removed": req.ID}, nil
	})
}

func (s *Server) clusterTransfer(w http.ResponseWriter, r *http.Request) {
	var req NodeIDRequest
	s.admin(w, r, &req, func(ctx context.Context) (any, error) {
		if err := s.node.TransferLeadership(ctx, req.ID); err != nil {
			return nil, err
		}
		// The transfer returns once the target has been told to campaign;
		// wait for the cluster to name the new leader.
		lid, err := s.node.WaitNewLeader(ctx, s.node.ID())
		if err != nil {
			return nil, err
		}
		s.logChange(r, "leadership transferred", "to", lid)
		return map[string]any{"leader": lid}, nil
	})
}

func (s *Server) clusterSnapshot(w http.ResponseWriter, r *http.Request) {
	// Any node can compact its own log; this one does.
	if _, ok := s.readBody(w, r); !ok {
		return
	}
	if err := s.node.SnapshotNow(); err != nil {
		writeError(w, CodeUnavailable, "snapshot: "+err.Error())
		return
	}
	st, _ := s.node.Status()
	s.logChange(r, "snapshot taken", "index", st.AppliedIndex)
	writeJSON(w, http.StatusOK, map[string]any{"node": s.node.ID(), "index": st.AppliedIndex})
}

func (s *Server) clusterBackup(w http.ResponseWriter, r *http.Request) {
	streamDeadlines(w) // a large backup may take longer than the write timeout (limits.go)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="reconf-backup.snap"`)
	n, err := s.node.Backup(w)
	if err != nil && n == 0 {
		w.Header().Set("Content-Type", "application/json")
		writeError(w, CodeUnavailable, "backup: "+err.Error())
		return
	}
	if err != nil {
		s.logger.Error("backup stream failed", "bytes", n, "error", err)
	}
}

func (s *Server) clusterRestore(w http.ResponseWriter, r *http.Request) {
	streamDeadlines(w) // an upload may take longer than the read timeout; bounded by ctx below
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	if !s.node.IsLeader() {
		// Backups can be large: stream through to the leader.
		s.forwardStream(ctx, w, r)
		return
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxRestoreBytes)
	err := s.node.Restore(ctx, body)
	switch {
	case errors.Is(err, cluster.ErrInvalidBackup):
		writeBadInput(w, badField("body", "%v", err))
	case errors.Is(err, cluster.ErrNotLeader):
		writeError(w, CodeUnavailable, "leadership changed during restore; retry")
	case err != nil:
		writeError(w, CodeUnavailable, "restore: "+err.Error())
	default:
		idx, d := s.node.Digest()
		s.logChange(r, "backup restored", "index", idx, "digest", digestHex(d))
		writeJSON(w, http.StatusOK, DigestJSON{Index: idx, Digest: digestHex(d)})
	}
}

func (s *Server) clusterDigest(w http.ResponseWriter, r *http.Request) {
	idx, d := s.node.Digest()
	writeJSON(w, http.StatusOK, DigestJSON{Index: idx, Digest: digestHex(d)})
}

// ---- health ----

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz: a leader is known and this node has applied everything it knows
// to be committed.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.Status()
	switch {
	case err != nil:
		writeError(w, CodeUnavailable, err.Error())
	case s.node.Halted() != nil:
		writeError(w, CodeReplicaHalted, s.node.Halted().Error()+". Replace this node (docs/operations.md, \"A replica that stopped applying\")")
	case s.inconsistent() != "":
		writeError(w, CodeReplicaInconsistent, s.inconsistent()+". Replace this node (docs/operations.md, \"A replica that disagrees\")")
	case s.node.StorageError() != nil:
		writeError(w, CodeUnavailable, "this node "+s.node.StorageError().Error())
	case st.LeaderAddr == "":
		writeError(w, CodeUnavailable, "no leader is known")
	case st.AppliedIndex+1 < st.CommitIndex:
		writeError(w, CodeUnavailable, fmt.Sprintf("catching up: applied %d of %d", st.AppliedIndex, st.CommitIndex))
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "leader": st.LeaderID, "applied_index": st.AppliedIndex})
	}
}
