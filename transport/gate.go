package transport

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reconf/reconf/fsm"
)

// The upgrade gate: a cluster never applies a command one of its members
// cannot decode.
//
// The floor is the FSM's: a command of an unknown type or version is
// rejected deterministically (unknown_command) by every replica that cannot
// read it, so no replica panics. But a replica that can read it applies it,
// and one that cannot rejects it: in a mixed-version cluster that would be a
// divergence. So the leader goes further: every node advertises, at GET
// /v1/internal/node, the entry format, command version and command types it
// decodes (CommandSupport), and the leader proposes a command only when
// every member of the configuration (voters and non-voters: both apply the
// log) advertises support for it. Otherwise the write fails with 503
// upgrade_in_progress and nothing is proposed.
//
// The leader caches what each member supports. It refreshes the cache
// before the first write it leads, after a join, and in the background every
// gateRefresh while writes come in. A member that does not answer keeps
// what it last advertised; one never heard from counts as the oldest
// release (baselineSupport), the one that shipped this gate, so a newer
// leader proposes only what that release decodes until it hears otherwise.
//
// Newer releases must keep decoding every older entry format, command
// version and type: the rolling-upgrade rule docs/operations.md spells out.

// CommandSupport is what a node can decode.
type CommandSupport struct {
	EntryFormat    int      `json:"entry_format"`
	CommandVersion int      `json:"command_version"`
	CommandTypes   []string `json:"command_types"`
}

// LocalSupport is what this binary decodes.
func LocalSupport() CommandSupport {
	s := CommandSupport{EntryFormat: fsm.EntryFormat, CommandVersion: fsm.CommandVersion}
	for t := 1; t < 256; t++ {
		if name := fsm.Type(t).String(); name != "unknown" {
			s.CommandTypes = append(s.CommandTypes, name)
		}
	}
	return s
}

// baselineSupport is what the first release with the gate decodes: what a
// node that advertises nothing is assumed to decode.
var baselineSupport = CommandSupport{
	EntryFormat: 1, CommandVersion: 1,
	CommandTypes: []string{
		"register_bundle", "link_bundles", "extend_footprint", "remove_footprint", "delegate",
		"open_session", "handoff", "set_capabilities", "seed_membership", "execute_upgrade",
	},
}

// supports reports whether a node with s decodes a command of type t as
// this binary encodes it; if not, why.
func (s CommandSupport) supports(t fsm.Type) (bool, string) {
	// The entry format is not checked here: the leader writes the newest
	// format every member reads (EntryFormat), so an older member holds
	// back only the checksum, never a write.
	switch {
	case s.CommandVersion < fsm.CommandVersion:
		return false, fmt.Sprintf("decodes command version %d; this leader encodes %d", s.CommandVersion, fsm.CommandVersion)
	case !slices.Contains(s.CommandTypes, t.String()):
		return false, fmt.Sprintf("does not know command type %s", t)
	}
	return true, ""
}

const (
	gateRefresh   = 5 * time.Second
	gateProbeWait = time.Second
)

type memberSupport struct {
	id, addr string
	support  CommandSupport
	heard    bool // advertised by the member itself (else assumed)
}

type gateView struct {
	members []memberSupport
	at      time.Time
}

// versionGate is the leader's cache of what each member decodes.
type versionGate struct {
	s     *Server
	view  atomic.Pointer[gateView]
	dirty atomic.Bool

	mu         sync.Mutex // one refresh at a time
	refreshing atomic.Bool
	known      map[string]memberSupport // by id: last heard

	bounded boundedSwitch // facts_routes.go
}

func newVersionGate(s *Server) *versionGate {
	return &versionGate{s: s, known: map[string]memberSupport{}}
}

// invalidate makes the next check refresh first (membership changed).
func (g *versionGate) invalidate() { g.dirty.Store(true) }

// check reports why a command of type t must not be proposed now; "" when
// every member decodes it.
func (g *versionGate) check(ctx context.Context, t fsm.Type) string {
	v := g.view.Load()
	if v == nil || g.dirty.Load() {
		v = g.refresh(ctx)
	} else if time.Since(v.at) > gateRefresh && g.refreshing.CompareAndSwap(false, true) {
		go func() {
			defer g.refreshing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 2*gateProbeWait)
			defer cancel()
			g.refresh(ctx)
		}()
	}
	var behind []string
	for _, m := range v.members {
		if ok, why := m.support.supports(t); !ok {
			src := "advertised"
			if !m.heard {
				src = "assumed: not heard from yet"
			}
			behind = append(behind, fmt.Sprintf("%s (%s) %s [%s]", m.id, m.addr, why, src))
		}
	}
	if len(behind) == 0 {
		if t != fsm.TypeSetRetention {
			g.s.switchBounded(ctx, v) // facts_routes.go
		}
		return ""
	}
	return fmt.Sprintf("not proposing %s: not every member can decode it: %s. Finish the rolling upgrade (docs/operations.md); these writes resume once every member advertises support",
		t, strings.Join(behind, "; "))
}

// Check is check for cluster.Gate: the node runs every proposal past it.
func (g *versionGate) Check(ctx context.Context, t fsm.Type) string { return g.check(ctx, t) }

// EntryFormat is the newest log entry format every member reads, for
// cluster.Gate: format 2 (checksummed, fsm/checksum.go) once every member
// advertises it, else format 1. Before the first refresh it is format 1, as
// for a member never heard from.
func (g *versionGate) EntryFormat() int {
	v := g.view.Load()
	if v == nil || len(v.members) == 0 {
		return fsm.EntryFormatUnchecked
	}
	format := fsm.EntryFormat
	for _, m := range v.members {
		format = min(format, m.support.EntryFormat)
	}
	return format
}

// refresh asks every member what it decodes.
func (g *versionGate) refresh(ctx context.Context) *gateView {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dirty.Store(false)
	servers, err := g.s.node.Servers()
	if err != nil {
		if v := g.view.Load(); v != nil {
			return v
		}
		servers = nil
	}
	pctx, cancel := context.WithTimeout(ctx, gateProbeWait)
	defer cancel()
	out := make([]memberSupport, len(servers))
	var wg sync.WaitGroup
	for i, sv := range servers {
		out[i] = memberSupport{id: sv.ID, addr: sv.RaftAddr}
		if sv.ID == g.s.node.ID() {
			out[i].support, out[i].heard = g.s.support, true
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			info, err := g.s.peerInfo(pctx, out[i].addr)
			if err != nil || info.ID != out[i].id {
				return
			}
			out[i].support, out[i].heard = info.support(), true
		}(i)
	}
	wg.Wait()
	for i := range out {
		m := &out[i]
		if m.heard {
			g.known[m.id] = *m
		} else if prev, ok := g.known[m.id]; ok && prev.addr == m.addr {
			m.support = prev.support
		} else {
			m.support = baselineSupport
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	v := &gateView{members: out, at: time.Now()}
	g.view.Store(v)
	return v
}

// support reads what a peer advertised; a node that advertises nothing is
// the baseline release.
func (n NodeJSON) support() CommandSupport {
	if n.CommandVersion == 0 && n.EntryFormat == 0 && n.CommandTypes == nil {
		return baselineSupport
	}
	return CommandSupport{EntryFormat: n.EntryFormat, CommandVersion: n.CommandVersion, CommandTypes: n.CommandTypes}
}
