package fsm

// TestModel applies a long random mix of valid and invalid commands to the
// FSM and to the naive reference model in model_ref_test.go, and requires
// the same result (accept or reject, code, message, payload) for every
// command, and the same observable state at frequent checkpoints. Along the
// way it snapshots and restores the FSM and carries on with the restored
// state, keeps a twin clone that receives the same commands, and checks
// that frozen clones never change (copy-on-write).
//
// Reproduce a failure with the seed it prints:
//
//	go test ./fsm -run '^TestModel$' -model.seed=SEED [-model.n=N]
//
// The seed and count can also come from RECONF_MODEL_SEED and RECONF_MODEL_N.

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	modelSeedFlag = flag.Int64("model.seed", 0, "seed for TestModel (0: from RECONF_MODEL_SEED or the clock)")
	modelNFlag    = flag.Int("model.n", 0, "commands for TestModel (0: from RECONF_MODEL_N or the default)")
)

const modelDefaultN = 100_000

func modelParams(t *testing.T) (seed int64, n int) {
	seed = *modelSeedFlag
	if seed == 0 {
		if v := os.Getenv("RECONF_MODEL_SEED"); v != "" {
			s, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("RECONF_MODEL_SEED=%q: %v", v, err)
			}
			seed = s
		}
	}
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	n = *modelNFlag
	if n == 0 {
		if v := os.Getenv("RECONF_MODEL_N"); v != "" {
			x, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("RECONF_MODEL_N=%q: %v", v, err)
			}
			n = x
		}
	}
	if n == 0 {
		n = modelDefaultN
		if testing.Short() {
			n = 20_000
		}
	}
	return seed, n
}

// bogusOp is an operation no node knows: Apply must reject it, and an entry
// carrying it must still apply its other commands.
type bogusOp struct{ T Type }

func (b *bogusOp) Type() Type { return b.T }

// ---- canonical rendering, for comparison and failure messages ----

// canon renders a value deterministically, following pointers, treating nil
// and empty slices alike and printing ids in their text form.
func canon(v any) string {
	var b strings.Builder
	canonValue(&b, reflect.ValueOf(v))
	return b.String()
}

func canonValue(b *strings.Builder, v reflect.Value) {
	if !v.IsValid() {
		b.WriteString("nil")
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			b.WriteString("nil")
			return
		}
		b.WriteString("&")
		canonValue(b, v.Elem())
	case reflect.Interface:
		if v.IsNil() {
			b.WriteString("nil")
			return
		}
		b.WriteString(v.Elem().Type().String())
		canonValue(b, v.Elem())
	case reflect.Struct:
		t := v.Type()
		b.WriteString("{")
		for i := 0; i < v.NumField(); i++ {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(t.Field(i).Name)
			b.WriteString(":")
			canonValue(b, v.Field(i))
		}
		b.WriteString("}")
	case reflect.Slice:
		b.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				b.WriteString(",")
			}
			canonValue(b, v.Index(i))
		}
		b.WriteString("]")
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 && v.Len() == 16 {
			var u UUID
			for i := range u {
				u[i] = byte(v.Index(i).Uint())
			}
			b.WriteString(u.String())
			return
		}
		b.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				b.WriteString(",")
			}
			canonValue(b, v.Index(i))
		}
		b.WriteString("]")
	case reflect.String:
		str := v.String()
		for i := 0; i < len(str); i++ {
			if c := str[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
				b.WriteString(strconv.Quote(str))
				return
			}
		}
		b.WriteByte('"')
		b.WriteString(str)
		b.WriteByte('"')
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		b.WriteString("map[")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			canonValue(b, k)
			b.WriteString(":")
			canonValue(b, v.MapIndex(k))
		}
		b.WriteString("]")
	default:
		fmt.Fprintf(b, "%v", v)
	}
}

// short trims a rendering for failure messages.
func short(s string) string {
	if len(s) > 4000 {
		return s[:4000] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// ---- the universe and the generator ----

var (
	modelDefaultBundles = []string{"device_migration", "epoch_rotation_transfer", "guardian_handoff"}
	modelOwnBundles     = []string{"alpha", "beta", "gamma", "delta", `q"uote\b`, "r1", "r2", "r3"}
	modelLinkedIDs      = []string{"ab", "ba", "aa", "gg", "x", "y", "l1", "l2", "l3", "l4"}
	modelLabels         = []string{"alice", "bob", "carol"}
	modelMembers        = []string{"member-a", "member-b", "member-c", "member-d"}
	modelIfaces         = []string{"l.a", "l.b", "l.c", "device_migration.request"}
	modelProtocols      = []string{"p.one", "p.two", "aura.sync.epoch_rotation"}
	modelPubs           = []string{"pub:a", "pub:b"}
	modelObls           = []string{"obl:a", "obl:b"}
)

type modelGen struct {
	r        *rand.Rand
	m        *refModel // read only: biases choices towards interesting states
	auths    []AuthorityID
	sessions []SessionID
	contexts []ContextID
	seq      int

	bundleCache []string
	reqPct      int // percentage of commands that carry a request id
	reqIssued   []string
	reqCmds     map[string]genCmd

	// Bounded state: legacy keeps the generator off its commands (the
	// legacy request-id test); now is the leader clock it stamps with.
	legacy bool
	now    uint64
}

// stamp is a leader time: mostly a clock that moves 0-3s a command, now
// and then an older one (another leader's clock, behind).
func (g *modelGen) stamp() uint64 {
	g.now += g.r.Uint64N(3000)
	if g.chance(10) {
		return g.now - min(g.now, g.r.Uint64N(20_000))
	}
	return g.now
}

// boundedOp is a retention or consumer command, sized so that this test's
// few thousand facts get trimmed, held and lost.
func (g *modelGen) boundedOp() Op {
	names := []string{"c1", "c2", "c3"}
	last := g.m.lastSeq()
	switch g.r.IntN(10) {
	case 0, 1, 2:
		op := &SetRetention{Set: uint8(1 + g.r.IntN(retainAll)), AtMillis: g.stamp()}
		op.MaxFacts = pickOf(g.r, []uint64{0, 1, 10, 300, 700, 5000})
		op.HardMaxFacts = pickOf(g.r, []uint64{1, 600, 1500, 1500, 3000, 1 << 40, 1 << 40})
		op.MaxAgeMillis = pickOf(g.r, []uint64{0, 0, 30_000, 600_000})
		op.RequestIDTTLMillis = pickOf(g.r, []uint64{0, 1000, 20_000, 120_000, 600_000})
		op.RequestIDBudgetBytes = pickOf(g.r, []uint64{MinRequestIDBudget - 1, MinRequestIDBudget, MinRequestIDBudget * 2, 64 << 20})
		return op
	case 3, 4, 5:
		return &DropConsumer{Name: pickOf(g.r, append(names, "a/b")), AtMillis: g.stamp()}
	default:
		through := last - min(last, g.r.Uint64N(600))
		if g.chance(5) {
			through = last + 1
		}
		return &AckConsumer{Name: pickOf(g.r, names), Through: through, AtMillis: g.stamp()}
	}
}

type genCmd struct {
	cmd    Command
	unsafe bool // cannot travel through EncodeEntry (it would not decode)
	retry  bool // reuses an earlier request id
}

func newModelGen(r *rand.Rand, m *refModel) *modelGen {
	g := &modelGen{r: r, m: m, reqPct: 15, reqCmds: map[string]genCmd{}}
	fill := func() (u UUID) {
		for i := range u {
			u[i] = byte(r.UintN(256))
		}
		return u
	}
	for range 6 {
		g.auths = append(g.auths, AuthorityID(fill()))
	}
	for range 8 {
		g.sessions = append(g.sessions, SessionID(fill()))
	}
	for range 2 {
		g.contexts = append(g.contexts, ContextID(fill()))
	}
	return g
}

func (g *modelGen) chance(pct int) bool { return g.r.IntN(100) < pct }

func pickOf[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// subset draws up to max items with replacement, as a fresh slice.
func (g *modelGen) subset(xs []string, max int) []string {
	k := g.r.IntN(max + 1)
	if k == 0 {
		return nil
	}
	out := make([]string, k)
	for i := range out {
		out[i] = pickOf(g.r, xs)
	}
	return out
}

func (g *modelGen) auth() AuthorityID { return pickOf(g.r, g.auths) }
func (g *modelGen) sess() SessionID   { return pickOf(g.r, g.sessions) }

// existingBundles lists the registered bundles in id order. Bundles are
// never removed, so the cached list is stale exactly when the count moved.
func (g *modelGen) existingBundles() []string {
	if len(g.bundleCache) != len(g.m.bundles) {
		g.bundleCache = g.bundleCache[:0]
		for id := range g.m.bundles {
			g.bundleCache = append(g.bundleCache, id)
		}
		sort.Strings(g.bundleCache)
	}
	return g.bundleCache
}

// bundleID is mostly a registered bundle, sometimes any name we know of.
func (g *modelGen) bundleID() string {
	switch x := g.r.IntN(100); {
	case x < 45:
		return pickOf(g.r, g.existingBundles())
	case x < 80: // a few busy bundles: long upgrade histories, shared by clones
		return pickOf(g.r, modelDefaultBundles)
	case x < 91:
		return pickOf(g.r, modelOwnBundles)
	case x < 96:
		return pickOf(g.r, modelLinkedIDs)
	}
	return "nope"
}

// holders lists the authorities holding sess, active ones first.
func (g *modelGen) holders(sess SessionID) (active, out []AuthorityID) {
	for _, a := range g.auths {
		switch g.m.footprints[a][sess] {
		case Native, DelegatedIn:
			active = append(active, a)
		case DelegatedOut:
			out = append(out, a)
		}
	}
	return active, out
}

func (g *modelGen) heldSession() SessionID {
	var held []SessionID
	for _, s := range g.sessions {
		if a, o := g.holders(s); len(a)+len(o) > 0 {
			held = append(held, s)
		}
	}
	if len(held) == 0 || g.chance(25) {
		return g.sess()
	}
	return pickOf(g.r, held)
}

func (g *modelGen) fromFor(sess SessionID) AuthorityID {
	active, out := g.holders(sess)
	switch {
	case len(active) > 0 && g.chance(65):
		return pickOf(g.r, active)
	case len(out) > 0 && g.chance(40):
		return pickOf(g.r, out)
	}
	return g.auth()
}

func (g *modelGen) scopeOverride(bundleID string) *Scope {
	var s Scope
	switch g.r.IntN(5) {
	case 0:
		s = FragmentScope("bundle:" + bundleID)
	case 1:
		s = FragmentScope("bundle:wrong-bundle")
	case 2:
		s = SessionScope()
	case 3: // the same set, not in canonical form
		s = Scope{Kind: ScopeFragments, Fragments: []string{"bundle:" + bundleID, "bundle:" + bundleID}}
	default:
		s = Scope{Kind: ScopeFragments, Fragments: []string{"bundle:" + bundleID, "bundle:" + pickOf(g.r, modelOwnBundles)}}
	}
	return &s
}

func (g *modelGen) boundaryOverride(bundleID string) *LinkBoundary {
	var b LinkBoundary
	switch g.r.IntN(6) {
	case 0:
		b = BoundaryForBundleID(bundleID)
	case 1:
		b = BoundaryForBundleID(pickOf(g.r, modelOwnBundles))
	case 2:
		b = BoundaryForScope(SessionScope())
	case 3:
		b = LinkBoundary{BundleID: bundleID, ProtocolIDs: g.subset(modelProtocols, 2), Scope: SessionScope()}
	case 4:
		keys := []string{"bundle:" + bundleID, "protocol:p.one"}
		b = LinkBoundary{BundleID: bundleID, FragmentKeys: keys, Scope: Scope{Kind: ScopeFragments, Fragments: []string{"protocol:p.one", "bundle:" + bundleID}}}
	default:
		b = BoundaryForScope(FragmentScope("bundle:" + bundleID))
	}
	return &b
}

func (g *modelGen) upgradeRequest() *UpgradeRequest {
	g.seq++
	req := &UpgradeRequest{UpgradeID: fmt.Sprintf("up-%d", g.seq)}
	if g.chance(30) {
		req.Plan.PlanID = "plan-x"
	}
	steps := 1
	switch x := g.r.IntN(100); {
	case x < 5:
		steps = 0
	case x < 65:
		steps = 1
	case x < 90:
		steps = 2
	default:
		steps = 3
	}
	for i := range steps {
		st := PlanStep{StepID: fmt.Sprintf("step-%d", i)}
		if !g.chance(7) {
			st.NextMembers = g.subset(modelMembers, 3)
			if len(st.NextMembers) == 0 {
				st.NextMembers = []string{pickOf(g.r, modelMembers)}
			}
		}
		req.Plan.Steps = append(req.Plan.Steps, st)
	}
	c := &req.Compatibility
	c.OwnershipContinuityRequired = g.chance(50)
	c.PendingEffectTreatment = PreservePending
	if g.chance(15) {
		c.PendingEffectTreatment = InvalidateBlocked
	}
	c.CanonicalPublicationContinuity = ReissueCanonicalTruth
	if g.chance(60) {
		c.CanonicalPublicationContinuity = PreserveCanonicalTruth
	}
	c.ExecutionConstraint = ExecutionConstraint(1 + g.r.IntN(2))
	req.CarriedPublicationIDs = g.subset(modelPubs, 2)
	if g.chance(25) {
		req.InvalidatedPublicationIDs = g.subset(modelPubs, 2)
	}
	if g.chance(40) {
		req.CarriedObligationIDs = g.subset(modelObls, 2)
	}
	if g.chance(20) {
		req.InvalidatedObligationIDs = g.subset(modelObls, 2)
	}
	return req
}

func (g *modelGen) delegation(sess SessionID) Delegation {
	d := Delegation{Session: sess, From: g.fromFor(sess), To: g.auth(), BundleID: g.bundleID(), AtMillis: g.stamp()}
	if g.chance(20) {
		c := pickOf(g.r, g.contexts)
		d.Context = &c
	}
	if g.chance(14) {
		d.LinkBoundary = g.boundaryOverride(d.BundleID)
	}
	if g.chance(14) {
		d.Scope = g.scopeOverride(d.BundleID)
	}
	if g.chance(15) {
		d.UpgradeRequest = g.upgradeRequest()
	}
	return d
}

func (g *modelGen) liveSessions() []SessionID {
	var out []SessionID
	for _, s := range g.sessions {
		if g.m.live[s] != nil {
			out = append(out, s)
		}
	}
	return out
}

// violating lists the sessions the model currently finds incoherent.
func (g *modelGen) violating() []SessionID {
	var out []SessionID
	for _, s := range g.sessions {
		only := map[AuthorityID]map[SessionID]Class{}
		for a, fp := range g.m.footprints {
			if c, ok := fp[s]; ok {
				only[a] = map[SessionID]Class{s: c}
			}
		}
		if len(refCoherence(only)) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// op generates one operation; unsafe reports that it cannot be encoded into
// an entry and decoded back unchanged.
func (g *modelGen) op() (op Op, unsafe bool) {
	switch x := g.r.IntN(1000); {
	case x < 2:
		return nil, true
	case x < 5:
		return &bogusOp{T: pickOf(g.r, []Type{0, 14, 200})}, false
	case x < 25 && !g.legacy:
		return g.boundedOp(), false
	}
	switch x := g.r.IntN(100); {
	case x < 14:
		class := Native
		if g.chance(30) {
			class = pickOf(g.r, []Class{Native, DelegatedIn, DelegatedOut})
		}
		a, s := g.auth(), g.sess()
		if class == Native && g.chance(70) { // keep it coherent if we can
			var free []SessionID
			for _, cand := range g.sessions {
				if active, out := g.holders(cand); len(active)+len(out) == 0 {
					free = append(free, cand)
				}
			}
			if len(free) > 0 {
				s = pickOf(g.r, free)
			}
		}
		op = &ExtendFootprint{Authority: a, Session: s, Class: class}
	case x < 19:
		s := g.heldSession()
		a := g.auth()
		if active, out := g.holders(s); len(active)+len(out) > 0 && g.chance(75) {
			a = pickOf(g.r, append(active, out...))
		}
		op = &RemoveFootprint{Authority: a, Session: s}
	case x < 31: // repair: remove one holder of an incoherent session
		s, a := g.sess(), g.auth()
		if v := g.violating(); len(v) > 0 {
			s = pickOf(g.r, v)
			if active, out := g.holders(s); len(active)+len(out) > 0 {
				a = pickOf(g.r, append(active, out...))
			}
		}
		op = &RemoveFootprint{Authority: a, Session: s}
	case x < 51:
		op = &Delegate{Delegation: g.delegation(g.heldSession())}
	case x < 57:
		// The last two sessions are never opened: handoffs of them find no
		// live session.
		o := &OpenSession{Session: pickOf(g.r, g.sessions[:len(g.sessions)-2]), OwnerLabel: pickOf(g.r, modelLabels)}
		switch y := g.r.IntN(10); {
		case y < 4:
			o.BundleID = pickOf(g.r, g.existingBundles())
		case y < 5:
			o.BundleID = "nope"
		}
		op = o
	case x < 68:
		s := g.sess()
		if live := g.liveSessions(); len(live) > 0 && g.chance(85) {
			s = pickOf(g.r, live)
		}
		h := &Handoff{Session: s, OwnerLabel: pickOf(g.r, modelLabels), Generation: 1 + g.r.Uint64N(3), NextOwnerLabel: pickOf(g.r, modelLabels)}
		if cur := g.m.live[s]; cur != nil {
			if g.chance(85) {
				h.OwnerLabel = cur.owner
			}
			if g.chance(85) {
				h.Generation = cur.generation
			} else {
				h.Generation = cur.generation + pickOf(g.r, []uint64{1, 2}) - pickOf(g.r, []uint64{0, 1})
			}
		}
		h.Transfer = g.delegation(s)
		if g.chance(4) {
			h.Transfer.Session = g.sess()
		}
		op = h
	case x < 71:
		op = &SetCapabilities{Reconfiguration: g.chance(92)}
	case x < 76:
		b := Bundle{
			ID:          pickOf(g.r, append(append([]string{}, modelOwnBundles...), pickOf(g.r, modelDefaultBundles), pickOf(g.r, modelLinkedIDs))),
			ProtocolIDs: g.subset(modelProtocols, 3),
			Exports:     g.subset(modelIfaces, 3),
			Imports:     g.subset(modelIfaces, 2),
		}
		if g.chance(5) {
			g.seq++
			b.ID = fmt.Sprintf("r-%d", g.seq)
		}
		if len(b.Exports) > 0 && g.chance(60) { // imports it satisfies itself
			b.Imports = g.subset(b.Exports, 2)
		}
		if g.chance(50) {
			for range 1 + g.r.IntN(2) {
				s := g.sess()
				switch g.r.IntN(3) {
				case 0:
					b.Footprint.Native = append(b.Footprint.Native, s)
				case 1:
					b.Footprint.DelegatedIn = append(b.Footprint.DelegatedIn, s)
				default:
					b.Footprint.DelegatedOut = append(b.Footprint.DelegatedOut, s)
				}
			}
		}
		if g.chance(4) { // the same session in two classes: invalid
			s := g.sess()
			b.Footprint.Native = append(b.Footprint.Native, s)
			b.Footprint.DelegatedOut = append(b.Footprint.DelegatedOut, s)
		}
		op = &RegisterBundle{Bundle: b}
	case x < 82:
		left, right := g.bundleID(), g.bundleID()
		if g.chance(15) {
			right = left
		}
		linked := pickOf(g.r, modelLinkedIDs)
		switch y := g.r.IntN(100); {
		case y < 8:
			linked = g.bundleID()
		case y < 14:
			g.seq++
			linked = fmt.Sprintf("l-%d", g.seq)
		}
		if g.chance(4) {
			// Link the self-linkable bundle with the most protocols to
			// itself: protocol lists double until the result is too big
			// to register.
			best := ""
			for _, id := range g.existingBundles() {
				b := g.m.bundles[id]
				if len(b.footprint) == 0 && refCompatible(b, b) && (best == "" || len(b.protocols) > len(g.m.bundles[best].protocols)) {
					best = id
				}
			}
			if best != "" {
				g.seq++
				left, right, linked = best, best, fmt.Sprintf("dbl-%d", g.seq)
			}
		}
		op = &LinkBundles{Left: left, Right: right, LinkedID: linked}
	case x < 88:
		members := g.subset(modelMembers, 4)
		if len(members) == 0 && g.chance(70) {
			members = []string{pickOf(g.r, modelMembers)}
		}
		op = &SeedMembership{BundleID: g.bundleID(), Members: members}
	default:
		op = &ExecuteUpgrade{BundleID: g.bundleID(), Request: *g.upgradeRequest()}
	}
	if g.chance(8) {
		unsafe = g.corrupt(op)
	}
	return op, unsafe
}

var (
	modelBadStrings = []string{"", strings.Repeat("n", 257), "bad\x01name", "bad\x7fname", "\xff\xfe", "tab\tname",
		strings.Repeat("n", 256), `we"ird`, `back\slash`, "ünïcode"}
	modelEnumTypes = map[reflect.Type]bool{
		reflect.TypeFor[Class]():                          true,
		reflect.TypeFor[ScopeKind]():                      true,
		reflect.TypeFor[PendingEffectTreatment]():         true,
		reflect.TypeFor[CanonicalPublicationContinuity](): true,
		reflect.TypeFor[ExecutionConstraint]():            true,
	}
)

// corrupt changes one string, list or enum field of op to a bad (or
// unusual) value, found by walking the op. It reports whether the result
// can no longer travel through an entry.
func (g *modelGen) corrupt(op Op) (unsafe bool) {
	type target struct {
		v    reflect.Value
		kind int // 0 string, 1 string list, 2 enum
	}
	var targets []target
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				walk(v.Field(i))
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.String {
				targets = append(targets, target{v, 1})
			}
			if v.Type().Elem().Kind() != reflect.Array {
				for i := 0; i < v.Len(); i++ {
					walk(v.Index(i))
				}
			}
		case reflect.String:
			targets = append(targets, target{v, 0})
		case reflect.Uint8:
			if modelEnumTypes[v.Type()] {
				targets = append(targets, target{v, 2})
			}
		}
	}
	walk(reflect.ValueOf(op))
	if len(targets) == 0 {
		return false
	}
	tg := pickOf(g.r, targets)
	switch tg.kind {
	case 0:
		tg.v.SetString(pickOf(g.r, modelBadStrings))
	case 1:
		switch g.r.IntN(10) {
		case 0:
			big := make([]string, MaxListItems+1)
			for i := range big {
				big[i] = "z"
			}
			tg.v.Set(reflect.ValueOf(big).Convert(tg.v.Type()))
		case 1, 2:
			tg.v.Set(reflect.Zero(tg.v.Type()))
		default:
			l := make([]string, tg.v.Len(), tg.v.Len()+1)
			reflect.Copy(reflect.ValueOf(l), tg.v)
			l = append(l, pickOf(g.r, modelBadStrings))
			tg.v.Set(reflect.ValueOf(l).Convert(tg.v.Type()))
		}
	case 2:
		tg.v.SetUint(pickOf(g.r, []uint64{0, 3, 4, 200}))
		if tg.v.Type() == reflect.TypeFor[ScopeKind]() {
			return true
		}
	}
	return false
}

// command generates a command with a request id: mostly fresh, sometimes a
// retry of an earlier id (resending the same command or a different one),
// sometimes an invalid id.
func (g *modelGen) command() genCmd {
	op, unsafe := g.op()
	gc := genCmd{cmd: Command{Op: op}, unsafe: unsafe}
	switch x := g.r.IntN(100); {
	case x >= g.reqPct:
		return gc
	case x < 1:
		g.seq++
		gc.cmd.RequestID = pickOf(g.r, []string{
			strings.Repeat("R", MaxRequestIDBytes+1), "req\x01x", "\xffreq",
			fmt.Sprintf("%s%08d", strings.Repeat("R", MaxRequestIDBytes-8), g.seq), // exactly at the limit
		})
	case x < 1+g.reqPct/4 && len(g.reqIssued) > 0:
		var id string
		if g.chance(70) {
			recent := g.reqIssued[max(0, len(g.reqIssued)-300):]
			id = pickOf(g.r, recent)
		} else {
			id = pickOf(g.r, g.reqIssued)
		}
		if g.chance(50) {
			gc = g.reqCmds[id] // resend the same command
		}
		gc.cmd.RequestID = id
		gc.retry = true
		return gc
	default:
		g.seq++
		gc.cmd.RequestID = fmt.Sprintf("req-%d", g.seq)
	}
	if gc.cmd.RequestID != "" && CheckRequestID(gc.cmd.RequestID) == nil {
		if _, seen := g.reqCmds[gc.cmd.RequestID]; !seen {
			g.reqIssued = append(g.reqIssued, gc.cmd.RequestID)
			g.reqCmds[gc.cmd.RequestID] = gc
		}
	}
	return gc
}

// ---- the harness ----

type frozenClone struct {
	st      *State
	digest  [32]byte
	model   *refModel
	retire  int // step at which it is verified and dropped
	takenAt int
}

type modelHarness struct {
	t     *testing.T
	seed  int64
	n     int
	test  string
	r     *rand.Rand
	m     *refModel
	g     *modelGen
	st    *State
	twin  *State
	froze []frozenClone
	fork  *forkedClone

	idx    uint64
	term   uint64
	step   int
	recent []Command
	stats  map[string]int

	bundleCanon map[*refBundle]string
}

func (h *modelHarness) fail(format string, args ...any) {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d step=%d index=%d: ", h.seed, h.step, h.idx)
	fmt.Fprintf(&b, format, args...)
	b.WriteString("\nrecent commands (oldest first):")
	for _, c := range h.recent {
		b.WriteString("\n  ")
		b.WriteString(short(canon(c)))
	}
	fmt.Fprintf(&b, "\nreproduce: go test ./fsm -run '^%s$' -model.seed=%d -model.n=%d", h.test, h.seed, h.n)
	h.t.Fatal(b.String())
}

func (h *modelHarness) note(c Command) {
	if len(h.recent) == 12 {
		copy(h.recent, h.recent[1:])
		h.recent = h.recent[:11]
	}
	h.recent = append(h.recent, c)
	h.step++
}

func opName(op Op) string {
	if op == nil {
		return "nil"
	}
	if _, ok := op.(*bogusOp); ok {
		return "bogus"
	}
	return op.Type().String()
}

func (h *modelHarness) count(cmd Command, r Result) {
	outcome := "ok"
	if r.Err != nil {
		outcome = string(r.Err.Code)
	}
	if r.Deduped {
		h.stats["(answered from the request-id table)"]++
		return
	}
	h.stats[opName(cmd.Op)+" "+outcome]++
	if r.Err != nil && strings.Contains(r.Err.Message, "failed: protocol_ids: has ") {
		h.stats["(links refused: the linked bundle is too large to register)"]++
	}
}

// countCoherent notes whether a delegation or handoff meets a coherent state
// (otherwise it cannot succeed).
func (h *modelHarness) countCoherent(c Command) {
	switch c.Op.(type) {
	case *Delegate, *Handoff:
		if len(refCoherence(h.m.footprints)) == 0 {
			h.stats["(delegations and handoffs tried on a coherent state)"]++
		} else {
			h.stats["(delegations and handoffs tried on an incoherent state)"]++
		}
	}
}

func (h *modelHarness) countRetry(gc genCmd) {
	if gc.retry {
		if _, held := h.m.requests[gc.cmd.RequestID]; held {
			h.stats["(retries answered from the table)"]++
		} else {
			h.stats["(retries of an id not in the table: applied)"]++
		}
	}
}

func (h *modelHarness) compareResult(what string, cmd Command, got, want Result) {
	h.t.Helper()
	if g, w := canon(got), canon(want); g != w {
		h.fail("%s: result differs for command\n  %s\n fsm:   %s\n model: %s", what, short(canon(cmd)), short(g), short(w))
	}
}

// applyOne applies a single command directly with Apply.
func (h *modelHarness) applyOne(gc genCmd) {
	h.idx++
	if h.r.IntN(50) == 0 {
		h.idx += uint64(1 + h.r.IntN(3)) // entries that carry no command
	}
	h.note(gc.cmd)
	h.countRetry(gc)
	h.countCoherent(gc.cmd)
	want := h.m.apply(h.idx, gc.cmd)
	got := h.st.Apply(h.idx, gc.cmd)
	h.compareResult("Apply", gc.cmd, got, want)
	h.compareResult("Apply on twin clone", gc.cmd, h.twin.Apply(h.idx, gc.cmd), want)
	h.count(gc.cmd, want)
	h.compareBounded()
}

// compareBounded checks, after every command, the cheap summary of bounded
// state: trimming, losses and forgetting must happen at exactly the same
// command as in the model, not just agree at checkpoints.
func (h *modelHarness) compareBounded() {
	rq := h.st.Requests()
	got := []any{h.st.FirstFactSeq(), h.st.FactsLost(), h.st.Clock(), rq.Entries, rq.EvictedEarly}
	want := []any{h.m.factBase + 1, h.m.lost, h.m.clock, len(h.m.requests), h.m.evicted}
	if canon(got) != canon(want) {
		h.fail("bounded state (first seq, lost, clock, ids, evicted early) differs:\n fsm:   %v\n model: %v", got, want)
	}
	if h.m.factBase > 0 {
		h.stats["bounded: facts trimmed"]++
	}
	if h.m.lost > 0 {
		h.stats["bounded: facts lost by a consumer"]++
	}
	if h.m.evicted > 0 {
		h.stats["bounded: request ids evicted early"]++
	}
}

// applyBatch packs several commands into one entry and applies it with
// ApplyEntry; the model applies them one by one at the same index.
func (h *modelHarness) applyBatch(gcs []genCmd) {
	h.idx++
	cmds := make([]Command, len(gcs))
	for i, gc := range gcs {
		cmds[i] = gc.cmd
	}
	data := EncodeEntry(cmds...)
	got := h.st.ApplyEntry(h.idx, data)
	twin := h.twin.ApplyEntry(h.idx, data)
	if len(got) != len(cmds) || len(twin) != len(cmds) {
		h.fail("ApplyEntry returned %d results (twin %d) for %d commands", len(got), len(twin), len(cmds))
	}
	for i, c := range cmds {
		h.note(c)
		h.countRetry(gcs[i])
		h.countCoherent(c)
		var want Result
		if b, ok := c.Op.(*bogusOp); ok {
			// The decoder cannot read it: rejected on its own, request id
			// untouched, the rest of the entry still applies.
			if h.idx > h.m.applied {
				h.m.applied = h.idx
			}
			want = Result{Index: h.idx, Err: refErr(CodeUnknownCommand,
				"unknown command type %d version %d: this node cannot decode it (upgrade every voter first)", b.T, CommandVersion)}
		} else {
			want = h.m.apply(h.idx, c)
		}
		h.compareResult(fmt.Sprintf("ApplyEntry[%d of %d]", i, len(cmds)), c, got[i], want)
		h.compareResult(fmt.Sprintf("ApplyEntry on twin clone [%d of %d]", i, len(cmds)), c, twin[i], want)
		h.count(c, want)
	}
	h.stats["(entries)"]++
}

// compareState checks every observable part of st against the model. A
// light comparison skips bundles and upgrade snapshots and checks only the
// newest facts: the costly parts.
func (h *modelHarness) compareState(what string, st *State, m *refModel, light bool) {
	h.t.Helper()
	eq := func(part string, got, want any) {
		h.t.Helper()
		if g, w := canon(got), canon(want); g != w {
			h.fail("%s: %s differs\n fsm:   %s\n model: %s", what, part, short(g), short(w))
		}
	}
	eq("applied index", st.AppliedIndex(), m.applied)
	eq("capability gate", st.Reconfiguration(), m.gate)

	if !light {
		var ids []string
		for id := range m.bundles {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		got := st.Bundles()
		var gotIDs []string
		for _, b := range got {
			gotIDs = append(gotIDs, b.ID)
		}
		eq("bundle ids", gotIDs, ids)
		for i, id := range ids {
			// Model bundles never change once stored, so their rendering
			// is cached.
			want, ok := h.bundleCanon[m.bundles[id]]
			if !ok {
				want = canon(m.bundles[id].value())
				h.bundleCanon[m.bundles[id]] = want
			}
			if g := canon(got[i]); g != want {
				h.fail("%s: bundle %q differs\n fsm:   %s\n model: %s", what, id, short(g), short(want))
			}
		}
		for _, id := range append(ids, "nope") {
			gotSnap, gotErr := st.UpgradeSnapshot(id)
			var wantSnap *UpgradeSnapshot
			var wantErr *Error
			switch u := m.upgrades[id]; {
			case m.bundles[id] == nil:
				wantErr = refErr(CodeBundleNotFound, "runtime upgrade for bundle `%s` failed: bundle not found: %s", id, id)
			case len(u.active) == 0:
				wantErr = refInvalidUpgrade(id, "active membership must be seeded before exporting a runtime-upgrade snapshot")
			default:
				wantSnap = u.value()
			}
			eq("upgrade snapshot of "+id, []any{gotSnap, gotErr}, []any{wantSnap, wantErr})
		}
	}

	var auths []AuthorityID
	for a := range m.footprints {
		auths = append(auths, a)
	}
	sort.Slice(auths, func(i, j int) bool { return auths[i].String() < auths[j].String() })
	eq("authorities", st.Authorities(), auths)
	for _, a := range h.g.auths {
		fp, ok := st.Footprint(a)
		var want any = []any{Footprint{}, false}
		if mfp, known := m.footprints[a]; known {
			want = []any{refFootprint(mfp), true}
		}
		eq("footprint of "+a.String(), []any{fp, ok}, want)
	}
	eq("coherence", st.Coherence(), refCoherence(m.footprints))
	for _, s := range h.g.sessions {
		ls, ok := st.LiveSession(s)
		var want any = []any{(*LiveSession)(nil), false}
		if l := m.live[s]; l != nil {
			want = []any{l.value(s), true}
		}
		eq("live session "+s.String(), []any{ls, ok}, want)
	}

	eq("last fact seq", st.LastFactSeq(), m.lastSeq())
	eq("first fact seq", st.FirstFactSeq(), m.factBase+1)
	if !light {
		eq("facts", st.Facts(0, 0), m.facts)
	}
	pol, on := st.Bounded()
	eq("bounded", []any{pol, on, st.Clock(), st.FactsLost()}, []any{m.policy, m.bounded, m.clock, m.lost})
	var cons []Consumer
	for _, name := range refSortedKeys(m.consumers) {
		cons = append(cons, Consumer{Name: name, Cursor: m.consumers[name]})
	}
	eq("consumers", st.Consumers(), cons)
	rq := st.Requests()
	eq("request table", []any{rq.Entries, rq.Bytes, rq.EvictedEarly}, []any{len(m.requests), m.reqBytes, m.evicted})
	if len(m.facts) > 0 {
		after := m.lastSeq() - min(uint64(len(m.facts)), 20) + h.r.Uint64N(22)
		limit := h.r.IntN(4)
		var want []Fact
		for _, f := range m.facts {
			if f.Seq > after && (limit == 0 || len(want) < limit) {
				want = append(want, f)
			}
		}
		eq(fmt.Sprintf("facts after %d limit %d", after, limit), st.Facts(after, limit), want)
	}
	entries := 0
	for _, fp := range m.footprints {
		entries += len(fp)
	}
	eq("stats", st.Stats(), Stats{
		Bundles: len(m.bundles), Authorities: len(m.footprints), FootprintEntries: entries,
		LiveSessions: len(m.live), Facts: int(m.lastSeq()), RequestIDs: len(m.requests),
		ViolatingSessions: refViolatingSessions(m.footprints),
	})
}

func (h *modelHarness) snapshotRestore() {
	h.term += uint64(h.r.IntN(2))
	var buf bytes.Buffer
	if err := h.st.Snapshot(&buf, h.term); err != nil {
		h.fail("Snapshot: %v", err)
	}
	size := buf.Len()
	restored, hdr, err := Restore(&buf)
	if err != nil {
		h.fail("Restore of a %d-byte snapshot: %v", size, err)
	}
	if hdr.Index != h.st.AppliedIndex() || hdr.Term != h.term {
		h.fail("snapshot header index %d term %d, want %d %d", hdr.Index, hdr.Term, h.st.AppliedIndex(), h.term)
	}
	if restored.Digest() != h.st.Digest() {
		h.fail("restored digest differs from the live state's")
	}
	h.st = restored // carry on with the restored state as the live one
	h.stats["(snapshot+restore)"]++
	h.compareState("after restore", h.st, h.m, true)
}

func (h *modelHarness) checkpoint() {
	h.compareState("live state", h.st, h.m, h.r.IntN(3) != 0)
	h.stats["(state comparisons)"]++
}

func (h *modelHarness) freeze() {
	c := h.st.Clone()
	h.froze = append(h.froze, frozenClone{st: c, digest: c.Digest(), model: h.m.clone(), takenAt: h.step, retire: h.step + 200 + h.r.IntN(h.n/10+1)})
	h.stats["(frozen clones)"]++
}

func (h *modelHarness) verifyFrozen(all bool) {
	keep := h.froze[:0]
	for _, f := range h.froze {
		if !all && h.step < f.retire {
			keep = append(keep, f)
			continue
		}
		if f.st.Digest() != f.digest {
			h.fail("a clone taken at step %d changed after %d more commands applied to the original", f.takenAt, h.step-f.takenAt)
		}
		h.compareState(fmt.Sprintf("clone frozen at step %d", f.takenAt), f.st, f.model, false)
	}
	h.froze = keep
}

// forkedClone is a clone that goes its own way: it gets a different command
// stream, checked against its own copy of the model, while the original
// carries on. A lockstep twin cannot catch state shared by mistake between
// clones (both sides would write the same values); a fork can.
type forkedClone struct {
	st      *State
	m       *refModel
	g       *modelGen
	idx     uint64
	takenAt int
	retire  int
}

func (h *modelHarness) startFork() {
	fm := h.m.clone()
	g := &modelGen{r: h.r, m: fm, auths: h.g.auths, sessions: h.g.sessions, contexts: h.g.contexts,
		seq: h.g.seq + 10_000_000, reqPct: h.g.reqPct, reqCmds: map[string]genCmd{}}
	h.fork = &forkedClone{st: h.st.Clone(), m: fm, g: g, idx: h.idx, takenAt: h.step, retire: h.step + 50 + h.r.IntN(250)}
	h.stats["(forked clones)"]++
}

func (h *modelHarness) stepFork() {
	f := h.fork
	gc := f.g.command()
	f.idx++
	want := f.m.apply(f.idx, gc.cmd)
	got := f.st.Apply(f.idx, gc.cmd)
	h.compareResult(fmt.Sprintf("Apply on the clone forked at step %d", f.takenAt), gc.cmd, got, want)
	h.stats["(commands applied to forked clones)"]++
}

func (h *modelHarness) endFork() {
	f := h.fork
	h.compareState(fmt.Sprintf("clone forked at step %d", f.takenAt), f.st, f.m, false)
	h.compareState(fmt.Sprintf("live state, after a fork at step %d", f.takenAt), h.st, h.m, true)
	h.fork = nil
}

func (h *modelHarness) renewTwin() {
	if h.twin.Digest() != h.st.Digest() {
		h.fail("twin clone digest differs from the live state's")
	}
	h.compareState("twin clone", h.twin, h.m, false)
	h.twin = h.st.Clone()
	h.stats["(twin renewals)"]++
}

func (h *modelHarness) run() {
	defer func() {
		if p := recover(); p != nil {
			h.fail("panic: %v\n%s", p, debug.Stack())
		}
	}()
	h.compareState("initial state", h.st, h.m, false)
	// Per-iteration probabilities chosen for a few hundred snapshots, tens
	// of frozen clones and twin renewals over the run.
	iterations := float64(h.n) / 1.5
	pSnap := 200 / iterations
	pFreeze := 60 / iterations
	pTwin := 25 / iterations
	pFork := 100 / iterations
	nextCheck := 0
	for h.step < h.n {
		if h.r.IntN(5) == 0 {
			var cmds []genCmd
			for range 1 + h.r.IntN(6) {
				gc := h.g.command()
				if gc.unsafe {
					h.applyOne(gc)
					continue
				}
				cmds = append(cmds, gc)
			}
			if len(cmds) > 0 {
				h.applyBatch(cmds)
			}
		} else {
			h.applyOne(h.g.command())
		}
		if h.fork != nil {
			h.stepFork()
			if h.step >= h.fork.retire {
				h.endFork()
			}
		}
		if h.step >= nextCheck {
			h.checkpoint()
			nextCheck = h.step + 100 + h.r.IntN(300)
			h.verifyFrozen(false)
		}
		f := h.r.Float64()
		switch {
		case f < pSnap && h.fork == nil: // a restore would end the sharing a fork tests
			h.snapshotRestore()
		case f < pSnap+pFreeze:
			h.freeze()
		case f < pSnap+pFreeze+pTwin:
			h.renewTwin()
		case f < pSnap+pFreeze+pTwin+pFork && h.fork == nil:
			h.startFork()
		}
	}
	h.compareState("final state", h.st, h.m, false)
	if h.fork != nil {
		h.endFork()
	}
	h.verifyFrozen(true)
	h.renewTwin()
	h.snapshotRestore()
}

func TestModel(t *testing.T) {
	seed, n := modelParams(t)
	t.Logf("model seed=%d n=%d (reproduce: go test ./fsm -run '^TestModel$' -model.seed=%d -model.n=%d)", seed, n, seed, n)
	r := rand.New(rand.NewPCG(uint64(seed), 0x7265636f6e66))
	m := newRefModel()
	st := New()
	h := &modelHarness{t: t, seed: seed, n: n, test: "TestModel", r: r, m: m, g: newModelGen(r, m), st: st, twin: st.Clone(), stats: map[string]int{}, bundleCanon: map[*refBundle]string{}}
	start := time.Now()
	h.run()

	var keys []string
	for k := range h.stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-55s %d", k, h.stats[k])
	}
	t.Logf("seed=%d: %d commands in %v, %d request ids held, %d facts, %d bundles%s",
		seed, h.step, time.Since(start).Round(time.Millisecond), len(m.requests), len(m.facts), len(m.bundles), b.String())
	if h.step < n {
		t.Fatalf("seed=%d: applied %d commands, want at least %d", seed, h.step, n)
	}
}

// TestModelRequestIDEviction fills the request-id table past MaxRequestIDs
// with a random command mix, retrying ids at the eviction boundary (the
// oldest still held, the newest evicted) throughout, and checks every answer
// and the table's size against the model, across a snapshot and restore.
func TestModelRequestIDEviction(t *testing.T) {
	seed, _ := modelParams(t)
	t.Logf("model seed=%d (reproduce: go test ./fsm -run '^TestModelRequestIDEviction$' -model.seed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(uint64(seed), 0x65766963))
	m := newRefModel()
	st := New()
	g := newModelGen(r, m)
	g.legacy = true // the count bound of a legacy state
	h := &modelHarness{t: t, seed: seed, n: MaxRequestIDs + MaxRequestIDs/8 + 4000, r: r, test: "TestModelRequestIDEviction", m: m, g: g, st: st, twin: st.Clone(), stats: map[string]int{}, bundleCanon: map[*refBundle]string{}}
	var evicted []string
	fresh := 0
	next := func() genCmd {
		op, unsafe := h.g.op()
		gc := genCmd{cmd: Command{Op: op}, unsafe: unsafe}
		switch x := r.IntN(100); {
		case x < 3 && len(m.fifo) > 0: // the oldest id still held
			gc.cmd.RequestID = m.fifo[r.IntN(min(len(m.fifo), 3))]
			gc.retry = true
		case x < 6 && len(evicted) > 0: // an id just forgotten
			gc.cmd.RequestID = evicted[len(evicted)-1-r.IntN(min(len(evicted), 3))]
			gc.retry = true
		case x < 9 && len(m.fifo) > 0: // a recent id
			gc.cmd.RequestID = m.fifo[len(m.fifo)-1-r.IntN(min(len(m.fifo), 50))]
			gc.retry = true
		default:
			fresh++
			gc.cmd.RequestID = fmt.Sprintf("ev-%d", fresh)
		}
		return gc
	}
	// track evictions: the model's FIFO head moves past them
	forgotten := func(before []string) {
		for _, id := range before {
			if _, held := m.requests[id]; !held {
				evicted = append(evicted, id)
			}
		}
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				h.fail("panic: %v\n%s", p, debug.Stack())
			}
		}()
		for h.step < h.n {
			head := append([]string(nil), m.fifo[:min(len(m.fifo), 24)]...)
			if r.IntN(4) == 0 {
				var gcs []genCmd
				for range 1 + r.IntN(16) {
					if gc := next(); gc.unsafe {
						h.applyOne(gc)
					} else {
						gcs = append(gcs, gc)
					}
				}
				if len(gcs) > 0 {
					h.applyBatch(gcs)
				}
			} else {
				h.applyOne(next())
			}
			forgotten(head)
			if h.step%5000 == 0 {
				h.compareState("live state", h.st, m, true)
			}
		}
		if len(m.requests) != MaxRequestIDs || h.st.Stats().RequestIDs != MaxRequestIDs {
			h.fail("request table holds %d (model %d), want it full at %d", h.st.Stats().RequestIDs, len(m.requests), MaxRequestIDs)
		}
		if len(evicted) == 0 {
			h.fail("no request id was evicted")
		}
		// The table, with its expiry order, survives a snapshot: retry ids
		// around the boundary on the restored state.
		h.snapshotRestore()
		h.twin = h.st.Clone()
		for range 200 {
			h.applyOne(next())
		}
		h.compareState("final state", h.st, m, false)
	}()
	t.Logf("seed=%d: %d commands, %d fresh request ids, %d evicted, %d retries answered from the table, %d retries applied again",
		seed, h.step, fresh, len(evicted), h.stats["(retries answered from the table)"], h.stats["(retries of an id not in the table: applied)"])
}
