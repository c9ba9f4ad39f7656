package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// POST /v1/batch: many writes in one request. The operations are checked one
// by one, then proposed together, so they land in one log entry (or a few,
// when they exceed the leader's batch bounds) and cost one round of fsyncs.
// Each operation still succeeds or fails on its own and gets its own result,
// exactly what its own route would have answered: a rejected operation
// leaves no trace and does not stop the others. They apply in the order
// given.
//
//	{"operations": [
//	  {"op": "delegate", "request": {<DelegationRequest>}},
//	  {"op": "footprint_add", "authority": "authority-…", "request": {"session_id": "session-…"}},
//	  {"op": "footprint_remove", "authority": "authority-…", "session": "session-…", "request_id": "r1"}]}
//	→ {"results": [{"status": 200, "result": {…}}, {"status": 409, "error": {"code", "message"}}, …]}
//
// op names one of the writes (writeOps: bundle_register, bundle_link,
// footprint_add, footprint_remove, delegate, session_open, session_handoff,
// upgrade_seed, upgrade_execute, capabilities_set); authority, session and
// bundle are what the operation's own route takes from its path; request
// is its route's body. request_id may be given on the operation instead of
// inside request. The answer is 200 whenever the batch itself could be read;
// a batch that cannot be read at all is a 400.

// Bounds on one batch.
const (
	MaxBatchOperations = 1024
	MaxBatchBodyBytes  = 4 << 20
)

// BatchRequest is POST /v1/batch.
type BatchRequest struct {
	Operations []BatchOperation `json:"operations"`
}

// BatchOperation is one write of a batch.
type BatchOperation struct {
	Op        string          `json:"op"`
	Authority string          `json:"authority,omitempty"`
	Session   string          `json:"session,omitempty"`
	Bundle    string          `json:"bundle,omitempty"`
	RequestID string          `json:"request_id,omitempty"`
	Request   json.RawMessage `json:"request,omitempty"`
}

// NewBatchOperation makes a batch operation from a request value (one of the
// API's request types, marshalled as its route's body).
func NewBatchOperation(op string, request any) BatchOperation {
	o := BatchOperation{Op: op}
	if request != nil {
		o.Request, _ = json.Marshal(request) // the API's request types always marshal
	}
	return o
}

// BatchResponse answers POST /v1/batch: one result per operation, in order.
type BatchResponse struct {
	Results []BatchResult `json:"results"`
}

// BatchResult is one operation's answer: the status its own route would
// have answered with, and its result or error.
type BatchResult struct {
	Status int             `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *ErrorDetail    `json:"error,omitempty"`
}

// batchResult is BatchResult as the server writes it.
type batchResult struct {
	Status int          `json:"status"`
	Result any          `json:"result,omitempty"`
	Error  *ErrorDetail `json:"error,omitempty"`
}

func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBodyLimit(w, r, MaxBatchBodyBytes)
	if !ok {
		return
	}
	var req BatchRequest
	if !decodeBatchFast(body, &req) { // flatjson.go
		req = BatchRequest{}
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			writeBadInput(w, err)
			return
		}
	}
	if n := len(req.Operations); n == 0 || n > MaxBatchOperations {
		writeBadInput(w, badField("operations", "has %d operations; a batch takes 1 to %d", n, MaxBatchOperations))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if !s.node.IsLeader() {
		s.forwardToLeader(ctx, w, r, body)
		return
	}
	now := s.cfg.Now()
	who := PrincipalFrom(r.Context())
	results := make([]batchResult, len(req.Operations))
	var cmds []fsm.Command
	var preps []prepared
	var at []int
	gated := map[fsm.Type]string{}
	for i := range req.Operations {
		p, e := prepareBatchOp(&req.Operations[i], now, who)
		if e == nil {
			t := p.cmd.Op.Type()
			why, seen := gated[t]
			if !seen {
				why = s.gate.check(ctx, t)
				gated[t] = why
			}
			if why != "" {
				e = &ErrorDetail{Code: CodeUpgradeInProgress, Message: why}
			}
		}
		if e != nil {
			results[i] = batchResult{Status: statusOf(e.Code), Error: e}
			continue
		}
		cmds, preps, at = append(cmds, p.cmd), append(preps, p), append(at, i)
	}
	if len(cmds) > 0 {
		start := time.Now()
		applied := s.node.ProposeAll(ctx, cmds)
		took := time.Since(start)
		notLeader := 0
		for _, a := range applied {
			if errors.Is(a.Err, cluster.ErrNotLeader) {
				notLeader++
			}
		}
		if notLeader == len(applied) {
			// Nothing was appended here: the leader can take it all.
			s.forwardToLeader(ctx, w, r, body)
			return
		}
		accepted := 0
		for k, a := range applied {
			s.metrics.observeCommand(cmds[k].Op.Type(), a.Result, a.Err, took)
			out, e := outcomeOf(preps[k], a.Result, a.Err)
			if e != nil {
				results[at[k]] = batchResult{Status: statusOf(e.Code), Error: e}
				continue
			}
			accepted++
			results[at[k]] = batchResult{Status: http.StatusOK, Result: out}
		}
		s.logger.Info("applied batch", "operations", len(req.Operations), "accepted", accepted, "proposed", len(cmds),
			"principal", who.String())
	}
	s.setLeaderHeader(w)
	writeBatchResults(w, results)
}

// writeBatchResults writes {"results": [...]}, each result with the
// hand-written encoders where they apply (fastjson.go).
func writeBatchResults(w http.ResponseWriter, results []batchResult) {
	bp := jsonBufs.Get().(*[]byte) // fastjson.go
	defer putJSONBuf(bp)
	b := append((*bp)[:0], `{"results":[`...)
	for i, r := range results {
		if i > 0 {
			b = append(b, ',')
		}
		if i == 1 {
			// Results are mostly alike: make room for the rest at once.
			b = slices.Grow(b, len(b)*(len(results)-1))
		}
		b = append(b, `{"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
		var err error
		if r.Result != nil {
			b = append(b, `,"result":`...)
			if b, err = appendAny(b, r.Result); err != nil {
				writeError(w, CodeInternal, "encode result: "+err.Error())
				return
			}
		}
		if r.Error != nil {
			e, _ := json.Marshal(r.Error)
			b = append(b, `,"error":`...)
			b = append(b, e...)
		}
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	*bp = b
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// prepareBatchOp checks one operation of a batch the way its own route
// would, and builds its command.
func prepareBatchOp(o *BatchOperation, now time.Time, who Principal) (prepared, *ErrorDetail) {
	bad := func(err error) (prepared, *ErrorDetail) {
		return prepared{}, &ErrorDetail{Code: string(fsm.CodeInvalidArgument), Message: err.Error()}
	}
	op, ok := writeOpsByName[o.Op]
	if !ok {
		return bad(badField("op", "%q is not a write; want one of %s", o.Op, strings.Join(writeOpNames(), ", ")))
	}
	if need := requiredRoles[op.route()]; who.Role < need {
		return prepared{}, &ErrorDetail{Code: CodeForbidden, Message: op.opName() + " needs the " + need.String() + " role; " + who.Name + " has " + who.Role.String()}
	}
	in := opInput{
		authority: param{"authority", o.Authority},
		session:   param{"session", o.Session},
		bundle:    param{"bundle", o.Bundle},
		requestID: o.RequestID,
	}
	for _, x := range []struct {
		p    param
		flag int
	}{{in.authority, takesAuthority}, {in.session, takesSession}, {in.bundle, takesBundle}} {
		takes := op.params()&x.flag != 0
		switch {
		case takes && x.p.value == "":
			return bad(badField(x.p.field, "is required by %s", op.opName()))
		case !takes && x.p.value != "":
			return bad(badField(x.p.field, "%s takes no %s", op.opName(), x.p.field))
		}
	}
	body := []byte(o.Request)
	if !op.takesBody() && len(body) > 0 {
		return bad(badField("request", "%s takes no request body (its request_id goes on the operation)", op.opName()))
	}
	if op.takesBody() && len(body) == 0 {
		body = []byte("{}")
	}
	p, err := op.prepare(body, in, now)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) && fe.field == "body" {
			err = badField("request", "%s", fe.msg)
		}
		return bad(err)
	}
	if o.RequestID != "" && op.takesBody() {
		if p.cmd.RequestID != "" && p.cmd.RequestID != o.RequestID {
			return bad(badField("request_id", "is given on the operation and, differently, in its request"))
		}
		p.cmd.RequestID = o.RequestID
	}
	if e := checkCommand(p.cmd); e != nil {
		return prepared{}, &ErrorDetail{Code: string(e.Code), Message: e.Message}
	}
	return p, nil
}

func writeOpNames() []string {
	var out []string
	for _, o := range writeOps {
		out = append(out, o.opName())
	}
	sort.Strings(out)
	return out
}

// outcomeOf is what one proposed command answers: its rendered result, or
// the error its route answers with (the status follows from the code).
func outcomeOf(p prepared, res fsm.Result, err error) (any, *ErrorDetail) {
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		return nil, &ErrorDetail{Code: CodeUnavailable, Message: "leadership changed before the command was appended (it was not applied); retry"}
	case errors.Is(err, cluster.ErrUpgradeInProgress):
		return nil, &ErrorDetail{Code: CodeUpgradeInProgress, Message: err.Error()}
	case errors.Is(err, cluster.ErrHalted) && !errors.Is(err, cluster.ErrUnknownOutcome):
		return nil, &ErrorDetail{Code: CodeReplicaHalted, Message: err.Error()}
	case errors.Is(err, cluster.ErrUnknownOutcome):
		return nil, &ErrorDetail{Code: CodeUnknownOutcome, Message: err.Error() + "; retry with the same request_id to learn the outcome"}
	case err != nil:
		return nil, &ErrorDetail{Code: CodeUnavailable, Message: err.Error()}
	case res.Err != nil:
		return nil, &ErrorDetail{Code: string(res.Err.Code), Message: res.Err.Message}
	}
	return p.render(res), nil
}

// Batch sends a batch. Every operation is given a request id when it has
// none (on the operation or in its request), so the client may resend the
// whole batch after an unknown outcome and each operation is applied at
// most once.
func (c *Client) Batch(ctx context.Context, req BatchRequest) (*BatchResponse, error) {
	ops := make([]BatchOperation, len(req.Operations))
	for i, o := range req.Operations {
		if o.RequestID == "" && !requestHasID(o.Request) {
			o.RequestID = NewRequestID()
		}
		ops[i] = o
	}
	var out BatchResponse
	return &out, c.call(ctx, http.MethodPost, "/v1/batch", BatchRequest{Operations: ops}, &out)
}

func requestHasID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	var v struct {
		RequestID string `json:"request_id"`
	}
	return json.Unmarshal(raw, &v) == nil && v.RequestID != ""
}
