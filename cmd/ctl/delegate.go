package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// transferFlags are the delegation fields shared by delegate and session
// handoff.
func transferFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "from", Usage: "source `authority` (required)"},
		&cli.StringFlag{Name: "to", Usage: "target `authority` (required)"},
		&cli.StringFlag{Name: "bundle", Usage: "registered `bundle` the delegation goes through (required)"},
		&cli.StringFlag{Name: "context", Usage: "`context` id of the audit fact (default: derived from --from)"},
		&cli.StringFlag{Name: "scope", Usage: "capability `scope`: \"session\" or comma-separated fragment keys (default: the boundary's scope)"},
		&cli.StringFlag{Name: "boundary-file", Usage: "JSON link boundary `file` ({bundle_id, protocol_ids, fragment_keys, capability_scope}; - for stdin)"},
		&cli.StringFlag{Name: "upgrade-file", Usage: "JSON runtime-upgrade request `file` to execute with the delegation (- for stdin)"},
	}
}

// parseScope reads --scope: "session" or a comma-separated list of
// fragment keys.
func parseScope(c *cli.Context, v string) (*transport.ScopeJSON, error) {
	v = strings.TrimSpace(v)
	if v == "session" {
		return &transport.ScopeJSON{Session: true}, nil
	}
	keys := splitList(v)
	if len(keys) == 0 {
		return nil, usageErr(c, "--scope %q: want \"session\" or comma-separated fragment keys such as bundle:device_migration", v)
	}
	return &transport.ScopeJSON{Fragments: keys}, nil
}

// buildTransfer reads the delegation flags for session.
func buildTransfer(c *cli.Context, s *streams, session string) (transport.DelegationRequest, error) {
	req := transport.DelegationRequest{
		SessionID:     session,
		FromAuthority: c.String("from"),
		ToAuthority:   c.String("to"),
		BundleID:      c.String("bundle"),
		ContextID:     c.String("context"),
	}
	if err := need(c, "from", "to", "bundle"); err != nil {
		return req, err
	}
	if c.IsSet("scope") {
		sc, err := parseScope(c, c.String("scope"))
		if err != nil {
			return req, err
		}
		req.CapabilityScope = sc
	}
	stdinUsers := 0
	if f := c.String("boundary-file"); f != "" {
		var b transport.LinkBoundaryJSON
		if err := decodeFile(c, s, "boundary-file", f, &b); err != nil {
			return req, err
		}
		req.LinkBoundary = &b
		if f == "-" {
			stdinUsers++
		}
	}
	if f := c.String("upgrade-file"); f != "" {
		if f == "-" && stdinUsers > 0 {
			return req, usageErr(c, "only one of --boundary-file and --upgrade-file can read stdin")
		}
		var u transport.UpgradeRequestJSON
		if err := decodeFile(c, s, "upgrade-file", f, &u); err != nil {
			return req, err
		}
		req.RuntimeUpgradeRequest = &u
	}
	return req, nil
}

func delegateCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "delegate",
		Usage: "delegate a session from one authority to another",
		UsageText: `reconfctl delegate --session S --from A --to B --bundle BUNDLE [--context C] [--request-id R]
      [--scope session|KEY,...] [--boundary-file f.json] [--upgrade-file request.json]`,
		Description: `Moves session S from authority A (which must hold it: record it first with
"footprint add") to authority B through a registered bundle, as one replicated
command: afterwards A holds S as delegated_out and B as delegated_in, an audit
fact is appended to the journal, and, with --upgrade-file, the bundle's runtime
upgrade is executed in the same step. Rejected, with nothing changed, when the
result would be incoherent (coherence_violation), when A does not hold S
(session_not_owned), when the boundary does not match the bundle or scope
(invalid_link_boundary), or when the reconfiguration capability is off
(missing_capability).

Example:
   reconfctl delegate --session session-9a7e… --from authority-1f0c… --to authority-77d2… --bundle device_migration`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "session", Usage: "`session` to delegate (required)"},
		}, append(transferFlags(), requestIDFlag())...),
		Action: action(s, 0, 0, "", delegate),
	}
}

func delegate(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "session"); err != nil {
		return err
	}
	req, err := buildTransfer(c, x.streams, c.String("session"))
	if err != nil {
		return err
	}
	req.RequestID = c.String("request-id")
	res, err := x.client.Delegate(ctx, req)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "delegated %s from %s to %s through %s%s\n",
		res.Receipt.SessionID, res.Receipt.FromAuthority, res.Receipt.ToAuthority, res.Receipt.BundleID, dedupedNote(res.Deduped))
	return printDelegation(x, &res.Receipt, &res.Witness, res.FactSeq, res.Index)
}

// printDelegation is the human summary of a receipt and its witness.
func printDelegation(x *conn, r *transport.ReceiptJSON, w *transport.WitnessJSON, factSeq, index uint64) error {
	t := newTable(x.stdout)
	t.row("from", r.FromAuthority, footprintSummary(r.FromAfter))
	t.row("to", r.ToAuthority, footprintSummary(r.ToAfter))
	t.row("context", w.ContextID)
	t.row("scope", scopeString(w.CapabilityScope))
	t.row("moved", list(w.MovedFragmentKeys))
	t.row("coherence", w.Coherence)
	if u := w.RuntimeUpgradeExecution; u != nil {
		t.row("upgrade", u.UpgradeID, "final members "+list(u.FinalMembers))
	}
	t.row("fact", fmt.Sprintf("seq %d", factSeq), fmt.Sprintf("index %d", index))
	t.row("at", formatMillis(r.DelegatedAt.TsMs))
	return t.flush()
}

func coherenceCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:      "coherence",
		Usage:     "check that every session has one active owner",
		UsageText: "reconfctl coherence",
		Description: `Checks every authority footprint: each session is active (native or delegated
in) at one authority at most, and each delegated-out session has exactly one
receiver. Prints "coherent" or the violations, one per line. While any
violation exists, every delegation is rejected.

Example:
   reconfctl coherence`,
		Action: action(s, 0, 0, "", coherence),
	}
}

func coherence(ctx context.Context, c *cli.Context, x *conn) error {
	res, err := x.client.Coherence(ctx)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	if res.Status == "coherent" || len(res.Violations) == 0 {
		fmt.Fprintln(x.stdout, dash(res.Status))
		return nil
	}
	for _, v := range res.Violations {
		fmt.Fprintln(x.stdout, v)
	}
	return nil
}
