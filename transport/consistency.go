package transport

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// Replica consistency checks (etcd's corruption check): the leader proposes
// a consistency check entry (fsm.ConsistencyCheck), every replica digests
// its state at that entry from an O(1) clone, off its apply path
// (cluster/consistency.go), and the leader collects the digests and
// compares them.
//
// Collection is pull, by the leader: it asks each member GET
// /v1/internal/check/{index} over the Raft port (the forwarding path the
// version gate already uses for /v1/internal/node), and the member answers
// once it has applied and digested that entry. Pull keeps the followers
// passive (no follower needs to know who leads, or to retry a push to a
// leader that changed), bounds the check by one request timeout, and
// reaches exactly the members of the configuration at the time.
//
// The leader then judges (judgeCheck): a digest held by a strict majority
// of the configuration is the reference; a member with another digest is
// odd. The verdict is kept on the leader and pushed to every member (POST
// /v1/internal/consistency, peers only), so that an odd replica answers
// /readyz 503 replica_inconsistent and serves no reads, every node's
// metrics and cluster status show the alarm, and a later leader still
// knows it. Only a complete check clears an alarm: one whose members all
// answered and agreed. Alarms live in memory: a restarted node learns the
// alarm again at the next check (reconfd --consistency-check-interval,
// or reconfctl cluster check).

// CodeReplicaInconsistent: a consistency check found this node's state
// different from the majority's at the same index.
const CodeReplicaInconsistent = "replica_inconsistent"

// Check statuses, of a whole check and of one member.
const (
	CheckConsistent = "consistent" // every member answered with the same digest
	CheckMismatch   = "mismatch"   // two members differ: the alarm
	CheckIncomplete = "incomplete" // no two differ, but some did not answer with a digest

	MemberOK          = "ok"
	MemberHalted      = "halted"      // stopped applying before the check (fsm/halt.go)
	MemberMissing     = "missing"     // never digests this check (installed a snapshot past it, ...)
	MemberPending     = "pending"     // not applied or digested before the deadline
	MemberUnreachable = "unreachable" // did not answer
)

// CheckMemberJSON is one member's answer to a check.
type CheckMemberJSON struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr,omitempty"`
	Status   string `json:"status"`
	Digest   string `json:"digest,omitempty"`
	Error    string `json:"error,omitempty"`
}

// CheckJSON is the verdict of one consistency check: POST /v1/cluster/check
// answers it, and GET /v1/cluster/status shows the one in force.
type CheckJSON struct {
	Index   uint64            `json:"index"`
	Status  string            `json:"status"`
	Members []CheckMemberJSON `json:"members"`
	Odd     []string          `json:"odd,omitempty"` // members whose digest differs from the majority's
	Message string            `json:"message,omitempty"`
}

// checkWait bounds how long the leader waits for members' digests.
const checkWait = 15 * time.Second

// consistency is a server's check state.
type consistency struct {
	run     sync.Mutex                // one check at a time on this node
	verdict atomic.Pointer[CheckJSON] // the one in force (consistent or mismatch), newest index
}

// judgeCheck compares the members' answers. It is a pure function of its
// input: members are reported sorted by id.
func judgeCheck(index uint64, members []CheckMemberJSON) CheckJSON {
	members = slices.Clone(members)
	sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
	v := CheckJSON{Index: index, Members: members}
	count := map[string]int{}
	answered := 0
	for _, m := range members {
		if m.Status == MemberOK {
			count[m.Digest]++
			answered++
		}
	}
	switch {
	case len(count) > 1:
		v.Status = CheckMismatch
		ref := ""
		for d, c := range count {
			if 2*c > len(members) {
				ref = d
			}
		}
		for _, m := range members {
			if m.Status == MemberOK && m.Digest != ref {
				v.Odd = append(v.Odd, m.ID)
			}
		}
		if ref == "" {
			v.Message = fmt.Sprintf("replicas disagree at index %d and no digest is held by a majority of the %d members: every replica that answered is suspect", index, len(members))
		} else {
			v.Message = fmt.Sprintf("replicas disagree at index %d: %s differ from the majority's digest %s; replace them (docs/operations.md, \"A replica that disagrees\")",
				index, strings.Join(v.Odd, ", "), ref)
		}
	case answered == len(members):
		v.Status = CheckConsistent
	default:
		v.Status = CheckIncomplete
		v.Message = fmt.Sprintf("%d of %d members reported a digest at index %d, and they agree", answered, len(members), index)
	}
	return v
}

// runCheck proposes a check entry (leader only) and judges the digests.
func (s *Server) runCheck(ctx context.Context) (*CheckJSON, error) {
	s.checks.run.Lock()
	defer s.checks.run.Unlock()
	res, err := s.node.Propose(ctx, fsm.Command{Op: &fsm.ConsistencyCheck{}})
	switch {
	case errors.Is(err, cluster.ErrUpgradeInProgress):
		return nil, &codedError{CodeUpgradeInProgress, err.Error()}
	case errors.Is(err, cluster.ErrHalted) && !errors.Is(err, cluster.ErrUnknownOutcome):
		return nil, &codedError{CodeReplicaHalted, err.Error()}
	case err != nil:
		return nil, err
	case res.Err != nil:
		return nil, &codedError{string(res.Err.Code), res.Err.Message}
	}
	servers, err := s.node.Servers()
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, checkWait)
	defer cancel()
	members := make([]CheckMemberJSON, len(servers))
	var wg sync.WaitGroup
	for i, sv := range servers {
		wg.Add(1)
		go func(i int, sv cluster.Server) {
			defer wg.Done()
			if sv.ID == s.node.ID() {
				members[i] = s.localCheck(wctx, res.Index)
			} else {
				members[i] = s.peerCheck(wctx, sv.RaftAddr, res.Index)
			}
			members[i].ID, members[i].RaftAddr = sv.ID, sv.RaftAddr
		}(i, sv)
	}
	wg.Wait()
	v := judgeCheck(res.Index, members)
	s.recordVerdict(&v)
	if v.Status != CheckIncomplete {
		s.pushVerdict(ctx, servers, &v)
	}
	return &v, nil
}

// localCheck is this node's digest at the check entry index.
func (s *Server) localCheck(ctx context.Context, index uint64) CheckMemberJSON {
	d, err := s.node.CheckDigest(ctx, index)
	switch {
	case err == nil:
		return CheckMemberJSON{ID: s.node.ID(), Status: MemberOK, Digest: hex.EncodeToString(d[:])}
	case errors.Is(err, cluster.ErrHalted):
		return CheckMemberJSON{ID: s.node.ID(), Status: MemberHalted, Error: err.Error()}
	case errors.Is(err, cluster.ErrNoCheckDigest):
		return CheckMemberJSON{ID: s.node.ID(), Status: MemberMissing, Error: err.Error()}
	default:
		return CheckMemberJSON{ID: s.node.ID(), Status: MemberPending, Error: err.Error()}
	}
}

// peerCheck asks a member, over its Raft port, for its digest at index.
func (s *Server) peerCheck(ctx context.Context, raftAddr string, index uint64) CheckMemberJSON {
	var out CheckMemberJSON
	err := s.peerCall(ctx, http.MethodGet, raftAddr, "/v1/internal/check/"+strconv.FormatUint(index, 10), nil, &out)
	if err != nil {
		return CheckMemberJSON{Status: MemberUnreachable, Error: err.Error()}
	}
	switch out.Status {
	case MemberOK, MemberHalted, MemberMissing, MemberPending:
	default:
		return CheckMemberJSON{Status: MemberUnreachable, Error: fmt.Sprintf("answered with status %q", out.Status)}
	}
	return CheckMemberJSON{Status: out.Status, Digest: out.Digest, Error: out.Error}
}

// peerCall sends one request to a peer's Raft port and decodes a 200 answer.
func (s *Server) peerCall(ctx context.Context, method, raftAddr, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+raftAddr+path, bytesReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(HeaderForwardedBy, s.node.ID())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.forward.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(out)
}

// pushVerdict tells every other member the verdict, best effort: a member
// that misses it learns it at the next check.
func (s *Server) pushVerdict(ctx context.Context, servers []cluster.Server, v *CheckJSON) {
	body, _ := json.Marshal(v)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, sv := range servers {
		if sv.ID == s.node.ID() {
			continue
		}
		wg.Add(1)
		go func(addr, id string) {
			defer wg.Done()
			if err := s.peerCall(pctx, http.MethodPost, addr, "/v1/internal/consistency", body, nil); err != nil {
				s.logger.Warn("consistency check: could not tell a member the verdict", "member", id, "index", v.Index, "error", err)
			}
		}(sv.RaftAddr, sv.ID)
	}
	wg.Wait()
}

// recordVerdict puts a complete verdict in force when it is newer than the
// one in force. An incomplete one changes nothing: it cannot clear an alarm
// (the odd replica may be the one that did not answer).
func (s *Server) recordVerdict(v *CheckJSON) {
	if v.Status != CheckConsistent && v.Status != CheckMismatch {
		s.logger.Warn("consistency check incomplete", "index", v.Index, "message", v.Message)
		return
	}
	for {
		cur := s.checks.verdict.Load()
		if cur != nil && cur.Index >= v.Index {
			return
		}
		if s.checks.verdict.CompareAndSwap(cur, v) {
			break
		}
	}
	if v.Status == CheckMismatch {
		s.logger.Error("CONSISTENCY ALARM: replicas hold different states at the same index", "index", v.Index, "odd", strings.Join(v.Odd, ","), "message", v.Message)
		if slices.Contains(v.Odd, s.node.ID()) && s.node.IsLeader() {
			// An odd leader would serve every linearizable read from its
			// state: hand leadership to another voter.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := s.node.TransferLeadership(ctx, ""); err != nil {
					s.logger.Warn("odd leader: leadership transfer failed", "error", err)
				}
			}()
		}
	} else {
		s.logger.Info("consistency check passed", "index", v.Index, "members", len(v.Members))
	}
}

// inconsistent is why this replica must not serve, or "": the verdict in
// force names it odd.
func (s *Server) inconsistent() string {
	v := s.checks.verdict.Load()
	if v == nil || v.Status != CheckMismatch || !slices.Contains(v.Odd, s.node.ID()) {
		return ""
	}
	return fmt.Sprintf("the consistency check at index %d found the state of this replica (%s) different from the others': %s", v.Index, s.node.ID(), v.Message)
}

// ---- routes ----

// clusterCheck is POST /v1/cluster/check (admin; leader, forwarded).
func (s *Server) clusterCheck(w http.ResponseWriter, r *http.Request) {
	s.admin(w, r, nil, func(ctx context.Context) (any, error) {
		v, err := s.runCheck(ctx)
		if err != nil {
			return nil, err
		}
		s.logChange(r, "consistency check", "index", v.Index, "status", v.Status)
		return v, nil
	})
}

// internalCheck is GET /v1/internal/check/{index}: this node's digest at a
// check entry, once it has applied and digested it.
func (s *Server) internalCheck(w http.ResponseWriter, r *http.Request) {
	index, err := strconv.ParseUint(r.PathValue("index"), 10, 64)
	if err != nil || index == 0 {
		writeBadInput(w, badField("index", "must be a Raft log index from 1, not %q", r.PathValue("index")))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkWait)
	defer cancel()
	writeJSON(w, http.StatusOK, s.localCheck(ctx, index))
}

// internalConsistency is POST /v1/internal/consistency: the leader's
// verdict. Only peers (over the Raft port) may send it: it can take a
// replica out of service.
func (s *Server) internalConsistency(w http.ResponseWriter, r *http.Request) {
	if viaPeer, _ := r.Context().Value(viaPeerKey{}).(bool); !viaPeer {
		// Not a client route at all (so not a role matter: even admin
		// gets no further).
		writeError(w, CodeNotFound, "POST /v1/internal/consistency is served only to cluster members, on the Raft port")
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var v CheckJSON
	if err := decodeStrict(bytesReader(body), &v); err != nil {
		writeBadInput(w, err)
		return
	}
	if err := checkVerdict(&v); err != nil {
		writeBadInput(w, err)
		return
	}
	s.recordVerdict(&v)
	writeJSON(w, http.StatusOK, map[string]any{"index": v.Index})
}

// checkVerdict validates a pushed verdict: it must be one judgeCheck could
// have made.
func checkVerdict(v *CheckJSON) error {
	switch {
	case v.Index == 0:
		return badField("index", "must be a Raft log index from 1")
	case v.Status != CheckConsistent && v.Status != CheckMismatch && v.Status != CheckIncomplete:
		return badField("status", "must be consistent, mismatch or incomplete, not %q", v.Status)
	case len(v.Members) == 0:
		return badField("members", "must name at least one member")
	}
	again := judgeCheck(v.Index, v.Members)
	if again.Status != v.Status || !slices.Equal(again.Odd, v.Odd) {
		return badField("odd", "does not follow from the members' digests")
	}
	return nil
}

// ---- metrics ----

var (
	descAlarm = prometheus.NewDesc("reconf_consistency_alarm",
		"1 while the consistency check in force found replicas with different states at the same index (reconf_consistency_odd_replica names them), else 0.", nil, nil)
	descOdd = prometheus.NewDesc("reconf_consistency_odd_replica",
		"1 for each replica whose digest differed from the majority's at the consistency check in force. Replace it (docs/operations.md).", []string{"replica"}, nil)
	descCheckIndex = prometheus.NewDesc("reconf_consistency_check_index",
		"Raft index of the consistency check in force on this node (0: none since it started).", nil, nil)
)

type consistencyCollector struct{ s *Server }

func (c consistencyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAlarm
	ch <- descOdd
	ch <- descCheckIndex
}

func (c consistencyCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.s.checks.verdict.Load()
	alarm, index := 0.0, 0.0
	if v != nil {
		index = float64(v.Index)
		if v.Status == CheckMismatch {
			alarm = 1
			for _, id := range v.Odd {
				ch <- prometheus.MustNewConstMetric(descOdd, prometheus.GaugeValue, 1, id)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descAlarm, prometheus.GaugeValue, alarm)
	ch <- prometheus.MustNewConstMetric(descCheckIndex, prometheus.GaugeValue, index)
}

// ---- periodic checks ----

// checkLoop runs a check every interval while this node leads, until the
// node stops.
func (s *Server) checkLoop(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.node.Done():
			return
		case <-t.C:
		}
		if !s.node.IsLeader() || s.node.Halted() != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), checkWait+s.cfg.RequestTimeout)
		v, err := s.runCheck(ctx)
		cancel()
		if err != nil {
			s.logger.Warn("periodic consistency check not run", "error", err)
			continue
		}
		s.logger.Debug("periodic consistency check", "index", v.Index, "status", v.Status)
	}
}
