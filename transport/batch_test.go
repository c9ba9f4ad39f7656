package transport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reconf/reconf/transport"
)

func batchOf(ops ...transport.BatchOperation) transport.BatchRequest {
	return transport.BatchRequest{Operations: ops}
}

func footprintAddOp(auth, sess, requestID string) transport.BatchOperation {
	o := transport.NewBatchOperation("footprint_add", transport.FootprintAddRequest{SessionID: sess})
	o.Authority, o.RequestID = auth, requestID
	return o
}

func delegateOp(req transport.DelegationRequest) transport.BatchOperation {
	return transport.NewBatchOperation("delegate", req)
}

// POST /v1/batch through a follower: every operation gets the answer its own
// route would give, the accepted ones land in one entry, a rejected one
// leaves no trace, and a resend with the same request ids changes nothing.
func TestBatchOperationsOwnResults(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	f := c.follower(l)
	a, b := newAuthority(), newAuthority()
	s1, s2, s3, ghost := newSession(), newSession(), newSession(), newSession()
	f.addNative(a, s3)
	removeOp := transport.BatchOperation{Op: "footprint_remove", Authority: a, Session: s3, RequestID: "rm-" + newUUID()}
	openOp := transport.NewBatchOperation("session_open", transport.OpenSessionRequest{SessionID: s1, OwnerLabel: "owner-a"})
	req := batchOf(
		footprintAddOp(a, s1, "add1-"+newUUID()),             // 0 ok
		footprintAddOp(a, s2, "add2-"+newUUID()),             // 1 ok
		delegateOp(delegation(s1, a, b, "d1-"+newUUID())),    // 2 ok: s1 was recorded by op 0
		delegateOp(delegation(ghost, a, b, "dg-"+newUUID())), // 3 409 session_not_owned
		removeOp, // 4 ok
		openOp,   // 5 ok
		transport.BatchOperation{Op: "no_such_op"},                // 6 400
		footprintAddOp("not-an-authority", s2, ""),                // 7 400
		transport.NewBatchOperation("delegate", map[string]any{}), // 8 400: fields missing
		transport.BatchOperation{Op: "footprint_add", Authority: a, Bundle: "x", Request: json.RawMessage(`{"session_id":"` + s2 + `"}`)}, // 9 400: takes no bundle
	)
	r := f.must(http.StatusOK, http.MethodPost, "/v1/batch", req)
	got := decodeAs[transport.BatchResponse](t, r)
	if len(got.Results) != len(req.Operations) {
		t.Fatalf("%d results for %d operations", len(got.Results), len(req.Operations))
	}
	want := []struct {
		status int
		code   string
	}{{200, ""}, {200, ""}, {200, ""}, {409, "session_not_owned"}, {200, ""}, {200, ""},
		{400, "invalid_argument"}, {400, "invalid_argument"}, {400, "invalid_argument"}, {400, "invalid_argument"}}
	for i, w := range want {
		g := got.Results[i]
		code := ""
		if g.Error != nil {
			code = g.Error.Code
		}
		if g.Status != w.status || code != w.code {
			t.Errorf("operation %d: %d %s %+v, want %d %s", i, g.Status, code, g.Error, w.status, w.code)
		}
		if (g.Status == http.StatusOK) != (len(g.Result) > 0) {
			t.Errorf("operation %d: status %d with result %s", i, g.Status, g.Result)
		}
	}
	if msg := got.Results[9].Error.Message; !strings.Contains(msg, "bundle") {
		t.Errorf("operation 9's error names no field: %q", msg)
	}
	// The accepted operations went into one log entry.
	var idx []uint64
	for _, i := range []int{0, 1, 4} {
		idx = append(idx, decodeAs[transport.IndexResponse](t, httpResp{Body: got.Results[i].Result}).Index)
	}
	del := decodeAs[transport.DelegationResponse](t, httpResp{Body: got.Results[2].Result})
	idx = append(idx, del.Index)
	for _, x := range idx {
		if x != idx[0] || x == 0 {
			t.Errorf("accepted operations at indexes %v, want one entry", idx)
			break
		}
	}
	if del.Receipt.SessionID != s1 || del.FactSeq != 1 || !contains(del.Receipt.ToAfter.DelegatedInSessions, s1) {
		t.Errorf("delegation result %+v", del)
	}
	live := decodeAs[transport.LiveSessionJSON](t, httpResp{Body: got.Results[5].Result})
	if live.SessionID != s1 || live.OwnerLabel != "owner-a" || live.Generation != 1 {
		t.Errorf("session open result %+v", live)
	}

	// The state is what the accepted operations make it, and nothing of the
	// rejected ones.
	fa, _ := l.footprint(a, "")
	fb, _ := l.footprint(b, "")
	if !contains(fa.NativeSessions, s2) || contains(fa.NativeSessions, s3) || !contains(fa.DelegatedOutSessions, s1) ||
		!contains(fb.DelegatedInSessions, s1) || contains(fb.DelegatedInSessions, ghost) {
		t.Errorf("footprints after the batch: %+v %+v", fa, fb)
	}
	if n := lastFactSeq(t, l); n != 1 {
		t.Errorf("%d facts, want 1 (the rejected delegation left none)", n)
	}
	before := c.waitConverged(del.Index)

	// Resending the accepted operations with their request ids answers the
	// first results and changes nothing.
	again := decodeAs[transport.BatchResponse](t, l.must(http.StatusOK, http.MethodPost, "/v1/batch",
		batchOf(req.Operations[0], req.Operations[2], removeOp)))
	redel := decodeAs[transport.DelegationResponse](t, httpResp{Body: again.Results[1].Result})
	if !redel.Deduped || redel.FactSeq != 1 || redel.Index != del.Index {
		t.Errorf("resent delegation: %+v", redel)
	}
	for i, g := range again.Results {
		if g.Status != http.StatusOK {
			t.Errorf("resent operation %d: %d %+v", i, g.Status, g.Error)
		}
	}
	if after := c.waitConverged(before.Index); after.Digest != before.Digest {
		t.Errorf("resending deduplicated operations changed the state")
	}
}

// A batch that cannot be read at all is refused as a whole.
func TestBatchRefusedAsAWhole(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{})
	l := c.waitLeader()
	auth := newAuthority()
	tooMany := make([]transport.BatchOperation, transport.MaxBatchOperations+1)
	for i := range tooMany {
		tooMany[i] = footprintAddOp(auth, newSession(), "")
	}
	huge := `{"operations":[{"op":"footprint_add","authority":"` + auth + `","request":{"session_id":"` + strings.Repeat("x", transport.MaxBatchBodyBytes) + `"}}]}`
	for name, body := range map[string]any{
		"empty":     []byte(`{"operations":[]}`),
		"no body":   []byte(``),
		"not json":  []byte(`{"operations":`),
		"unknown":   []byte(`{"operations":[],"extra":1}`),
		"too many":  batchOf(tooMany...),
		"too large": []byte(huge),
	} {
		r, err := l.do(http.MethodPost, "/v1/batch", body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Status != http.StatusBadRequest || errorOf(t, r).Code != "invalid_argument" {
			t.Errorf("%s: %s", name, r)
		}
	}
	if _, ok := l.footprintMaybe(auth); ok {
		t.Errorf("a refused batch changed the state")
	}
}

func (n *tnode) footprintMaybe(auth string) (transport.AuthorityFootprint, bool) {
	r, err := n.do(http.MethodGet, "/v1/footprints/"+auth, nil)
	if err != nil || r.Status != http.StatusOK {
		return transport.AuthorityFootprint{}, false
	}
	return decodeAs[transport.AuthorityFootprint](n.c.t, r), true
}

// Batches and single writes keep going while the leader crashes: every
// operation acknowledged (status 200) is on the new leader, and on the old
// one after it restarts; none is applied twice.
func TestBatchThroughLeaderChange(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	old := c.waitLeader()
	a, b := newAuthority(), newAuthority()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	type acked struct {
		sess     string
		delegate bool
		factSeq  uint64
	}
	var mu sync.Mutex
	var acks []acked
	var unknown int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.client()
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				// A batch: record sessions native, then delegate each, the
				// delegation of session k right after its record.
				n := 2 + (w+round)%8
				var ops []transport.BatchOperation
				var sess []string
				for k := 0; k < n; k++ {
					s := newSession()
					sess = append(sess, s)
					ops = append(ops, footprintAddOp(a, s, "add-"+newUUID()), delegateOp(delegation(s, a, b, "del-"+newUUID())))
				}
				// Operations whose outcome is not known yet are resent,
				// with their request ids, until it is.
				pending := ops
				deadline := time.Now().Add(30 * time.Second)
				for len(pending) > 0 {
					resp, err := cl.Batch(ctx, batchOf(pending...))
					if err != nil {
						if time.Now().After(deadline) {
							t.Errorf("batch not answered within the retry budget: %v", err)
							return
						}
						continue
					}
					var retry []transport.BatchOperation
					for i, r := range resp.Results {
						op := pending[i]
						switch {
						case r.Status == http.StatusOK:
							var out struct {
								FactSeq uint64 `json:"fact_seq"`
							}
							_ = json.Unmarshal(r.Result, &out)
							var s string
							if op.Op == "delegate" {
								var d transport.DelegationRequest
								_ = json.Unmarshal(op.Request, &d)
								s = d.SessionID
							} else {
								var fr transport.FootprintAddRequest
								_ = json.Unmarshal(op.Request, &fr)
								s = fr.SessionID
							}
							mu.Lock()
							acks = append(acks, acked{sess: s, delegate: op.Op == "delegate", factSeq: out.FactSeq})
							mu.Unlock()
						case r.Error != nil && (r.Error.Code == transport.CodeUnavailable || r.Error.Code == transport.CodeUnknownOutcome):
							retry = append(retry, op)
						default:
							// A delegation whose record went unanswered in
							// the same batch may find the session missing;
							// its record is retried, the delegation too.
							if op.Op == "delegate" && r.Error != nil && r.Error.Code == "session_not_owned" && len(retry) > 0 {
								retry = append(retry, transport.NewBatchOperation("delegate", json.RawMessage(op.Request)))
								retry[len(retry)-1].RequestID = "del-" + newUUID()
								continue
							}
							t.Errorf("operation %s: %d %+v", op.Op, r.Status, r.Error)
						}
					}
					if len(retry) > 0 {
						mu.Lock()
						unknown += len(retry)
						mu.Unlock()
						time.Sleep(50 * time.Millisecond)
					}
					pending = retry
					if time.Now().After(deadline) && len(pending) > 0 {
						t.Errorf("%d operations without a definite answer after 30s", len(pending))
						return
					}
				}
				_ = sess
			}
		}()
	}
	time.Sleep(400 * time.Millisecond)
	old.stop(true)
	l := c.waitNewLeader(old)
	time.Sleep(400 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("killed %s; %s leads; %d operations acknowledged, %d answers were retried", old.id, l.id, len(acks), unknown)
	if len(acks) == 0 {
		t.Fatal("nothing was acknowledged")
	}

	check := func(n *tnode, query string) {
		t.Helper()
		fa, _ := n.footprint(a, query)
		fb, _ := n.footprint(b, query)
		facts := n.factsBySeq(query)
		delegated := 0
		for _, k := range acks {
			var ok bool
			if k.delegate {
				delegated++
				ok = contains(fa.DelegatedOutSessions, k.sess) && contains(fb.DelegatedInSessions, k.sess) && facts[k.factSeq].SessionID == k.sess
			} else {
				ok = contains(fa.NativeSessions, k.sess) || contains(fa.DelegatedOutSessions, k.sess)
			}
			if !ok {
				t.Errorf("%s: acknowledged %v is missing", n.id, k)
			}
		}
		if len(facts) != delegated {
			t.Errorf("%s: %d facts for %d acknowledged delegations (each must apply exactly once)", n.id, len(facts), delegated)
		}
	}
	check(l, "")
	old.restart()
	c.waitConverged(l.mustDigest().Index)
	check(old, "?consistency=stale")
}

// Client.Batch gives every operation without a request id one (on the
// operation), keeps the ids callers gave, and does not change the caller's
// request: a whole batch can then be resent after an unknown outcome and
// each operation applies at most once.
func TestClientBatchRequestIDs(t *testing.T) {
	var got transport.BatchRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"results":[{"status":200,"result":{}},{"status":200,"result":{}},{"status":200,"result":{}}]}`)
	}))
	defer srv.Close()
	cl := transport.NewClient([]string{strings.TrimPrefix(srv.URL, "http://")})
	a, b, s := newAuthority(), newAuthority(), newSession()
	req := batchOf(footprintAddOp(a, s, ""), delegateOp(delegation(s, a, b, "inside")), footprintAddOp(a, s, "outside"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Batch(ctx, req)
	if err != nil || len(resp.Results) != 3 {
		t.Fatalf("%+v %v", resp, err)
	}
	if req.Operations[0].RequestID != "" {
		t.Errorf("Batch changed the caller's request")
	}
	if len(got.Operations) != 3 || got.Operations[0].RequestID == "" || got.Operations[1].RequestID != "" || got.Operations[2].RequestID != "outside" {
		t.Errorf("request ids sent: %q %q %q", got.Operations[0].RequestID, got.Operations[1].RequestID, got.Operations[2].RequestID)
	}
	if !strings.Contains(string(got.Operations[1].Request), `"request_id":"inside"`) {
		t.Errorf("the id inside a request was lost: %s", got.Operations[1].Request)
	}
}
