package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

const factsPage = 1000

func factsCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:      "facts",
		Usage:     "list or follow the delegation audit journal",
		UsageText: "reconfctl facts [--follow] [--after N] [--limit M]",
		Description: `Every successful delegation appends one audit fact, numbered by a sequence
that grows by one per fact. Lists the facts after sequence N (all of them by
default, paging as needed). With --follow, prints them as they are applied
until interrupted (with --json: one JSON object per line); --limit then stops
after M facts, and --timeout bounds the follow only when given explicitly.

Examples:
   reconfctl facts
   reconfctl facts --after 100 --limit 20
   reconfctl facts --follow`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new facts as they are applied"},
			&cli.Uint64Flag{Name: "after", Usage: "start after fact sequence `N`"},
			&cli.IntFlag{Name: "limit", Usage: "print at most `M` facts (0: no limit)"},
		},
		Action:      action(s, 0, 0, "", facts),
		Subcommands: factsSubcommands(s), // export.go: retention, consumers, export
	}
}

func facts(ctx context.Context, c *cli.Context, x *conn) error {
	after, limit := c.Uint64("after"), c.Int("limit")
	if limit < 0 {
		return usageErr(c, "--limit must be 0 or more, not %d", limit)
	}
	if c.Bool("follow") {
		return followFacts(ctx, c, x, after, limit)
	}
	var all []transport.FactJSON
	var lastSeq uint64
	for {
		n := factsPage
		if limit > 0 && limit-len(all) < n {
			n = limit - len(all)
		}
		page, err := x.client.Facts(ctx, after, n)
		if err != nil {
			return err
		}
		lastSeq = page.LastSeq
		all = append(all, page.Facts...)
		if len(page.Facts) < n || len(page.Facts) == 0 || (limit > 0 && len(all) >= limit) {
			break
		}
		after = page.Facts[len(page.Facts)-1].Seq
		if after >= lastSeq {
			break
		}
	}
	if all == nil {
		all = []transport.FactJSON{}
	}
	if x.json {
		return printJSON(x.stdout, transport.FactsResponse{Facts: all, LastSeq: lastSeq})
	}
	t := newTable(x.stdout, "SEQ", "INDEX", "TIME", "SESSION", "FROM", "TO", "BUNDLE", "CONTEXT")
	for _, f := range all {
		t.row(f.Seq, f.Index, formatMillis(f.Timestamp.TsMs), f.SessionID, f.FromAuthority, f.ToAuthority, dash(f.BundleID), f.ContextID)
	}
	return t.flush()
}

var errEnough = errors.New("enough facts")

// factLine is the fixed-width row of a followed fact: rows arrive one at a
// time, so a tabwriter cannot align them.
const factLine = "%-6v  %-8v  %-24s  %-44s  %-46s  %-46s  %-24s  %s\n"

func followFacts(ctx context.Context, c *cli.Context, x *conn, after uint64, limit int) error {
	// One ordinary read first: it fails fast, with the API's error, when no
	// node answers or the request is refused (the watch itself reconnects
	// forever).
	if _, err := x.client.Facts(ctx, after, 1); err != nil {
		return err
	}
	fctx := x.base
	if c.IsSet("timeout") {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(x.base, x.timeout)
		defer cancel()
	}
	if !x.json {
		fmt.Fprintf(x.stdout, factLine, "SEQ", "INDEX", "TIME", "SESSION", "FROM", "TO", "BUNDLE", "CONTEXT")
	}
	seen := 0
	err := x.client.WatchFacts(fctx, after, func(f transport.FactJSON) error {
		if x.json {
			b, err := json.Marshal(f)
			if err != nil {
				return err
			}
			fmt.Fprintf(x.stdout, "%s\n", b)
		} else {
			fmt.Fprintf(x.stdout, factLine, f.Seq, f.Index, formatMillis(f.Timestamp.TsMs), f.SessionID, f.FromAuthority, f.ToAuthority, dash(f.BundleID), f.ContextID)
		}
		seen++
		if limit > 0 && seen >= limit {
			return errEnough
		}
		return nil
	})
	switch {
	case errors.Is(err, errEnough):
		return nil
	case errors.Is(err, context.Canceled) && x.base.Err() != nil:
		return nil // interrupted: the normal end of a follow
	case errors.Is(err, context.DeadlineExceeded) && c.IsSet("timeout"):
		return nil // followed for as long as asked
	}
	return err
}
