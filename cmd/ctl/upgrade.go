package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

func upgradeCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "upgrade",
		Usage: "seed, show and execute a bundle's runtime upgrades",
		Description: `Each bundle has a runtime-upgrade snapshot: an epoch, the active members, and
the recorded executions. Seeding resets it to a membership; executing an
upgrade request moves the membership to the last plan step's members.

Examples:
   reconfctl upgrade seed guardian_handoff --member member-a --member member-b
   reconfctl upgrade show guardian_handoff
   reconfctl upgrade execute guardian_handoff --file request.json`,
		Subcommands: []*cli.Command{
			{
				Name:      "seed",
				Usage:     "reset a bundle's upgrade snapshot to a membership",
				UsageText: "reconfctl upgrade seed BUNDLE --member M [--member M]... [--request-id R]",
				ArgsUsage: "BUNDLE",
				Description: `Resets BUNDLE's runtime-upgrade snapshot: epoch 0, the given active members
(deduplicated and sorted), no history. The membership may not be empty.

Example:
   reconfctl upgrade seed guardian_handoff --member member-a --member member-b`,
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "member", Usage: "active `member` (repeatable, required)"},
					requestIDFlag(),
				},
				Action: action(s, 1, 1, "BUNDLE", upgradeSeed),
			},
			{
				Name:      "show",
				Usage:     "show a bundle's upgrade snapshot",
				UsageText: "reconfctl upgrade show BUNDLE",
				ArgsUsage: "BUNDLE",
				Description: `Shows BUNDLE's runtime-upgrade snapshot: epoch, active members and the
recorded executions with their phases. The membership must have been seeded.

Example:
   reconfctl upgrade show guardian_handoff`,
				Action: action(s, 1, 1, "BUNDLE", upgradeShow),
			},
			{
				Name:      "execute",
				Usage:     "execute a runtime-upgrade request",
				UsageText: "reconfctl upgrade execute BUNDLE --file request.json [--request-id R]",
				ArgsUsage: "BUNDLE",
				Description: `Executes the runtime-upgrade request in --file ("-" reads stdin) against
BUNDLE. The request is JSON:

   {"upgrade_id": "u1",
    "plan": {"plan_id": "p1", "steps": [{"step_id": "s1", "next_members": ["member-b", "member-c"]}]},
    "compatibility": {"ownership_continuity_required": true,
                      "pending_effect_treatment": "preserve_pending",
                      "canonical_publication_continuity": "preserve_canonical_truth",
                      "execution_constraint": "preserve_bundle_profile"},
    "carried_publication_ids": [], "invalidated_publication_ids": [],
    "carried_obligation_ids": [], "invalidated_obligation_ids": []}

A request that fails validation is rejected with invalid_runtime_upgrade and
changes nothing. Needs the reconfiguration capability.

Example:
   reconfctl upgrade execute guardian_handoff --file request.json`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "JSON upgrade request `file` (- for stdin; required)"},
					requestIDFlag(),
				},
				Action: action(s, 1, 1, "BUNDLE", upgradeExecute),
			},
		},
	}
}

func upgradeSeed(ctx context.Context, c *cli.Context, x *conn) error {
	members := c.StringSlice("member")
	if len(members) == 0 {
		return usageErr(c, "missing required flag --member")
	}
	bundle := c.Args().First()
	res, err := x.client.SeedMembership(ctx, bundle, transport.MembershipRequest{Members: members, RequestID: c.String("request-id")})
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "seeded %s with members %s at epoch %d (index %d)\n", bundle, list(res.Snapshot.ActiveMembers), res.Snapshot.Epoch, res.Index)
	return nil
}

func upgradeShow(ctx context.Context, c *cli.Context, x *conn) error {
	res, err := x.client.ShowUpgrade(ctx, c.Args().First())
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	return printUpgradeSnapshot(x, res)
}

func printUpgradeSnapshot(x *conn, u *transport.UpgradeSnapshotJSON) error {
	fmt.Fprintf(x.stdout, "epoch:   %d\nmembers: %s\n", u.Epoch, list(u.ActiveMembers))
	if len(u.RuntimeUpgrades) == 0 {
		return nil
	}
	fmt.Fprintln(x.stdout)
	t := newTable(x.stdout, "UPGRADE", "ARTIFACT", "PHASES", "FINAL MEMBERS", "REASON")
	for _, e := range u.RuntimeUpgrades {
		t.row(e.UpgradeID, dash(e.ArtifactID), phases(e.Artifacts), list(e.FinalMembers), failureReason(e.Artifacts))
	}
	return t.flush()
}

func phases(as []transport.ArtifactJSON) string {
	p := make([]string, len(as))
	for i, a := range as {
		p[i] = a.Phase
	}
	return list(p)
}

func failureReason(as []transport.ArtifactJSON) string {
	for _, a := range as {
		if a.Reason != nil {
			return strings.ReplaceAll(*a.Reason, "\t", " ")
		}
	}
	return "-"
}

func upgradeExecute(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "file"); err != nil {
		return err
	}
	var req transport.ExecuteUpgradeRequest
	if err := decodeFile(c, x.streams, "file", c.String("file"), &req); err != nil {
		return err
	}
	if rid := c.String("request-id"); rid != "" {
		req.RequestID = rid
	}
	bundle := c.Args().First()
	res, err := x.client.ExecuteUpgrade(ctx, bundle, req)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "executed upgrade %s on %s: phases %s, members %s, epoch %d (index %d)\n",
		res.Execution.UpgradeID, bundle, phases(res.Execution.Artifacts), list(res.Execution.FinalMembers), res.Epoch, res.Index)
	return nil
}
