package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

func requestIDFlag() cli.Flag {
	return &cli.StringFlag{Name: "request-id", Usage: "request `id` for exactly-once retries (default: a generated one)"}
}

// need returns a usage error naming the first of the flags that is unset.
func need(c *cli.Context, flags ...string) error {
	for _, f := range flags {
		if !c.IsSet(f) || strings.TrimSpace(c.String(f)) == "" {
			return usageErr(c, "missing required flag --%s", f)
		}
	}
	return nil
}

func bundleCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "bundle",
		Usage: "register, list, show and link protocol bundles",
		Description: `A bundle is a set of protocols with the interface labels it exports and
imports, and a session footprint. Every cluster starts with the default
bundles device_migration, epoch_rotation_transfer and guardian_handoff.

Examples:
   reconfctl bundle list
   reconfctl bundle register --id left --protocol p.left --export sync.delta --import chat.send
   reconfctl bundle show left
   reconfctl bundle link left right --as left+right`,
		Subcommands: []*cli.Command{
			{
				Name:      "register",
				Usage:     "register a new bundle",
				UsageText: "reconfctl bundle register --id ID [--protocol P]... [--export L]... [--import L]... [--native S]... [--delegated-in S]... [--delegated-out S]... [--request-id R]",
				Description: `Registers a bundle. --protocol, --export and --import are repeatable (or
comma-separated); --native, --delegated-in and --delegated-out give the
bundle's own session footprint. A bundle id that is already registered is
rejected with duplicate_bundle.

Example:
   reconfctl bundle register --id left --protocol p.left --export sync.delta --import chat.send`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "id", Usage: "bundle `id` (required)"},
					&cli.StringSliceFlag{Name: "protocol", Usage: "protocol `id` (repeatable)"},
					&cli.StringSliceFlag{Name: "export", Usage: "exported interface `label` (repeatable)"},
					&cli.StringSliceFlag{Name: "import", Usage: "imported interface `label` (repeatable)"},
					&cli.StringSliceFlag{Name: "native", Usage: "`session` in the bundle's footprint as native (repeatable)"},
					&cli.StringSliceFlag{Name: "delegated-in", Usage: "`session` in the bundle's footprint as delegated in (repeatable)"},
					&cli.StringSliceFlag{Name: "delegated-out", Usage: "`session` in the bundle's footprint as delegated out (repeatable)"},
					requestIDFlag(),
				},
				Action: action(s, 0, 0, "", bundleRegister),
			},
			{
				Name:      "list",
				Aliases:   []string{"ls"},
				Usage:     "list registered bundles",
				UsageText: "reconfctl bundle list",
				Description: `Lists every registered bundle with its protocols, exports, imports and the
number of sessions in its footprint.

Example:
   reconfctl bundle list`,
				Action: action(s, 0, 0, "", bundleList),
			},
			{
				Name:      "show",
				Usage:     "show one bundle",
				UsageText: "reconfctl bundle show BUNDLE",
				ArgsUsage: "BUNDLE",
				Description: `Shows a bundle: protocols, exports, imports and its session footprint.

Example:
   reconfctl bundle show device_migration`,
				Action: action(s, 1, 1, "BUNDLE", bundleShow),
			},
			{
				Name:      "link",
				Usage:     "link two bundles into a new one",
				UsageText: "reconfctl bundle link LEFT RIGHT --as ID [--request-id R]",
				ArgsUsage: "LEFT RIGHT",
				Description: `Links LEFT and RIGHT into a new bundle ID: protocols concatenated, exports,
imports and footprints merged. Each side's unresolved imports must be exported
by the other (else incompatible_interfaces) and their sessions must be
disjoint (else overlapping_sessions). Needs the reconfiguration capability.

Example:
   reconfctl bundle link left right --as left+right`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "as", Usage: "`id` of the linked bundle (required)"},
					requestIDFlag(),
				},
				Action: action(s, 2, 2, "LEFT RIGHT", bundleLink),
			},
		},
	}
}

func bundleRegister(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "id"); err != nil {
		return err
	}
	req := transport.RegisterBundleRequest{
		BundleID:    c.String("id"),
		ProtocolIDs: nonNilSlice(c.StringSlice("protocol")),
		Exports:     nonNilSlice(c.StringSlice("export")),
		Imports:     nonNilSlice(c.StringSlice("import")),
		RequestID:   c.String("request-id"),
	}
	if c.IsSet("native") || c.IsSet("delegated-in") || c.IsSet("delegated-out") {
		req.SessionFootprint = &transport.FootprintJSON{
			NativeSessions:       nonNilSlice(c.StringSlice("native")),
			DelegatedInSessions:  nonNilSlice(c.StringSlice("delegated-in")),
			DelegatedOutSessions: nonNilSlice(c.StringSlice("delegated-out")),
		}
	}
	res, err := x.client.RegisterBundle(ctx, req)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "registered bundle %s at index %d\n", res.Bundle.BundleID, res.Index)
	return nil
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func bundleList(ctx context.Context, c *cli.Context, x *conn) error {
	bundles, err := x.client.ListBundles(ctx)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, map[string]any{"bundles": nonNilBundles(bundles)})
	}
	t := newTable(x.stdout, "ID", "PROTOCOLS", "EXPORTS", "IMPORTS", "SESSIONS")
	for _, b := range bundles {
		t.row(b.BundleID, list(b.ProtocolIDs), list(b.Exports), list(b.Imports), sessionCount(b.SessionFootprint))
	}
	return t.flush()
}

func nonNilBundles(b []transport.BundleJSON) []transport.BundleJSON {
	if b == nil {
		return []transport.BundleJSON{}
	}
	return b
}

func bundleShow(ctx context.Context, c *cli.Context, x *conn) error {
	b, err := x.client.ShowBundle(ctx, c.Args().First())
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, b)
	}
	return printBundle(x, b)
}

func printBundle(x *conn, b *transport.BundleJSON) error {
	t := newTable(x.stdout)
	t.row("id", b.BundleID)
	t.row("schema", dash(b.SchemaVersion))
	t.row("protocols", list(b.ProtocolIDs))
	t.row("exports", list(b.Exports))
	t.row("imports", list(b.Imports))
	fp := b.SessionFootprint
	if fp == nil {
		fp = &transport.FootprintJSON{}
	}
	t.row("native", list(fp.NativeSessions))
	t.row("delegated_in", list(fp.DelegatedInSessions))
	t.row("delegated_out", list(fp.DelegatedOutSessions))
	return t.flush()
}

func bundleLink(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "as"); err != nil {
		return err
	}
	args := c.Args().Slice()
	res, err := x.client.LinkBundles(ctx, transport.LinkRequest{
		Left: args[0], Right: args[1], LinkedID: c.String("as"), RequestID: c.String("request-id"),
	})
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "linked %s into %s at index %d\n", strings.Join(args, " + "), res.Bundle.BundleID, res.Index)
	return printBundle(x, &res.Bundle)
}
