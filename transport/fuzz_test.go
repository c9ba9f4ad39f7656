package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// Fuzz targets for everything the API decodes from a client.
//
// FuzzRequestDecoders runs each request body type through decodeStrict and
// the conversion the route applies, then the FSM's input checks; whatever
// passes must encode to a log entry that decodes back to the same command.
// FuzzHandler sends arbitrary requests to the real handler of a real
// one-node cluster. FuzzParseTokens (below) covers the token file. None may
// panic.

// requestDecoders are the routes' decoders: each decodes body (and path,
// for the routes that take an id from it) into a command, or fails.
var requestDecoders = []struct {
	name   string
	decode func(body []byte, path string) (*fsm.Command, error)
}{
	{"register_bundle", func(body []byte, _ string) (*fsm.Command, error) {
		var req RegisterBundleRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		fp, err := fromFootprintJSON("session_footprint", req.SessionFootprint)
		if err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.RegisterBundle{Bundle: fsm.Bundle{
			ID: req.BundleID, ProtocolIDs: req.ProtocolIDs, Exports: req.Exports, Imports: req.Imports, Footprint: fp}}}, nil
	}},
	{"link", func(body []byte, _ string) (*fsm.Command, error) {
		var req LinkRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.LinkBundles{Left: req.Left, Right: req.Right, LinkedID: req.LinkedID}}, nil
	}},
	{"footprint_add", func(body []byte, path string) (*fsm.Command, error) {
		var req FootprintAddRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		auth, err := parseAuthority("authority", path)
		if err != nil {
			return nil, err
		}
		sess, err := parseSession("session_id", req.SessionID)
		if err != nil {
			return nil, err
		}
		class := fsm.Native
		if req.Class != "" {
			var ok bool
			if class, ok = fsm.ParseClass(req.Class); !ok {
				return nil, badField("class", "bad")
			}
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.ExtendFootprint{Authority: auth, Session: sess, Class: class}}, nil
	}},
	{"footprint_remove", func(body []byte, path string) (*fsm.Command, error) {
		a, s, _ := strings.Cut(path, "/")
		auth, err := parseAuthority("authority", a)
		if err != nil {
			return nil, err
		}
		sess, err := parseSession("session", s)
		if err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: string(body), Op: &fsm.RemoveFootprint{Authority: auth, Session: sess}}, nil
	}},
	{"delegate", func(body []byte, _ string) (*fsm.Command, error) {
		var req DelegationRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		d, err := fromDelegationRequest("", &req, 1)
		if err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.Delegate{Delegation: d}}, nil
	}},
	{"open_session", func(body []byte, _ string) (*fsm.Command, error) {
		var req OpenSessionRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		sess, err := parseSession("session_id", req.SessionID)
		if err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.OpenSession{Session: sess, OwnerLabel: req.OwnerLabel, BundleID: req.BundleID}}, nil
	}},
	{"handoff", func(body []byte, path string) (*fsm.Command, error) {
		var req HandoffRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		sess, err := parseSession("id", path)
		if err != nil {
			return nil, err
		}
		tr, err := fromDelegationRequest("transfer.", &req.Transfer, 1)
		if err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.Handoff{Session: sess, OwnerLabel: req.OwnerLabel,
			Generation: req.Generation, NextOwnerLabel: req.NextOwnerLabel, Transfer: tr}}, nil
	}},
	{"seed_membership", func(body []byte, path string) (*fsm.Command, error) {
		var req MembershipRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.SeedMembership{BundleID: path, Members: req.Members}}, nil
	}},
	{"execute_upgrade", func(body []byte, path string) (*fsm.Command, error) {
		var req ExecuteUpgradeRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		u, err := fromUpgradeRequestJSON("runtime_upgrade_request", &req.UpgradeRequestJSON)
		if err != nil {
			return nil, err
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.ExecuteUpgrade{BundleID: path, Request: *u}}, nil
	}},
	{"capabilities", func(body []byte, _ string) (*fsm.Command, error) {
		var req CapabilitiesJSON
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		if req.Reconfiguration == nil {
			return nil, badField("reconfiguration", "required")
		}
		return &fsm.Command{RequestID: req.RequestID, Op: &fsm.SetCapabilities{Reconfiguration: *req.Reconfiguration}}, nil
	}},
	{"join", func(body []byte, _ string) (*fsm.Command, error) {
		var req JoinRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		if err := checkNodeID("id", req.ID); err != nil {
			return nil, err
		}
		return nil, checkRaftAddr("raft_addr", req.RaftAddr)
	}},
	{"node_id", func(body []byte, _ string) (*fsm.Command, error) {
		var req NodeIDRequest
		if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
			return nil, err
		}
		return nil, checkNodeID("id", req.ID)
	}},
	{"fact_query", func(_ []byte, path string) (*fsm.Command, error) {
		r := &http.Request{URL: &url.URL{RawQuery: path}}
		_, _, err := factQuery(r)
		return nil, err
	}},
	{"error_body", func(body []byte, _ string) (*fsm.Command, error) {
		// What the client decodes from nodes.
		resp := &http.Response{StatusCode: 400, Status: "400 Bad Request", Body: nopCloser{bytes.NewReader(body)}}
		return nil, decodeError(resp)
	}},
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func FuzzRequestDecoders(f *testing.F) {
	a, s := "authority-11111111-1111-1111-1111-111111111111", "session-22222222-2222-2222-2222-222222222222"
	seeds := []struct {
		kind       int
		body, path string
	}{
		{0, `{"bundle_id":"b","protocol_ids":["p"],"exports":["x"],"imports":["y"],"session_footprint":{"native_sessions":["` + s + `"]}}`, ""},
		{1, `{"left":"a","right":"b","linked_id":"c","request_id":"r"}`, ""},
		{2, `{"session_id":"` + s + `","class":"delegated_in"}`, a},
		{3, `rq`, a + "/" + s},
		{4, `{"session_id":"` + s + `","from_authority":"` + a + `","to_authority":"` + a + `","bundle_id":"device_migration","capability_scope":{"fragments":["bundle:x"]},"link_boundary":{"bundle_id":"b","protocol_ids":[],"fragment_keys":[],"capability_scope":"session"}}`, ""},
		{5, `{"session_id":"` + s + `","owner_label":"o"}`, ""},
		{6, `{"owner_label":"o","generation":1,"next_owner_label":"p","transfer":{"session_id":"` + s + `","from_authority":"` + a + `","to_authority":"` + a + `","bundle_id":"b"}}`, s},
		{7, `{"members":["a","b"]}`, "guardian_handoff"},
		{8, `{"upgrade_id":"u","plan":{"plan_id":"p","steps":[{"step_id":"s","next_members":["m"]}]},"compatibility":{"ownership_continuity_required":true,"pending_effect_treatment":"invalidate_blocked","canonical_publication_continuity":"reissue_canonical_truth","execution_constraint":"mixed_determinism_allowed"}}`, "b"},
		{9, `{"reconfiguration":false}`, ""},
		{10, `{"id":"n4","raft_addr":"10.0.0.4:8201","voter":false,"cluster_id":"c","replace":true}`, ""},
		{11, `{"id":"n2"}`, ""},
		{12, "", "after=3&limit=10"},
		{13, `{"error":{"code":"x","message":"y"}}`, ""},
	}
	for _, sd := range seeds {
		f.Add(uint8(sd.kind), []byte(sd.body), sd.path)
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte, path string) {
		d := requestDecoders[int(kind)%len(requestDecoders)]
		cmd, err := d.decode(body, path)
		if err != nil || cmd == nil {
			return
		}
		if e := fsm.CheckRequestID(cmd.RequestID); e != nil {
			return
		}
		if e := fsm.Check(cmd.Op); e != nil {
			return
		}
		// Accepted input becomes a log entry every replica can read back.
		decoded, derr := fsm.DecodeEntry(fsm.EncodeEntry(*cmd))
		if derr != nil || len(decoded) != 1 || decoded[0].Err != nil {
			t.Fatalf("%s: checked command does not round-trip: %v %+v", d.name, derr, decoded)
		}
		if got := decoded[0].Command; got.RequestID != cmd.RequestID || got.Op.Type() != cmd.Op.Type() {
			t.Fatalf("%s: round trip changed the command: %+v -> %+v", d.name, cmd, got)
		}
	})
}

// fuzzRoutes are the routes FuzzHandler may hit: every route but those
// that change membership (a random join would take the quorum away), the
// endless fact stream and the backup stream.
var fuzzRoutes = []struct{ method, prefix string }{
	{"POST", "/v1/bundles"}, {"GET", "/v1/bundles"}, {"POST", "/v1/bundles/link"}, {"GET", "/v1/bundles/"},
	{"POST", "/v1/footprints/"}, {"DELETE", "/v1/footprints/"}, {"GET", "/v1/footprints/"},
	{"POST", "/v1/delegations"}, {"POST", "/v1/sessions"}, {"GET", "/v1/sessions/"}, {"POST", "/v1/sessions/"},
	{"GET", "/v1/coherence"}, {"PUT", "/v1/upgrades/"}, {"GET", "/v1/upgrades/"}, {"POST", "/v1/upgrades/"},
	{"GET", "/v1/facts"}, {"GET", "/v1/capabilities"}, {"PUT", "/v1/capabilities"},
	{"GET", "/v1/cluster/status"}, {"GET", "/v1/cluster/digest"}, {"POST", "/v1/cluster/restore"},
	{"GET", "/v1/internal/node"}, {"GET", "/readyz"}, {"GET", "/healthz"},
}

func FuzzHandler(f *testing.F) {
	a, s := "authority-11111111-1111-1111-1111-111111111111", "session-22222222-2222-2222-2222-222222222222"
	f.Add(uint8(0), "", []byte(`{"bundle_id":"fz","protocol_ids":["p"],"exports":["x"],"imports":["y"]}`))
	f.Add(uint8(4), a+"/sessions", []byte(`{"session_id":"`+s+`"}`))
	f.Add(uint8(5), a+"/sessions/"+s+"?request_id=r1", []byte(nil))
	f.Add(uint8(7), "", []byte(`{"session_id":"`+s+`","from_authority":"`+a+`","to_authority":"authority-33333333-3333-3333-3333-333333333333","bundle_id":"device_migration"}`))
	f.Add(uint8(8), "", []byte(`{"session_id":"`+s+`","owner_label":"o"}`))
	f.Add(uint8(10), s+"/handoff", []byte(`{"owner_label":"o","generation":1,"next_owner_label":"p","transfer":{}}`))
	f.Add(uint8(12), "guardian_handoff/membership", []byte(`{"members":["a"]}`))
	f.Add(uint8(14), "guardian_handoff/execute", []byte(`{}`))
	f.Add(uint8(15), "?after=1&limit=2&consistency=stale", []byte(nil))
	f.Add(uint8(17), "", []byte(`{"reconfiguration":true}`))
	f.Add(uint8(20), "", []byte("RCNF not a snapshot"))

	mux, err := ListenMux(MuxConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		f.Fatal(err)
	}
	node, err := cluster.Open(cluster.Config{ID: "fz", DataDir: f.TempDir(), AdvertiseRaft: mux.Addr().String(), StreamLayer: mux.RaftLayer(),
		Bootstrap: true, Logger: hclog.NewNullLogger(), HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLease: 100 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		_ = node.Shutdown(context.Background())
		mux.Close()
	})
	api := NewServer(ServerConfig{Node: node, Mux: mux, AdvertiseHTTP: "127.0.0.1:1", RequestTimeout: 3 * time.Second, LeaderWait: time.Second})
	h := api.Handler()
	deadline := time.Now().Add(20 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			f.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}

	f.Fuzz(func(t *testing.T, route uint8, rest string, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		if len(rest) > 512 || len(body) > 64<<10 {
			return
		}
		target := rt.prefix + rest
		u, err := url.ParseRequestURI(target)
		if err != nil || strings.HasPrefix(u.Path, "/v1/cluster/") && u.Path != rt.prefix || strings.HasPrefix(u.Path, "/v1/facts/") {
			return // only the route chosen; never membership changes or streams
		}
		req, err := http.NewRequest(rt.method, "http://x"+target, bytes.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		if res.StatusCode == http.StatusOK || res.StatusCode == http.StatusMovedPermanently || res.StatusCode == http.StatusTemporaryRedirect {
			return
		}
		var eb ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
			t.Fatalf("%s %s: status %d without a typed error body: %q", rt.method, target, res.StatusCode, rec.Body.String())
		}
		if eb.Error.Code == CodeInternal {
			t.Fatalf("%s %s: internal error: %s", rt.method, target, eb.Error.Message)
		}
	})
}

func FuzzParseTokens(f *testing.F) {
	f.Add([]byte(baseTokens))
	f.Add([]byte("\ufeff" + tokRead + "\tread\r\n#c\n" + tokAdmin + " admin # x\n"))
	f.Add([]byte(tokRead + " read\n" + tokRead + " write\n"))
	f.Add([]byte("short read\n"))
	f.Add([]byte(tokRead + " root\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := ParseTokens(bytes.NewReader(data))
		if err != nil {
			if ts != nil {
				t.Fatal("a token set and an error")
			}
			if te, ok := err.(*TokenFileError); ok && (te.Line < 1 || te.Line > bytes.Count(data, []byte("\n"))+1) {
				t.Fatalf("error names line %d of a %d-line file", te.Line, bytes.Count(data, []byte("\n"))+1)
			}
			return
		}
		// Every token line parsed is found with its role; nothing else is.
		lines := strings.Split(strings.TrimPrefix(string(data), "\ufeff"), "\n")
		found := 0
		for _, line := range lines {
			fields := strings.Fields(strings.TrimRight(line, "\r"))
			if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
				continue
			}
			p, ok := ts.Lookup(fields[0])
			if !ok || p.Role.String() != fields[1] {
				t.Fatalf("token of line %q: %v %v", line, p, ok)
			}
			found++
		}
		if found != ts.Len() {
			t.Fatalf("%d token lines, %d tokens", found, ts.Len())
		}
		if _, ok := ts.Lookup("x"); ok {
			t.Fatal("a one-byte token matched")
		}
	})
}
