package transport

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reconf/reconf/fsm"
)

// Bounded state over HTTP (fsm/retention.go): the retention policy, named
// consumers of the fact journal, and the switch of a cluster into bounded
// mode once every member can decode it.
//
//	GET    /v1/facts/retention              the policy, and what the journal and request-id table hold
//	PUT    /v1/facts/retention              change it (admin); omitted fields keep their value
//	GET    /v1/facts/consumers              every consumer, its cursor and lag
//	POST   /v1/facts/consumers/{name}/ack   {"through": SEQ}: register or advance (write)
//	DELETE /v1/facts/consumers/{name}       drop one (admin)

// CodeFactsTrimmed is fsm.CodeFactsTrimmed: 410, with first_seq.
const CodeFactsTrimmed = string(fsm.CodeFactsTrimmed)

func init() {
	requiredRoles["GET /v1/facts/retention"] = RoleRead
	requiredRoles["PUT /v1/facts/retention"] = RoleAdmin
	requiredRoles["GET /v1/facts/consumers"] = RoleRead
	requiredRoles["POST /v1/facts/consumers/{name}/ack"] = RoleWrite
	requiredRoles["DELETE /v1/facts/consumers/{name}"] = RoleAdmin
}

func (s *Server) factsRoutes() {
	m := s.mux
	m.HandleFunc("GET /v1/facts/retention", s.showRetention)
	m.HandleFunc("PUT /v1/facts/retention", s.boundedWrite(opRetentionSet))
	m.HandleFunc("GET /v1/facts/consumers", s.listConsumers)
	m.HandleFunc("POST /v1/facts/consumers/{name}/ack", s.boundedWrite(opConsumerAck))
	m.HandleFunc("DELETE /v1/facts/consumers/{name}", s.boundedWrite(opConsumerDrop))
}

// fsmErrorDetail is an FSM rejection as the API shows it: facts_trimmed
// carries first_seq as a field, not only in its message.
func fsmErrorDetail(e *fsm.Error) ErrorDetail {
	d := ErrorDetail{Code: string(e.Code), Message: e.Message}
	if first, ok := fsm.FactsTrimmedFirstSeq(e); ok {
		d.FirstSeq = first
	}
	return d
}

// RetentionJSON is GET and PUT /v1/facts/retention. On PUT every field is
// optional (an omitted one keeps its value) and the output fields must be
// left out. Durations are Go durations ("720h", "90s") or days ("30d");
// "0" is no age limit.
type RetentionJSON struct {
	MaxFacts             *uint64 `json:"max_facts,omitempty"`
	HardMaxFacts         *uint64 `json:"hard_max_facts,omitempty"`
	MaxAge               *string `json:"max_age,omitempty"`
	RequestIDTTL         *string `json:"request_id_ttl,omitempty"`
	RequestIDBudgetBytes *uint64 `json:"request_id_budget_bytes,omitempty"`
	RequestID            string  `json:"request_id,omitempty"`

	// Output only.
	Bounded                bool    `json:"bounded"` // false: a legacy state, no policy in force yet
	Retained               uint64  `json:"retained"`
	FirstSeq               uint64  `json:"first_seq"`
	LastSeq                uint64  `json:"last_seq"`
	FactsLost              uint64  `json:"facts_lost"`
	ClockMillis            uint64  `json:"clock_ms"`
	RequestIDs             int     `json:"request_ids"`
	RequestIDBytes         uint64  `json:"request_id_bytes"`
	RequestIDWindowSeconds float64 `json:"request_id_window_seconds"`
	RequestIDsEvictedEarly uint64  `json:"request_ids_evicted_early"`
	Index                  uint64  `json:"index,omitempty"`
}

// ConsumerJSON is one consumer of the fact journal.
type ConsumerJSON struct {
	Name   string `json:"name"`
	Cursor uint64 `json:"cursor"`
	Lag    uint64 `json:"lag"` // facts after its cursor
	// Behind: its cursor is below the oldest retained fact (it lost facts
	// to hard_max_facts); it must resume from first_seq, knowingly.
	Behind bool   `json:"behind,omitempty"`
	Index  uint64 `json:"index,omitempty"`
}

// ConsumersResponse is GET /v1/facts/consumers.
type ConsumersResponse struct {
	Consumers []ConsumerJSON `json:"consumers"`
	FirstSeq  uint64         `json:"first_seq"`
	LastSeq   uint64         `json:"last_seq"`
}

// AckRequest is POST /v1/facts/consumers/{name}/ack.
type AckRequest struct {
	Through   *uint64 `json:"through"`
	RequestID string  `json:"request_id,omitempty"`
}

// ParseRetentionDuration reads "30d", "720h", "90s" or "0".
func ParseRetentionDuration(field, v string) (uint64, error) {
	if v == "0" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 32)
		if err != nil {
			return 0, badField(field, "must be a duration such as 30d, 720h or 90s, not %q", v)
		}
		return n * 24 * 3600 * 1000, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, badField(field, "must be a duration such as 30d, 720h or 90s, not %q", v)
	}
	return uint64(d.Milliseconds()), nil
}

func formatMillis(ms uint64) string {
	if ms == 0 {
		return "0"
	}
	if ms%(24*3600*1000) == 0 {
		return strconv.FormatUint(ms/(24*3600*1000), 10) + "d"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func toRetentionJSON(p fsm.Retention, bounded bool) RetentionJSON {
	age, ttl := formatMillis(p.MaxAgeMillis), formatMillis(p.RequestIDTTLMillis)
	return RetentionJSON{MaxFacts: &p.MaxFacts, HardMaxFacts: &p.HardMaxFacts, MaxAge: &age, RequestIDTTL: &ttl,
		RequestIDBudgetBytes: &p.RequestIDBudgetBytes, Bounded: bounded}
}

func (s *Server) showRetention(w http.ResponseWriter, r *http.Request) {
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		return retentionStatus(st), nil
	})
}

func retentionStatus(st *fsm.State) RetentionJSON {
	p, on := st.Bounded()
	out := toRetentionJSON(p, on)
	out.FirstSeq, out.LastSeq = st.FirstFactSeq(), st.LastFactSeq()
	out.Retained = out.LastSeq + 1 - out.FirstSeq
	out.FactsLost, out.ClockMillis = st.FactsLost(), st.Clock()
	rq := st.Requests()
	out.RequestIDs, out.RequestIDBytes, out.RequestIDsEvictedEarly = rq.Entries, rq.Bytes, rq.EvictedEarly
	out.RequestIDWindowSeconds = float64(rq.WindowMillis) / 1000
	return out
}

func (s *Server) listConsumers(w http.ResponseWriter, r *http.Request) {
	s.read(w, r, func(st *fsm.State) (any, *fsm.Error) {
		out := ConsumersResponse{Consumers: []ConsumerJSON{}, FirstSeq: st.FirstFactSeq(), LastSeq: st.LastFactSeq()}
		for _, c := range st.Consumers() {
			out.Consumers = append(out.Consumers, ConsumerJSON{Name: c.Name, Cursor: c.Cursor, Lag: out.LastSeq - c.Cursor,
				Behind: c.Cursor+1 < out.FirstSeq})
		}
		return out, nil
	})
}

// ---- writes ----

// The bounded-state writes are described like every write (writeops.go),
// but are not batch operations: they are rare administrative steps.
var opRetentionSet = &op[RetentionJSON]{
	name: "retention_set", pattern: "PUT /v1/facts/retention",
	build: func(req *RetentionJSON, _ opInput, now time.Time) (fsm.Command, error) {
		if req.Bounded || req.Retained != 0 || req.FirstSeq != 0 || req.LastSeq != 0 || req.Index != 0 || req.RequestIDs != 0 {
			return fsm.Command{}, badField("body", "sets only max_facts, hard_max_facts, max_age, request_id_ttl and request_id_budget_bytes; the other fields are output")
		}
		op := &fsm.SetRetention{AtMillis: uint64(now.UnixMilli())}
		if req.MaxFacts != nil {
			op.Set |= fsm.RetainMaxFacts
			op.MaxFacts = *req.MaxFacts
		}
		if req.HardMaxFacts != nil {
			op.Set |= fsm.RetainHardMaxFacts
			op.HardMaxFacts = *req.HardMaxFacts
		}
		if req.MaxAge != nil {
			ms, err := ParseRetentionDuration("max_age", *req.MaxAge)
			if err != nil {
				return fsm.Command{}, err
			}
			op.Set |= fsm.RetainMaxAge
			op.MaxAgeMillis = ms
		}
		if req.RequestIDTTL != nil {
			ms, err := ParseRetentionDuration("request_id_ttl", *req.RequestIDTTL)
			if err != nil {
				return fsm.Command{}, err
			}
			op.Set |= fsm.RetainRequestIDTTL
			op.RequestIDTTLMillis = ms
		}
		if req.RequestIDBudgetBytes != nil {
			op.Set |= fsm.RetainRequestIDBudget
			op.RequestIDBudgetBytes = *req.RequestIDBudgetBytes
		}
		if op.Set == 0 {
			return fsm.Command{}, badField("body", "names no field to change")
		}
		return fsm.Command{RequestID: req.RequestID, Op: op}, nil
	},
	render: func(_ *RetentionJSON, res fsm.Result) any {
		out := toRetentionJSON(*res.Retention, true)
		out.Index = res.Index
		return out
	},
}

var opConsumerAck = &op[AckRequest]{
	name: "consumer_ack", pattern: "POST /v1/facts/consumers/{name}/ack",
	build: func(req *AckRequest, in opInput, now time.Time) (fsm.Command, error) {
		if err := fsm.CheckConsumerName(in.bundle.value); err != nil {
			return fsm.Command{}, badField("name", "%s", strings.TrimPrefix(err.Message, "name: "))
		}
		if req.Through == nil {
			return fsm.Command{}, badField("through", "is required: the newest fact seq the consumer has durably read")
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.AckConsumer{Name: in.bundle.value, Through: *req.Through, AtMillis: uint64(now.UnixMilli())}}, nil
	},
	render: func(_ *AckRequest, res fsm.Result) any {
		return ConsumerJSON{Name: res.Consumer.Name, Cursor: res.Consumer.Cursor, Index: res.Index}
	},
}

var opConsumerDrop = &op[struct{}]{
	name: "consumer_drop", pattern: "DELETE /v1/facts/consumers/{name}", noBody: true,
	build: func(_ *struct{}, in opInput, now time.Time) (fsm.Command, error) {
		if err := fsm.CheckConsumerName(in.bundle.value); err != nil {
			return fsm.Command{}, badField("name", "%s", strings.TrimPrefix(err.Message, "name: "))
		}
		return fsm.Command{RequestID: in.requestID, Op: &fsm.DropConsumer{Name: in.bundle.value, AtMillis: uint64(now.UnixMilli())}}, nil
	},
	render: func(_ *struct{}, res fsm.Result) any {
		return ConsumerJSON{Name: res.Consumer.Name, Cursor: res.Consumer.Cursor, Index: res.Index}
	},
}

// boundedWrite serves one of the writes above. The consumer name travels
// in opInput's bundle slot: these writes take no bundle.
func (s *Server) boundedWrite(o writeOp) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		in := opInput{bundle: param{"name", r.PathValue("name")}}
		if !o.takesBody() {
			in.requestID = r.URL.Query().Get("request_id")
		}
		p, err := o.prepare(body, in, s.cfg.Now())
		if err != nil {
			writeBadInput(w, err)
			return
		}
		s.write(w, r, body, p)
	}
}

// ---- switching bounded mode on ----

// boundedSwitch proposes the default retention policy, once, on a leader
// whose state is still in legacy mode and whose members all decode it: a
// new cluster is bounded from its first write, and an upgraded one from
// the first write after the last member is upgraded. The gate calls it
// before each write it lets through (gate.go).
type boundedSwitch struct {
	mu   sync.Mutex
	done bool // the state was seen in bounded mode
}

func (s *Server) switchBounded(ctx context.Context, v *gateView) {
	b := &s.gate.bounded
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	var on bool
	s.node.FSM().Read(func(st *fsm.State) { _, on = st.Bounded() })
	if on {
		b.done = true
		return
	}
	for _, m := range v.members {
		if ok, _ := m.support.supports(fsm.TypeSetRetention); !ok {
			return
		}
	}
	p := fsm.DefaultRetention
	res, err := s.node.Propose(ctx, fsm.Command{Op: &fsm.SetRetention{Set: fsm.RetainMaxFacts | fsm.RetainHardMaxFacts |
		fsm.RetainMaxAge | fsm.RetainRequestIDTTL | fsm.RetainRequestIDBudget, Retention: p, AtMillis: uint64(s.cfg.Now().UnixMilli())}})
	switch {
	case err != nil:
		s.logger.Warn("could not switch to bounded state yet", "error", err)
	case res.Err != nil:
		s.logger.Error("switching to bounded state was rejected", "error", res.Err.Message)
	default:
		b.done = true
		s.logger.Info("bounded state on: default retention policy in force", "index", res.Index,
			"max_facts", p.MaxFacts, "hard_max_facts", p.HardMaxFacts, "request_id_ttl", formatMillis(p.RequestIDTTLMillis))
	}
}

// ---- client ----

// Retention reads the retention policy and what the journal holds.
func (c *Client) Retention(ctx context.Context) (*RetentionJSON, error) {
	return readCall[RetentionJSON](ctx, c, "/v1/facts/retention")
}

// SetRetention changes the fields of the policy req sets.
func (c *Client) SetRetention(ctx context.Context, req RetentionJSON) (*RetentionJSON, error) {
	return writeCall[RetentionJSON](ctx, c, http.MethodPut, "/v1/facts/retention", &req.RequestID, req)
}

// Consumers lists the consumers of the fact journal.
func (c *Client) Consumers(ctx context.Context) (*ConsumersResponse, error) {
	return readCall[ConsumersResponse](ctx, c, "/v1/facts/consumers")
}

// Consumer returns the named consumer, or nil if it is not registered.
func (c *Client) Consumer(ctx context.Context, name string) (*ConsumerJSON, *ConsumersResponse, error) {
	all, err := c.Consumers(ctx)
	if err != nil {
		return nil, nil, err
	}
	for i := range all.Consumers {
		if all.Consumers[i].Name == name {
			return &all.Consumers[i], all, nil
		}
	}
	return nil, all, nil
}

// AckConsumer registers the consumer or advances its cursor to through.
func (c *Client) AckConsumer(ctx context.Context, name string, through uint64, requestID string) (*ConsumerJSON, error) {
	req := AckRequest{Through: &through, RequestID: requestID}
	return writeCall[ConsumerJSON](ctx, c, http.MethodPost, "/v1/facts/consumers/"+pathEscape(name)+"/ack", &req.RequestID, req)
}

// DropConsumer forgets the consumer.
func (c *Client) DropConsumer(ctx context.Context, name string) (*ConsumerJSON, error) {
	id := NewRequestID()
	var out ConsumerJSON
	return &out, c.call(ctx, http.MethodDelete, "/v1/facts/consumers/"+pathEscape(name)+"?request_id="+id, nil, &out)
}

func pathEscape(s string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
