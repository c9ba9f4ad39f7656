package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

func clusterCheckCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "compare every replica's state digest at one log index",
		UsageText: "reconfctl cluster check",
		Description: `Runs a replica consistency check (admin): the leader commits a check entry,
every member digests its state at that entry, and the leader compares the
digests. Prints each member's digest at the checked index. A member whose
digest differs from the majority's is named: it raises the cluster alarm
(reconf_consistency_alarm, cluster status, 503 replica_inconsistent on its
/readyz) until a later check finds every member equal. Replace it
(docs/operations.md, "A replica that disagrees").

Exit status 1 when the digests differ. A member that is halted, unreachable
or not yet caught up is shown without a digest (status incomplete; exit 0).

Example:
   reconfctl cluster check`,
		Action: action(s, 0, 0, "", clusterCheck),
	}
}

func clusterCheck(ctx context.Context, c *cli.Context, x *conn) error {
	v, err := x.client.Check(ctx)
	if err != nil {
		return err
	}
	if x.json {
		if err := printJSON(x.stdout, v); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(x.stdout, "index:  %d\nstatus: %s\n", v.Index, v.Status)
		if v.Message != "" {
			fmt.Fprintf(x.stdout, "note:   %s\n", v.Message)
		}
		fmt.Fprintln(x.stdout)
		t := newTable(x.stdout, "ID", "STATUS", "DIGEST", "")
		for _, m := range v.Members {
			mark := ""
			for _, id := range v.Odd {
				if id == m.ID {
					mark = "DIFFERS"
				}
			}
			if m.Error != "" && mark == "" {
				mark = m.Error
			}
			t.row(m.ID, m.Status, dash(m.Digest), mark)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if v.Status == transport.CheckMismatch {
		return cli.Exit(fmt.Sprintf("replicas differ at index %d: %s", v.Index, strings.Join(v.Odd, ", ")), exitError)
	}
	return nil
}

// printConsistency adds the consistency check in force to cluster status.
func printConsistency(w io.Writer, v *transport.CheckJSON) {
	if v == nil {
		fmt.Fprintln(w, "\nconsistency: no check since this node started")
		return
	}
	if v.Status == transport.CheckMismatch {
		fmt.Fprintf(w, "\nconsistency: ALARM at index %d: odd replica(s) %s\n  %s\n", v.Index, strings.Join(v.Odd, ", "), v.Message)
		return
	}
	fmt.Fprintf(w, "\nconsistency: %s at index %d\n", v.Status, v.Index)
}
