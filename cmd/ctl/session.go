package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

func sessionCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "session",
		Usage: "open, show and hand off live sessions",
		Description: `A live session has one owner label and a generation. Opening claims the
owner (generation 1); a handoff presents the current owner and generation,
moves ownership to the next owner and delegates the session, all at once.

Examples:
   reconfctl session open session-9a7e… --owner owner-a --bundle epoch_rotation_transfer
   reconfctl session show session-9a7e…
   reconfctl session handoff session-9a7e… --owner owner-a --generation 1 --next-owner delegated-owner \
       --from authority-1f0c… --to authority-77d2… --bundle epoch_rotation_transfer`,
		Subcommands: []*cli.Command{
			{
				Name:      "open",
				Usage:     "open a live session and claim its owner",
				UsageText: "reconfctl session open SESSION --owner LABEL [--bundle BUNDLE] [--request-id R]",
				ArgsUsage: "SESSION",
				Description: `Opens SESSION owned by LABEL at generation 1, routed through BUNDLE's
boundary when --bundle is given. Opening again with the same label returns
the current owner record; another label gets owner_conflict.

Example:
   reconfctl session open session-9a7e… --owner owner-a`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "owner", Usage: "owner `label` (required)"},
					&cli.StringFlag{Name: "bundle", Usage: "route the session through this `bundle`'s boundary"},
					requestIDFlag(),
				},
				Action: action(s, 1, 1, "SESSION", sessionOpen),
			},
			{
				Name:      "show",
				Usage:     "show a live session's owner",
				UsageText: "reconfctl session show SESSION",
				ArgsUsage: "SESSION",
				Description: `Shows a live session's owner label, generation, capability scope, routing
boundary and fragment owners.

Example:
   reconfctl session show session-9a7e…`,
				Action: action(s, 1, 1, "SESSION", sessionShow),
			},
			{
				Name:  "handoff",
				Usage: "hand a live session to a new owner and delegate it",
				UsageText: `reconfctl session handoff SESSION --owner LABEL --generation N --next-owner LABEL
      --from A --to B --bundle BUNDLE [--context C] [--scope S] [--boundary-file f.json]
      [--upgrade-file request.json] [--request-id R]`,
				ArgsUsage: "SESSION",
				Description: `Moves the owner of SESSION from --owner at --generation to --next-owner
(generation + 1) and delegates the session from A to B through BUNDLE, in one
command: both happen or neither does. An owner label or generation that is not
current is rejected with stale_owner.

Example:
   reconfctl session handoff session-9a7e… --owner owner-a --generation 1 --next-owner delegated-owner \
       --from authority-1f0c… --to authority-77d2… --bundle epoch_rotation_transfer`,
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "owner", Usage: "current owner `label` (required)"},
					&cli.Uint64Flag{Name: "generation", Usage: "current owner `generation` (required)"},
					&cli.StringFlag{Name: "next-owner", Usage: "next owner `label` (required)"},
				}, append(transferFlags(), requestIDFlag())...),
				Action: action(s, 1, 1, "SESSION", sessionHandoff),
			},
		},
	}
}

func sessionOpen(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "owner"); err != nil {
		return err
	}
	res, err := x.client.OpenSession(ctx, transport.OpenSessionRequest{
		SessionID: c.Args().First(), OwnerLabel: c.String("owner"), BundleID: c.String("bundle"), RequestID: c.String("request-id"),
	})
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "opened %s owned by %s at generation %d (index %d)\n", res.SessionID, res.OwnerLabel, res.Generation, res.Index)
	return nil
}

func sessionShow(ctx context.Context, c *cli.Context, x *conn) error {
	res, err := x.client.ShowSession(ctx, c.Args().First())
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	return printLiveSession(x, res)
}

func printLiveSession(x *conn, l *transport.LiveSessionJSON) error {
	t := newTable(x.stdout)
	t.row("session", l.SessionID)
	t.row("owner", l.OwnerLabel)
	t.row("generation", l.Generation)
	t.row("scope", scopeString(l.Scope))
	b := l.RoutingBoundary
	bundle := "-"
	if b.BundleID != nil {
		bundle = *b.BundleID
	}
	t.row("boundary", "bundle "+bundle, "protocols "+list(b.ProtocolIDs), "fragments "+list(b.FragmentKeys), "scope "+scopeString(b.CapabilityScope))
	if err := t.flush(); err != nil {
		return err
	}
	if len(l.Fragments) == 0 {
		return nil
	}
	fmt.Fprintln(x.stdout)
	ft := newTable(x.stdout, "FRAGMENT", "OWNER")
	for _, f := range l.Fragments {
		ft.row(f.Key, f.Owner)
	}
	return ft.flush()
}

func sessionHandoff(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "owner", "generation", "next-owner"); err != nil {
		return err
	}
	session := c.Args().First()
	transfer, err := buildTransfer(c, x.streams, session)
	if err != nil {
		return err
	}
	res, err := x.client.Handoff(ctx, session, transport.HandoffRequest{
		OwnerLabel:     c.String("owner"),
		Generation:     c.Uint64("generation"),
		NextOwnerLabel: c.String("next-owner"),
		Transfer:       transfer,
		RequestID:      c.String("request-id"),
	})
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	o := res.OwnershipReceipt
	fmt.Fprintf(x.stdout, "handed %s from %s (generation %d) to %s (generation %d)%s\n",
		res.Receipt.SessionID, o.FromOwnerID, o.FromGeneration, o.ToOwnerID, o.ToGeneration, dedupedNote(res.Deduped))
	return printDelegation(x, &res.Receipt, &res.Witness, res.FactSeq, res.Index)
}
