package transport

import (
	"bytes"
	"net/http"
	"time"

	"github.com/reconf/reconf/fsm"
)

// Every write of API v1 is described once here: how its input becomes a
// command, and how the command's result is rendered. Its own route
// (POST /v1/delegations, ...) and POST /v1/batch both use the same
// description, so one operation behaves the same whichever way it comes.

// opInput is the part of a write's input that its route takes from the URL
// (a batch operation gives the same things as fields). Each value remembers
// the name errors call it by.
type opInput struct {
	authority, session, bundle param
	requestID                  string // footprint_remove: from the query (batch: the operation's request_id)
}

type param struct{ field, value string }

// Which opInput parameters an operation takes.
const (
	takesAuthority = 1 << iota
	takesSession
	takesBundle
)

// prepared is one checked write: the command to propose and how to render
// its result.
type prepared struct {
	op     writeOp
	cmd    fsm.Command
	render func(fsm.Result) any
}

// writeOp is one kind of write.
type writeOp interface {
	opName() string  // its name in a batch
	route() string   // its own route pattern (also its key in requiredRoles)
	params() int     // the opInput parameters it takes
	takesBody() bool // false: the route takes no body (request_id in the query)
	prepare(body []byte, in opInput, now time.Time) (prepared, error)
}

// op is a writeOp whose request body decodes into a Req.
type op[Req any] struct {
	name, pattern string
	takes         int
	noBody        bool
	build         func(req *Req, in opInput, now time.Time) (fsm.Command, error)
	render        func(req *Req, res fsm.Result) any
}

func (o *op[Req]) opName() string  { return o.name }
func (o *op[Req]) route() string   { return o.pattern }
func (o *op[Req]) params() int     { return o.takes }
func (o *op[Req]) takesBody() bool { return !o.noBody }

func (o *op[Req]) prepare(body []byte, in opInput, now time.Time) (prepared, error) {
	req := new(Req)
	if o.noBody {
		if len(bytes.TrimSpace(body)) > 0 {
			// A body here would be silently ignored, a request_id in it too.
			return prepared{}, badField("body", "must be empty: this route takes its input from the path and query (request_id too)")
		}
	} else if !decodeFast(body, req) {
		*req = *new(Req) // the fast path may have set some fields
		if err := decodeStrict(bytes.NewReader(body), req); err != nil {
			return prepared{}, err
		}
	}
	cmd, err := o.build(req, in, now)
	if err != nil {
		return prepared{}, err
	}
	return prepared{op: o, cmd: cmd, render: func(res fsm.Result) any { return o.render(req, res) }}, nil
}

// checkCommand runs the input checks every replica would run anyway, so that
// malformed input is refused before it reaches the log.
func checkCommand(cmd fsm.Command) *fsm.Error {
	if e := fsm.CheckRequestID(cmd.RequestID); e != nil {
		return e
	}
	return fsm.Check(cmd.Op)
}

// writeOps lists every write of API v1.
var writeOps = []writeOp{
	opRegisterBundle, opLinkBundles, opFootprintAdd, opFootprintRemove, opDelegate,
	opSessionOpen, opHandoff, opUpgradeSeed, opUpgradeExecute, opCapabilitiesSet,
}

var writeOpsByName = func() map[string]writeOp {
	m := map[string]writeOp{}
	for _, o := range writeOps {
		m[o.opName()] = o
	}
	return m
}()

// writeRoute serves a write's own route.
func (s *Server) writeRoute(o writeOp) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		in := opInput{
			authority: param{"authority", r.PathValue("authority")},
			session:   param{"session", r.PathValue("session")},
			bundle:    param{"bundle", r.PathValue("bundle")},
		}
		if v := r.PathValue("id"); v != "" {
			in.session = param{"id", v}
		}
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

func renderIndex(_ *struct{}, res fsm.Result) any {
	return IndexResponse{Index: res.Index, Deduped: res.Deduped}
}

// ---- the operations ----

var opRegisterBundle = &op[RegisterBundleRequest]{
	name: "bundle_register", pattern: "POST /v1/bundles",
	build: func(req *RegisterBundleRequest, _ opInput, _ time.Time) (fsm.Command, error) {
		fp, err := fromFootprintJSON("session_footprint", req.SessionFootprint)
		if err != nil {
			return fsm.Command{}, err
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.RegisterBundle{Bundle: fsm.Bundle{
			ID: req.BundleID, ProtocolIDs: req.ProtocolIDs, Exports: req.Exports, Imports: req.Imports, Footprint: fp,
		}}}, nil
	},
	render: renderBundle[RegisterBundleRequest],
}

var opLinkBundles = &op[LinkRequest]{
	name: "bundle_link", pattern: "POST /v1/bundles/link",
	build: func(req *LinkRequest, _ opInput, _ time.Time) (fsm.Command, error) {
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.LinkBundles{Left: req.Left, Right: req.Right, LinkedID: req.LinkedID}}, nil
	},
	render: renderBundle[LinkRequest],
}

func renderBundle[Req any](_ *Req, res fsm.Result) any {
	return BundleResponse{Bundle: toBundleJSON(res.Bundle), Index: res.Index}
}

var opFootprintAdd = &op[FootprintAddRequest]{
	name: "footprint_add", pattern: "POST /v1/footprints/{authority}/sessions", takes: takesAuthority,
	build: func(req *FootprintAddRequest, in opInput, _ time.Time) (fsm.Command, error) {
		auth, err := parseAuthority(in.authority.field, in.authority.value)
		if err != nil {
			return fsm.Command{}, err
		}
		sess, err := parseSession("session_id", req.SessionID)
		if err != nil {
			return fsm.Command{}, err
		}
		class := fsm.Native
		if req.Class != "" {
			var ok bool
			if class, ok = fsm.ParseClass(req.Class); !ok {
				return fsm.Command{}, badField("class", "must be native, delegated_in or delegated_out, not %q", req.Class)
			}
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.ExtendFootprint{Authority: auth, Session: sess, Class: class}}, nil
	},
	render: func(_ *FootprintAddRequest, res fsm.Result) any { return renderIndex(nil, res) },
}

var opFootprintRemove = &op[struct{}]{
	name: "footprint_remove", pattern: "DELETE /v1/footprints/{authority}/sessions/{session}",
	takes: takesAuthority | takesSession, noBody: true,
	build: func(_ *struct{}, in opInput, _ time.Time) (fsm.Command, error) {
		auth, err := parseAuthority(in.authority.field, in.authority.value)
		if err != nil {
			return fsm.Command{}, err
		}
		sess, err := parseSession(in.session.field, in.session.value)
		if err != nil {
			return fsm.Command{}, err
		}
		return fsm.Command{RequestID: in.requestID, Op: &fsm.RemoveFootprint{Authority: auth, Session: sess}}, nil
	},
	render: renderIndex,
}

var opDelegate = &op[DelegationRequest]{
	name: "delegate", pattern: "POST /v1/delegations",
	build: func(req *DelegationRequest, _ opInput, now time.Time) (fsm.Command, error) {
		d, err := fromDelegationRequest("", req, uint64(now.UnixMilli()))
		if err != nil {
			return fsm.Command{}, err
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.Delegate{Delegation: d}}, nil
	},
	render: func(_ *DelegationRequest, res fsm.Result) any {
		return delegationAnswer{o: res.Outcome, index: res.Index, deduped: res.Deduped}
	},
}

var opSessionOpen = &op[OpenSessionRequest]{
	name: "session_open", pattern: "POST /v1/sessions",
	build: func(req *OpenSessionRequest, _ opInput, _ time.Time) (fsm.Command, error) {
		sess, err := parseSession("session_id", req.SessionID)
		if err != nil {
			return fsm.Command{}, err
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.OpenSession{Session: sess, OwnerLabel: req.OwnerLabel, BundleID: req.BundleID}}, nil
	},
	render: func(_ *OpenSessionRequest, res fsm.Result) any {
		out := toLiveSessionJSON(res.Session)
		out.Index = res.Index
		return out
	},
}

var opHandoff = &op[HandoffRequest]{
	name: "session_handoff", pattern: "POST /v1/sessions/{id}/handoff", takes: takesSession,
	build: func(req *HandoffRequest, in opInput, now time.Time) (fsm.Command, error) {
		sess, err := parseSession(in.session.field, in.session.value)
		if err != nil {
			return fsm.Command{}, err
		}
		if req.Transfer.RequestID != "" {
			return fsm.Command{}, badField("transfer.request_id", "goes at the top level of a handoff request")
		}
		t, err := fromDelegationRequest("transfer.", &req.Transfer, uint64(now.UnixMilli()))
		if err != nil {
			return fsm.Command{}, err
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.Handoff{
			Session: sess, OwnerLabel: req.OwnerLabel, Generation: req.Generation, NextOwnerLabel: req.NextOwnerLabel, Transfer: t,
		}}, nil
	},
	render: func(_ *HandoffRequest, res fsm.Result) any {
		o := res.Outcome
		return HandoffResponse{
			OwnershipReceipt: toOwnershipReceiptJSON(o.Witness.OwnershipReceipt),
			Receipt:          toReceiptJSON(&o.Receipt), Witness: toWitnessJSON(&o.Witness),
			Session: toLiveSessionJSON(res.Session), FactSeq: o.FactSeq, Index: res.Index, Deduped: res.Deduped,
		}
	},
}

var opUpgradeSeed = &op[MembershipRequest]{
	name: "upgrade_seed", pattern: "PUT /v1/upgrades/{bundle}/membership", takes: takesBundle,
	build: func(req *MembershipRequest, in opInput, _ time.Time) (fsm.Command, error) {
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.SeedMembership{BundleID: in.bundle.value, Members: req.Members}}, nil
	},
	render: func(_ *MembershipRequest, res fsm.Result) any {
		return UpgradeSnapshotResponse{Snapshot: toUpgradeSnapshotJSON(res.Upgrade), Index: res.Index}
	},
}

var opUpgradeExecute = &op[ExecuteUpgradeRequest]{
	name: "upgrade_execute", pattern: "POST /v1/upgrades/{bundle}/execute", takes: takesBundle,
	build: func(req *ExecuteUpgradeRequest, in opInput, _ time.Time) (fsm.Command, error) {
		u, err := fromUpgradeRequestJSON("runtime_upgrade_request", &req.UpgradeRequestJSON)
		if err != nil {
			return fsm.Command{}, err
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.ExecuteUpgrade{BundleID: in.bundle.value, Request: *u}}, nil
	},
	render: func(_ *ExecuteUpgradeRequest, res fsm.Result) any {
		return ExecuteUpgradeResponse{Execution: toExecutionJSON(res.Execution), Epoch: res.Upgrade.Epoch, ActiveMembers: nonNil(res.Upgrade.ActiveMembers), Index: res.Index}
	},
}

var opCapabilitiesSet = &op[CapabilitiesJSON]{
	name: "capabilities_set", pattern: "PUT /v1/capabilities",
	build: func(req *CapabilitiesJSON, _ opInput, _ time.Time) (fsm.Command, error) {
		if req.Reconfiguration == nil {
			return fsm.Command{}, badField("reconfiguration", "is required (true or false)")
		}
		if req.Index != 0 {
			return fsm.Command{}, badField("index", "is an output field")
		}
		return fsm.Command{RequestID: req.RequestID, Op: &fsm.SetCapabilities{Reconfiguration: *req.Reconfiguration}}, nil
	},
	render: func(req *CapabilitiesJSON, res fsm.Result) any {
		on := *req.Reconfiguration
		return CapabilitiesJSON{Reconfiguration: &on, Index: res.Index}
	},
}
