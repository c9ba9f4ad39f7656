package fsm

// Codec tests: log entries (EncodeEntry, DecodeEntry, ApplyEntry), results,
// and state snapshots (Snapshot, Restore), including damaged input.

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// rcNormalize replaces every empty slice reachable from v (a pointer) with
// nil: the codec does not distinguish nil from empty.
func rcNormalize(v any) { rcNormalizeValue(reflect.ValueOf(v)) }

func rcNormalizeValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			rcNormalizeValue(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				rcNormalizeValue(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			if !v.IsNil() && v.CanSet() {
				v.Set(reflect.Zero(v.Type()))
			}
			return
		}
		for i := 0; i < v.Len(); i++ {
			rcNormalizeValue(v.Index(i))
		}
	}
}

func rcFullUpgradeRequest() *UpgradeRequest {
	return &UpgradeRequest{
		UpgradeID: "upgrade-full",
		Plan: Plan{PlanID: "plan-full", Steps: []PlanStep{
			{StepID: "s1", NextMembers: []string{"m1", "m2"}},
			{StepID: "s2", NextMembers: []string{"m2", "m3", "m4"}},
		}},
		Compatibility: Compatibility{OwnershipContinuityRequired: true, PendingEffectTreatment: InvalidateBlocked,
			CanonicalPublicationContinuity: ReissueCanonicalTruth, ExecutionConstraint: MixedDeterminismAllowed},
		CarriedPublicationIDs:     []string{"pub:a", "pub:b"},
		InvalidatedPublicationIDs: []string{"pub:c"},
		CarriedObligationIDs:      []string{"obl:a"},
		InvalidatedObligationIDs:  []string{"obl:b", "obl:c"},
	}
}

func rcFullDelegation() Delegation {
	ctx := rcCtx(9)
	scope := FragmentScope("bundle:device_migration", "protocol:p")
	return Delegation{
		Context: &ctx, Session: rcSess(1), From: rcAuth(1), To: rcAuth(2), BundleID: "device_migration",
		LinkBoundary: &LinkBoundary{BundleID: "device_migration", ProtocolIDs: []string{"p", "q"},
			FragmentKeys: []string{"bundle:device_migration", "protocol:p"}, Scope: scope},
		Scope:          &scope,
		UpgradeRequest: rcFullUpgradeRequest(),
		AtMillis:       1<<63 + 12345,
	}
}

// rcCodecCommands is every op type with optional fields set and unset,
// with and without request ids.
func rcCodecCommands() []struct {
	name string
	cmd  Command
} {
	s1, s2, s3 := rcSess(1), rcSess(2), rcSess(3)
	minimal := Delegation{Session: s1, From: rcAuth(1), To: rcAuth(2), BundleID: "b"}
	sessionScope := SessionScope()
	sessionBoundary := BoundaryForScope(SessionScope())
	return []struct {
		name string
		cmd  Command
	}{
		{"register/full", Command{RequestID: "req-register", Op: &RegisterBundle{Bundle: Bundle{ID: "bundle-full",
			ProtocolIDs: []string{"p2", "p1", "p2"}, Exports: []string{"e1", "e2"}, Imports: []string{"i1"},
			Footprint: Footprint{SchemaVersion: SchemaVersion, Native: []SessionID{s1}, DelegatedIn: []SessionID{s2}, DelegatedOut: []SessionID{s3}}}}}},
		{"register/minimal", Command{Op: &RegisterBundle{Bundle: Bundle{ID: "m"}}}},
		{"register/empty_slices", Command{Op: &RegisterBundle{Bundle: Bundle{ID: "m", ProtocolIDs: []string{}, Exports: []string{},
			Footprint: Footprint{Native: []SessionID{}}}}}},
		{"link", Command{RequestID: "req-link", Op: &LinkBundles{Left: "l", Right: "r", LinkedID: "x"}}},
		{"link/empty_strings", Command{Op: &LinkBundles{}}},
		{"extend/native", Command{Op: &ExtendFootprint{Authority: rcAuth(1), Session: s1, Class: Native}}},
		{"extend/delegated_out", Command{RequestID: "r", Op: &ExtendFootprint{Authority: rcAuth(255), Session: s3, Class: DelegatedOut}}},
		{"extend/invalid_class", Command{Op: &ExtendFootprint{Class: 0}}},
		{"remove", Command{Op: &RemoveFootprint{Authority: rcAuth(1), Session: s2}}},
		{"delegate/full", Command{RequestID: "req-delegate", Op: &Delegate{rcFullDelegation()}}},
		{"delegate/minimal", Command{Op: &Delegate{minimal}}},
		{"delegate/session_scope", Command{Op: &Delegate{Delegation{Session: s1, BundleID: "b", Scope: &sessionScope, LinkBoundary: &sessionBoundary}}}},
		{"delegate/empty_upgrade", Command{Op: &Delegate{Delegation{Session: s1, BundleID: "b", UpgradeRequest: &UpgradeRequest{}}}}},
		{"open/bundle", Command{RequestID: "req-open", Op: &OpenSession{Session: s1, OwnerLabel: "owner", BundleID: "b"}}},
		{"open/no_bundle", Command{Op: &OpenSession{Session: s2, OwnerLabel: "owner"}}},
		{"handoff/full", Command{RequestID: "req-handoff", Op: &Handoff{Session: s1, OwnerLabel: "a", Generation: 1<<64 - 1,
			NextOwnerLabel: "b", Transfer: rcFullDelegation()}}},
		{"handoff/minimal", Command{Op: &Handoff{Session: s1, OwnerLabel: "a", NextOwnerLabel: "b", Transfer: minimal}}},
		{"capabilities/on", Command{Op: &SetCapabilities{Reconfiguration: true}}},
		{"capabilities/off", Command{RequestID: "req-cap", Op: &SetCapabilities{Reconfiguration: false}}},
		{"seed/members", Command{Op: &SeedMembership{BundleID: "b", Members: []string{"z", "a", "z"}}}},
		{"seed/no_members", Command{Op: &SeedMembership{BundleID: "b"}}},
		{"seed/empty_members", Command{Op: &SeedMembership{BundleID: "b", Members: []string{}}}},
		{"execute/full", Command{RequestID: "req-exec", Op: &ExecuteUpgrade{BundleID: "b", Request: *rcFullUpgradeRequest()}}},
		{"execute/minimal", Command{Op: &ExecuteUpgrade{BundleID: "b"}}},
		{"unicode", Command{RequestID: "ключ-✓", Op: &OpenSession{Session: s3, OwnerLabel: "владелец ✓", BundleID: "捆绑"}}},
	}
}

func TestCodecEntryRoundTripEveryOp(t *testing.T) {
	cases := rcCodecCommands()
	seen := map[Type]bool{}
	var all []Command
	for _, tc := range cases {
		seen[tc.cmd.Op.Type()] = true
		all = append(all, tc.cmd)
		t.Run(tc.name, func(t *testing.T) {
			data := EncodeEntry(tc.cmd)
			// format, crc32c (4 bytes), count, then the first command's type
			// and version.
			if data[0] != EntryFormat || data[5] != 1 || data[6] != byte(tc.cmd.Op.Type()) || data[7] != CommandVersion {
				t.Fatalf("entry header % x", data[:8])
			}
			got, err := DecodeEntry(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Err != nil {
				t.Fatalf("decoded %+v", got)
			}
			want := tc.cmd
			rcNormalize(&want)
			dec := got[0].Command
			rcNormalize(&dec)
			if !reflect.DeepEqual(dec, want) {
				t.Fatalf("round trip\n got %#v\nwant %#v", dec.Op, want.Op)
			}
			// Encoding is deterministic and canonical.
			if again := EncodeEntry(got[0].Command); !bytes.Equal(again, data) {
				t.Fatal("re-encoding the decoded command gives other bytes")
			}
		})
	}
	for typ := TypeRegisterBundle; typ <= TypeExecuteUpgrade; typ++ {
		if !seen[typ] {
			t.Errorf("no round-trip case for %s", typ)
		}
	}

	t.Run("multiple_commands_per_entry", func(t *testing.T) {
		data := EncodeEntry(all...)
		got, err := DecodeEntry(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(all) {
			t.Fatalf("decoded %d commands, want %d", len(got), len(all))
		}
		for i := range all {
			want, dec := all[i], got[i].Command
			rcNormalize(&want)
			rcNormalize(&dec)
			if got[i].Err != nil || !reflect.DeepEqual(dec, want) {
				t.Fatalf("command %d (%s) differs", i, cases[i].name)
			}
		}
	})
}

func TestCodecApplyEntryAppliesEachCommandOnItsOwn(t *testing.T) {
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	cmds := []Command{
		{Op: &ExtendFootprint{Authority: a, Session: s, Class: Native}},
		{Op: &Delegate{rcDel(s, b, a)}}, // rejected: b does not own s
		{RequestID: "r1", Op: &Delegate{rcDel(s, a, b)}},
		{RequestID: "r1", Op: &Delegate{rcDel(s, a, b)}}, // deduplicated within the entry
	}
	st := New()
	res := st.ApplyEntry(5, EncodeEntry(cmds...))
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	if res[0].Err != nil || res[1].Err == nil || res[1].Err.Code != CodeSessionNotOwned || res[2].Err != nil || !res[3].Deduped {
		t.Fatalf("results %+v", res)
	}
	for _, r := range res {
		if r.Index != 5 {
			t.Fatalf("result index %d", r.Index)
		}
	}
	if st.AppliedIndex() != 5 || st.LastFactSeq() != 1 {
		t.Fatalf("applied %d facts %d", st.AppliedIndex(), st.LastFactSeq())
	}
	// Same as applying the commands one by one at the same index.
	one := New()
	for _, c := range cmds {
		one.Apply(5, c)
	}
	if one.Digest() != st.Digest() {
		t.Fatal("ApplyEntry differs from Apply of each command")
	}
}

// rcRawCommand frames one command by hand.
func rcRawCommand(typ, version uint8, reqID string, payload []byte) []byte {
	var e encoder
	e.u8(typ)
	e.u8(version)
	e.str(reqID)
	e.uvarint(uint64(len(payload)))
	return append(e.buf, payload...)
}

// rcEntry frames already-encoded commands into an entry.
func rcEntry(cmds ...[]byte) []byte {
	enc := make([]EncodedCommand, len(cmds))
	for i, c := range cmds {
		enc[i] = c
	}
	return JoinEntry(enc)
}

// rcEncodedCommand is the command framing of c, without the entry header.
func rcEncodedCommand(c Command) []byte { return EncodeCommand(c) }

func TestCodecUnknownCommandInTheMiddle(t *testing.T) {
	a, s := rcAuth(1), rcSess(1)
	first := Command{Op: &ExtendFootprint{Authority: a, Session: s, Class: Native}}
	last := Command{RequestID: "last", Op: &OpenSession{Session: s, OwnerLabel: "owner"}}
	newerVersion := rcEncodedCommand(Command{Op: &Delegate{rcDel(s, a, rcAuth(2))}})
	newerVersion[1] = CommandVersion + 1
	extendPayload := rcEncodedCommand(first)[4:]
	cases := []struct {
		name, msg string
		cmd       []byte
		prefix    bool
	}{
		{"unknown_type", "unknown command type 99 version 1: this node cannot decode it (upgrade every voter first)",
			rcRawCommand(99, CommandVersion, "", []byte("abc")), false},
		{"type_zero", "unknown command type 0 version 1: this node cannot decode it (upgrade every voter first)",
			rcRawCommand(0, CommandVersion, "rq", nil), false},
		{"newer_version", "unknown command type 5 version 2: this node cannot decode it (upgrade every voter first)",
			newerVersion, false},
		{"short_payload", "cannot decode extend_footprint command: ", rcRawCommand(uint8(TypeExtendFootprint), CommandVersion, "", []byte{1, 2}), true},
		{"trailing_payload", "cannot decode extend_footprint command: ",
			rcRawCommand(uint8(TypeExtendFootprint), CommandVersion, "", append(slices.Clone(extendPayload), 0)), true},
		{"bad_boolean", "cannot decode set_capabilities command: ", rcRawCommand(uint8(TypeSetCapabilities), CommandVersion, "", []byte{2}), true},
		{"bad_scope_kind", "cannot decode delegate command: ", func() []byte {
			scope := Scope{Kind: 9}
			d := rcDel(s, a, rcAuth(2))
			d.Scope = &scope
			return rcEncodedCommand(Command{Op: &Delegate{d}})
		}(), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			entry := rcEntry(rcEncodedCommand(first), tc.cmd, rcEncodedCommand(last))
			dec, err := DecodeEntry(entry)
			if err != nil {
				t.Fatalf("framing error for a well-framed entry: %v", err)
			}
			if len(dec) != 3 || dec[0].Err != nil || dec[2].Err != nil || dec[1].Err == nil || dec[1].Command.Op != nil {
				t.Fatalf("decoded %+v", dec)
			}
			st := New()
			res := st.ApplyEntry(3, entry)
			if len(res) != 3 || res[0].Err != nil || res[2].Err != nil {
				t.Fatalf("results %+v", res)
			}
			e := res[1].Err
			if e == nil || e.Code != CodeUnknownCommand || res[1].Index != 3 {
				t.Fatalf("middle result %+v", res[1])
			}
			if tc.prefix && !strings.HasPrefix(e.Message, tc.msg) || !tc.prefix && e.Message != tc.msg {
				t.Fatalf("message %q, want %q", e.Message, tc.msg)
			}
			// Exactly the other two commands were applied.
			want := New()
			want.ApplyEntry(3, EncodeEntry(first, last))
			if want.Digest() != st.Digest() {
				t.Fatal("the state differs from applying the two readable commands")
			}
		})
	}
}

func TestCodecMalformedEntries(t *testing.T) {
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	rich := EncodeEntry(
		Command{RequestID: "x", Op: &ExtendFootprint{Authority: a, Session: s, Class: Native}},
		Command{Op: &Delegate{rcFullDelegation()}},
		Command{RequestID: "y", Op: &Handoff{Session: s, OwnerLabel: "a", Generation: 3, NextOwnerLabel: "b", Transfer: rcDel(s, a, b)}},
		Command{Op: &ExecuteUpgrade{BundleID: "device_migration", Request: *rcFullUpgradeRequest()}},
		Command{Op: &SetCapabilities{}},
	)
	base := New()
	base.ApplyEntry(1, EncodeEntry(Command{Op: &ExtendFootprint{Authority: a, Session: s, Class: Native}}))

	check := func(t *testing.T, name string, data []byte) {
		t.Helper()
		dec, err := DecodeEntry(data)
		if err == nil || !errors.Is(err, ErrMalformedEntry) || dec != nil {
			t.Fatalf("%s: DecodeEntry = %d commands, %v", name, len(dec), err)
		}
		st := base.Clone()
		res := st.ApplyEntry(9, data)
		if len(res) != 1 || res[0].Err == nil || res[0].Err.Code != CodeUnknownCommand || res[0].Index != 9 ||
			!strings.HasPrefix(res[0].Err.Message, ErrMalformedEntry.Error()) {
			t.Fatalf("%s: ApplyEntry = %+v", name, res)
		}
		if st.AppliedIndex() != 9 {
			t.Fatalf("%s: applied index %d", name, st.AppliedIndex())
		}
		rcAssertUnchanged(t, base, st)
	}

	check(t, "empty", nil)
	check(t, "format_only", []byte{EntryFormat})
	check(t, "wrong_format", append([]byte{EntryFormat + 1}, rich[1:]...))
	check(t, "format_zero", append([]byte{0}, rich[1:]...))
	check(t, "zero_commands", []byte{EntryFormat, 0})
	check(t, "count_overflow", []byte{EntryFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	check(t, "count_exceeds_data", []byte{EntryFormat, 5, 1, 1, 0, 0})
	check(t, "trailing_byte", append(slices.Clone(rich), 0))
	check(t, "payload_length_beyond_end", rcEntry(append(rcRawCommand(3, 1, "", nil)[:3], 0x7f)))
	{
		var e encoder
		e.u8(EntryFormat)
		e.uvarint(MaxBatch + 1)
		e.buf = append(e.buf, bytes.Repeat([]byte{byte(TypeSetCapabilities), 1, 0, 1, 1}, MaxBatch+1)...)
		check(t, "more_than_max_batch", e.buf)
	}
	for i := 0; i < len(rich); i++ {
		check(t, fmt.Sprintf("truncated_at_%d", i), rich[:i])
	}
}

// TestCodecBitFlipsNeverPanic flips every bit of a rich entry; decoding and
// applying must never panic, and every outcome is an ordinary result.
func TestCodecBitFlipsNeverPanic(t *testing.T) {
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcNew(t)
	h.native(a, s)
	h.ok(&OpenSession{Session: s, OwnerLabel: "a", BundleID: "device_migration"})
	h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"m1", "m2"}})
	d := rcFullDelegation()
	d.Session, d.From, d.To = s, a, b
	entry := EncodeEntry(
		Command{RequestID: "x", Op: &RegisterBundle{Bundle: Bundle{ID: "n", ProtocolIDs: []string{"p"}, Footprint: Footprint{Native: []SessionID{s}}}}},
		Command{Op: &Delegate{d}},
		Command{RequestID: "y", Op: &Handoff{Session: s, OwnerLabel: "a", Generation: 1, NextOwnerLabel: "b", Transfer: rcDel(s, a, b)}},
		Command{Op: &ExecuteUpgrade{BundleID: "device_migration", Request: *rcFullUpgradeRequest()}},
		Command{Op: &LinkBundles{Left: "n", Right: "device_migration", LinkedID: "z"}},
	)
	valid := map[Code]bool{}
	for _, c := range Codes {
		valid[c] = true
	}
	for i := range entry {
		for bit := 0; bit < 8; bit++ {
			data := slices.Clone(entry)
			data[i] ^= 1 << bit
			_, _ = DecodeEntry(data)
			st := h.s.Clone()
			for _, r := range st.ApplyEntry(100, data) {
				if r.Err != nil && !valid[r.Err.Code] {
					t.Fatalf("byte %d bit %d: unknown code %q", i, bit, r.Err.Code)
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Results

func TestCodecResultRoundTrip(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	var results []Result
	add := func(r Result) { results = append(results, r) }
	add(h.ok(&RegisterBundle{Bundle: Bundle{ID: "x", ProtocolIDs: []string{"p"}, Footprint: Footprint{DelegatedIn: []SessionID{rcSess(7)}}}}))
	add(h.ok(&ExtendFootprint{Authority: a, Session: s, Class: Native}))
	add(h.ok(&SeedMembership{BundleID: rcEpochBundle, Members: []string{"member-a", "member-b"}}))
	add(h.ok(&OpenSession{Session: s, OwnerLabel: "o", BundleID: rcEpochBundle}))
	op := rcHandoff(s, "o", 1, "p", a, b)
	req := rcUpgradeRequest("u")
	op.Transfer.UpgradeRequest = &req
	add(h.ok(op))
	add(h.ok(&ExecuteUpgrade{BundleID: rcEpochBundle, Request: rcUpgradeRequest("u2")}))
	add(h.apply(&Delegate{rcDel(s, a, b)}))
	for i, r := range results {
		var e encoder
		e.result(&r)
		d := decoder{data: e.buf}
		got := d.result()
		d.end()
		if d.err != nil {
			t.Fatalf("result %d: %v", i, d.err)
		}
		want := r
		rcNormalize(&want)
		rcNormalize(got)
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("result %d\n got %+v\nwant %+v", i, *got, want)
		}
		for cut := 0; cut < len(e.buf); cut++ {
			d := decoder{data: e.buf[:cut]}
			d.result()
			d.end()
			if d.err == nil {
				t.Fatalf("result %d truncated at %d decodes", i, cut)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Snapshots

// rcSnapshotRoundTrip snapshots s, restores it and requires an equal state.
func rcSnapshotRoundTrip(t *testing.T, s *State) (*State, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Snapshot(&buf, 7); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	got, hdr, err := Restore(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if hdr.Index != s.AppliedIndex() || hdr.Term != 7 || got.AppliedIndex() != s.AppliedIndex() {
		t.Fatalf("header %+v, applied %d", hdr, got.AppliedIndex())
	}
	if got.Digest() != s.Digest() {
		t.Fatal("restored digest differs")
	}
	rcAssertUnchanged(t, s, got)
	if !reflect.DeepEqual(got.violating.Len(), s.violating.Len()) || got.holders.Len() != s.holders.Len() {
		t.Fatal("derived indexes not rebuilt")
	}
	// Snapshots are deterministic.
	var again bytes.Buffer
	if err := got.Snapshot(&again, 7); err != nil || !bytes.Equal(again.Bytes(), data) {
		t.Fatalf("re-snapshot differs (%v)", err)
	}
	return got, data
}

// rcRichState builds a state holding every kind of content, and the request
// ids it used, with the result each got.
func rcRichState(t *testing.T) (*rcHarness, map[string]Result) {
	h := rcNew(t)
	ids := map[string]Result{}
	rec := func(id string, op Op) Result {
		r := h.applyID(id, op)
		ids[id] = r
		return r
	}
	a, b, c, d := rcAuth(1), rcAuth(2), rcAuth(3), rcAuth(4)
	// Bundles: registered with a footprint, linked, seeded, upgraded.
	rec("reg", &RegisterBundle{Bundle: Bundle{ID: "left", ProtocolIDs: []string{"p.l", "p.l"}, Exports: []string{"x"}, Imports: []string{"y"},
		Footprint: Footprint{Native: []SessionID{rcSess(50)}, DelegatedOut: []SessionID{rcSess(51)}}}})
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "right", Exports: []string{"y"}, Imports: []string{"x"}, Footprint: Footprint{DelegatedIn: []SessionID{rcSess(52)}}}})
	rec("link", &LinkBundles{Left: "left", Right: "right", LinkedID: "both"})
	rec("seed", &SeedMembership{BundleID: "both", Members: []string{"member-a", "member-b"}})
	rec("exec", &ExecuteUpgrade{BundleID: "both", Request: rcUpgradeRequest("u1")})
	bad := rcUpgradeRequest("u-bad")
	bad.Plan.Steps = nil
	rec("exec-bad", &ExecuteUpgrade{BundleID: "both", Request: bad})
	h.ok(&SeedMembership{BundleID: "guardian_handoff", Members: []string{"g"}})
	// Footprints and delegations (facts), with and without explicit context.
	for i := byte(1); i <= 6; i++ {
		h.native(a, rcSess(i))
	}
	rec("deleg", &Delegate{rcDel(rcSess(1), a, b)})
	h.delegate(rcSess(1), b, c)
	full := rcFullDelegation()
	full.Session, full.From, full.To, full.LinkBoundary, full.Scope = rcSess(2), a, d, nil, nil
	full.UpgradeRequest = nil
	h.ok(&Delegate{full})
	rec("reject", &Delegate{rcDel(rcSess(99), a, b)})
	// Live sessions: opened with and without a bundle, handed off with an
	// upgrade.
	rec("open", &OpenSession{Session: rcSess(6), OwnerLabel: "owner-6", BundleID: rcEpochBundle})
	h.ok(&OpenSession{Session: rcSess(7), OwnerLabel: "owner-7"})
	h.ok(&SeedMembership{BundleID: rcEpochBundle, Members: []string{"member-a", "member-b"}})
	op := rcHandoff(rcSess(6), "owner-6", 1, "owner-6b", a, b)
	req := rcUpgradeRequest("u-live")
	op.Transfer.UpgradeRequest = &req
	rec("handoff", op)
	// An emptied footprint and incoherent sessions.
	h.native(d, rcSess(3))
	h.extend(c, rcSess(4), DelegatedOut)
	h.ok(&RemoveFootprint{Authority: a, Session: rcSess(5)})
	h.extend(rcAuth(9), rcSess(60), Native)
	h.ok(&RemoveFootprint{Authority: rcAuth(9), Session: rcSess(60)})
	rec("extend", &ExtendFootprint{Authority: d, Session: rcSess(8), Class: DelegatedIn})
	// Gate off at the end.
	rec("gate", &SetCapabilities{Reconfiguration: false})
	if len(h.s.Coherence()) == 0 || h.s.LastFactSeq() < 4 || h.s.Stats().LiveSessions != 2 {
		t.Fatalf("rich state is not rich: %+v", h.s.Stats())
	}
	for _, id := range []string{"reg", "link", "seed", "exec", "deleg", "open", "handoff", "extend", "gate"} {
		if ids[id].Err != nil {
			t.Fatalf("request %s rejected: %v", id, ids[id].Err)
		}
	}
	if ids["reject"].Err == nil || ids["exec-bad"].Err == nil {
		t.Fatal("expected rejections in the request table")
	}
	return h, ids
}

func TestCodecSnapshotRoundTrip(t *testing.T) {
	h, ids := rcRichState(t)
	got, _ := rcSnapshotRoundTrip(t, h.s)
	if !slices.Equal(got.Coherence(), h.s.Coherence()) || got.Reconfiguration() {
		t.Fatal("coherence or gate lost")
	}
	// Every remembered request id answers the same on the restored state.
	r2 := &rcHarness{t: t, s: got, idx: h.idx}
	for id, first := range ids {
		a, b := h.applyID(id, &SetCapabilities{Reconfiguration: true}), r2.applyID(id, &SetCapabilities{Reconfiguration: true})
		want := first
		want.Deduped = true
		rcNormalize(&want)
		rcNormalize(&a)
		rcNormalize(&b)
		if !reflect.DeepEqual(a, want) || !reflect.DeepEqual(b, want) {
			t.Fatalf("request %s: original %+v, restored %+v, want %+v", id, a, b, want)
		}
	}
	if h.s.Digest() != got.Digest() {
		t.Fatal("digests diverge after retries")
	}
	// Both go on identically: the rebuilt index judges delegations the same.
	a, b, c := rcAuth(1), rcAuth(2), rcAuth(3)
	more := []Op{
		&SetCapabilities{Reconfiguration: true},
		&Delegate{rcDel(rcSess(6), a, c)},                          // blocked by the incoherent sessions
		&RemoveFootprint{Authority: rcAuth(4), Session: rcSess(3)}, // repairs sess 3
		&RemoveFootprint{Authority: c, Session: rcSess(4)},         // repairs sess 4
		&Delegate{rcDel(rcSess(6), b, c)},
		&Delegate{rcDel(rcSess(1), c, a)},
		&OpenSession{Session: rcSess(7), OwnerLabel: "owner-x"},
		&ExecuteUpgrade{BundleID: "both", Request: rcUpgradeRequest("u2")},
	}
	for _, op := range more {
		x, y := h.apply(op), r2.apply(op)
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("%s: original %+v, restored %+v", op.Type(), x, y)
		}
		if h.s.Digest() != r2.s.Digest() {
			t.Fatalf("digests diverge after %s", op.Type())
		}
	}
	if h.s.LastFactSeq() == 0 || len(h.s.Coherence()) != 0 {
		t.Fatalf("scenario did not reach a coherent state: %q", h.s.Coherence())
	}
}

func TestCodecSnapshotOfInitialAndEmptyStates(t *testing.T) {
	rcSnapshotRoundTrip(t, New())
	rcSnapshotRoundTrip(t, newEmptyState())
}

func TestCodecRestoreRejectsDamage(t *testing.T) {
	h, _ := rcRichState(t)
	_, data := rcSnapshotRoundTrip(t, h.s)
	if _, _, err := Restore(bytes.NewReader(nil)); err == nil {
		t.Fatal("empty snapshot restored")
	}
	if _, _, err := Restore(bytes.NewReader(append(slices.Clone(data), 0))); err == nil {
		t.Fatal("snapshot with trailing byte restored")
	}
	t.Logf("snapshot of the rich state: %d bytes", len(data))
	// Every offset in the header, the first section and the end record;
	// a stride in between keeps the test fast.
	offsets := func() []int {
		var out []int
		for i := 0; i < len(data); i++ {
			if i < 512 || i >= len(data)-128 || i%7 == 0 {
				out = append(out, i)
			}
		}
		return out
	}()
	for _, cut := range offsets {
		if _, _, err := Restore(bytes.NewReader(data[:cut])); err == nil {
			t.Fatalf("snapshot truncated at %d of %d restored", cut, len(data))
		}
	}
	for _, i := range offsets {
		flipped := slices.Clone(data)
		flipped[i] ^= 1 << (i % 8)
		if _, _, err := Restore(bytes.NewReader(flipped)); err == nil {
			t.Fatalf("snapshot with byte %d flipped restored", i)
		}
	}
}

// TestCodecRestoreValidatesContent feeds Restore well-formed containers whose
// sections hold an invalid state.
func TestCodecRestoreValidatesContent(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(s *State)
	}{
		{"bad_fact_sequence", func(s *State) { s.facts = append(s.facts, Fact{Seq: 5}) }},
		{"non_canonical_bundle", func(s *State) {
			s.bundles.ReplaceOrInsert(bundleEntry{bundle: &Bundle{ID: "zz", Exports: []string{"b", "a"}, Footprint: newFootprint()}, upgrade: &UpgradeSnapshot{}})
		}},
		{"executions_beyond_epoch", func(s *State) {
			s.bundles.ReplaceOrInsert(bundleEntry{bundle: &Bundle{ID: "zz", Footprint: newFootprint()},
				upgrade: &UpgradeSnapshot{Epoch: 0, ActiveMembers: []string{"m"}, Executions: []Execution{{ArtifactID: "zz", UpgradeID: "u"}}}})
		}},
		{"live_generation_zero", func(s *State) { s.live.ReplaceOrInsert(&LiveSession{Session: rcSess(1), OwnerLabel: "o"}) }},
		{"footprint_of_unlisted_authority", func(s *State) {
			s.footprints.ReplaceOrInsert(footprintItem{auth: rcAuth(1), sess: rcSess(1), class: Native})
		}},
		{"footprint_invalid_class", func(s *State) {
			s.authorities.ReplaceOrInsert(rcAuth(1))
			s.footprints.ReplaceOrInsert(footprintItem{auth: rcAuth(1), sess: rcSess(1), class: 9})
		}},
		{"request_seq_ahead", func(s *State) {
			s.addRequest(newRequestEntry("r", s.requestSeq+1, encodeResult(&Result{})))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			tc.mutate(s)
			var buf bytes.Buffer
			if err := s.Snapshot(&buf, 1); err != nil {
				t.Fatal(err)
			}
			if _, _, err := Restore(&buf); err == nil || !errors.Is(err, ErrInvalidState) {
				t.Fatalf("restore = %v, want ErrInvalidState", err)
			}
		})
	}
}
