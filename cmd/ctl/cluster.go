package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// longOpTimeout bounds backup and restore when --timeout is not given
// explicitly: a multi-GB state takes longer than the default 30s.
const longOpTimeout = time.Hour

func clusterCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "operate the Raft cluster: status, membership, leadership, backups",
		Description: `Operations on the cluster itself rather than the controller state.

Examples:
   reconfctl cluster status
   reconfctl cluster join node4 10.0.0.4:8201
   reconfctl cluster remove node4
   reconfctl cluster transfer-leadership node2
   reconfctl cluster backup reconf.snap
   reconfctl cluster restore reconf.snap
   reconfctl cluster digest --all`,
		Subcommands: []*cli.Command{
			{
				Name:      "status",
				Usage:     "show the leader, term, indexes and members",
				UsageText: "reconfctl cluster status",
				Description: `Shows the answering node's view of the cluster: the leader, the Raft term,
commit and applied indexes, and every member with its Raft and HTTP addresses,
suffrage and state.

Example:
   reconfctl cluster status`,
				Action: action(s, 0, 0, "", clusterStatus),
			},
			clusterCheckCommand(s), // check.go
			{
				Name:      "join",
				Usage:     "add a node to the cluster",
				UsageText: "reconfctl cluster join ID RAFT_ADDR [--nonvoter] [--replace]",
				ArgsUsage: "ID RAFT_ADDR",
				Description: `Adds node ID, reachable for Raft at RAFT_ADDR, as a voter (or a non-voter
with --nonvoter). Nodes started with reconfd --join do this themselves.
A member with the same id at another address (or another id at the same
address) is replaced only when it no longer answers; --replace replaces it
anyway.

Example:
   reconfctl cluster join node4 10.0.0.4:8201`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "nonvoter", Usage: "join as a non-voting member"},
					&cli.BoolFlag{Name: "replace", Usage: "take over the id or Raft address of a member even if it still answers (else refused with member_conflict)"},
				},
				Action: action(s, 2, 2, "ID RAFT_ADDR", clusterJoin),
			},
			{
				Name:      "remove",
				Usage:     "remove a node from the cluster",
				UsageText: "reconfctl cluster remove ID",
				ArgsUsage: "ID",
				Description: `Removes node ID from the Raft configuration.

Example:
   reconfctl cluster remove node4`,
				Action: action(s, 1, 1, "ID", clusterRemove),
			},
			{
				Name:      "transfer-leadership",
				Usage:     "hand leadership to another voter",
				UsageText: "reconfctl cluster transfer-leadership [ID]",
				ArgsUsage: "[ID]",
				Description: `Makes the leader hand leadership to voter ID, or to the most caught-up voter
when no ID is given, and prints the new leader.

Example:
   reconfctl cluster transfer-leadership node2`,
				Action: action(s, 0, 1, "[ID]", clusterTransfer),
			},
			{
				Name:      "snapshot",
				Usage:     "make the answering node snapshot and compact its log",
				UsageText: "reconfctl cluster snapshot",
				Description: `Makes the node that answers (the first reachable --addr) take a snapshot now
and compact its Raft log.

Example:
   reconfctl --addr 127.0.0.1:8102 cluster snapshot`,
				Action: action(s, 0, 0, "", clusterSnapshot),
			},
			{
				Name:      "backup",
				Usage:     "download a backup of the controller state",
				UsageText: "reconfctl cluster backup FILE",
				ArgsUsage: "FILE",
				Description: `Downloads a snapshot of the whole controller state into FILE ("-" writes to
stdout). The file is written next to FILE and renamed into place when
complete. Bounded by --timeout only when it is given (else one hour).

Example:
   reconfctl cluster backup reconf-$(date +%F).snap`,
				Action: action(s, 1, 1, "FILE", clusterBackup),
			},
			{
				Name:      "restore",
				Usage:     "replace the controller state with a backup",
				UsageText: "reconfctl cluster restore FILE",
				ArgsUsage: "FILE",
				Description: `Uploads the backup FILE ("-" reads stdin); the cluster validates it and adopts
it as its whole state, and the new state digest is printed. A truncated or
corrupt backup is refused and the old state stays. Bounded by --timeout only
when it is given (else one hour).

Example:
   reconfctl cluster restore reconf.snap`,
				Action: action(s, 1, 1, "FILE", clusterRestore),
			},
			{
				Name:      "digest",
				Usage:     "show the state digest",
				UsageText: "reconfctl cluster digest [--all]",
				Description: `Shows the applied index and the hash of the whole state of the answering
node; with --all, of every --addr, so replicas can be compared (equal indexes
must have equal digests).

Examples:
   reconfctl cluster digest
   reconfctl cluster digest --all`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "all", Usage: "ask every --addr, not just the first that answers"},
				},
				Action: action(s, 0, 0, "", clusterDigest),
			},
		},
	}
}

func clusterStatus(ctx context.Context, c *cli.Context, x *conn) error {
	st, err := x.client.Status(ctx)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, st)
	}
	leader := "none"
	if l := st.Leader; l != nil {
		leader = fmt.Sprintf("%s (raft %s, http %s)", l.ID, dash(l.RaftAddr), dash(l.HTTPAddr))
	}
	fmt.Fprintf(x.stdout, "leader:  %s\nterm:    %d\ncommit:  %d\napplied: %d\nanswered by: %s\n\n",
		leader, st.Term, st.CommitIndex, st.AppliedIndex, dash(st.Self))
	t := newTable(x.stdout, "ID", "RAFT", "HTTP", "SUFFRAGE", "STATE")
	for _, n := range st.Nodes {
		t.row(n.ID, dash(n.RaftAddr), dash(n.HTTPAddr), dash(n.Suffrage), dash(n.State))
	}
	if err := t.flush(); err != nil {
		return err
	}
	printConsistency(x.stdout, st.Consistency) // check.go
	return nil
}

func clusterJoin(ctx context.Context, c *cli.Context, x *conn) error {
	id, raftAddr := c.Args().Get(0), c.Args().Get(1)
	if _, _, err := net.SplitHostPort(raftAddr); err != nil {
		return usageErr(c, "RAFT_ADDR %q: want host:port", raftAddr)
	}
	voter := !c.Bool("nonvoter")
	if err := x.client.Join(ctx, transport.JoinRequest{ID: id, RaftAddr: raftAddr, Voter: &voter, Replace: c.Bool("replace")}); err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, map[string]string{"joined": id})
	}
	kind := "voter"
	if !voter {
		kind = "non-voter"
	}
	fmt.Fprintf(x.stdout, "joined %s at %s as a %s\n", id, raftAddr, kind)
	return nil
}

func clusterRemove(ctx context.Context, c *cli.Context, x *conn) error {
	id := c.Args().First()
	if err := x.client.Remove(ctx, id); err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, map[string]string{"removed": id})
	}
	fmt.Fprintf(x.stdout, "removed %s\n", id)
	return nil
}

func clusterTransfer(ctx context.Context, c *cli.Context, x *conn) error {
	leader, err := x.client.TransferLeadership(ctx, c.Args().First())
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, map[string]string{"leader": leader})
	}
	fmt.Fprintf(x.stdout, "leader: %s\n", dash(leader))
	return nil
}

// clusterSnapshot calls the API directly: the Go client's Snapshot drops
// the name of the node that took it.
func clusterSnapshot(ctx context.Context, c *cli.Context, x *conn) error {
	var res struct {
		Node  string `json:"node"`
		Index uint64 `json:"index"`
	}
	if err := x.client.Call(ctx, http.MethodPost, "/v1/cluster/snapshot", struct{}{}, &res); err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "snapshot taken on %s at index %d\n", dash(res.Node), res.Index)
	return nil
}

// longCtx is the context of backup and restore.
func longCtx(c *cli.Context, x *conn) (context.Context, context.CancelFunc) {
	if c.IsSet("timeout") {
		return context.WithTimeout(x.base, x.timeout)
	}
	return context.WithTimeout(x.base, longOpTimeout)
}

func clusterBackup(_ context.Context, c *cli.Context, x *conn) error {
	ctx, cancel := longCtx(c, x)
	defer cancel()
	file := c.Args().First()
	if file == "-" {
		_, err := x.client.Backup(ctx, x.stdout)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	n, err := x.client.Backup(ctx, tmp)
	if err == nil && n == 0 {
		err = fmt.Errorf("backup: no node answered")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, map[string]any{"file": file, "bytes": n})
	}
	fmt.Fprintf(x.stdout, "wrote %d bytes to %s\n", n, file)
	return nil
}

func clusterRestore(_ context.Context, c *cli.Context, x *conn) error {
	ctx, cancel := longCtx(c, x)
	defer cancel()
	file := c.Args().First()
	var r io.Reader = x.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return usageErr(c, "FILE: %v", err)
		}
		defer f.Close()
		r = f
	}
	res, err := x.client.Restore(ctx, r)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "restored: index %d digest %s\n", res.Index, res.Digest)
	return nil
}

func clusterDigest(ctx context.Context, c *cli.Context, x *conn) error {
	if !c.Bool("all") {
		d, err := x.client.Digest(ctx)
		if err != nil {
			return err
		}
		if x.json {
			return printJSON(x.stdout, d)
		}
		fmt.Fprintf(x.stdout, "index:  %d\ndigest: %s\n", d.Index, d.Digest)
		return nil
	}
	type nodeDigest struct {
		Addr string `json:"addr"`
		transport.DigestJSON
		Error string `json:"error,omitempty"`
	}
	var out []nodeDigest
	failed := 0
	for _, addr := range x.client.Addrs() {
		nd := nodeDigest{Addr: addr}
		if err := x.client.CallAt(ctx, addr, http.MethodGet, "/v1/cluster/digest", nil, &nd.DigestJSON); err != nil {
			nd.Error = err.Error()
			failed++
		}
		out = append(out, nd)
	}
	if x.json {
		if err := printJSON(x.stdout, map[string]any{"nodes": out}); err != nil {
			return err
		}
	} else {
		t := newTable(x.stdout, "ADDR", "INDEX", "DIGEST")
		for _, nd := range out {
			if nd.Error != "" {
				t.row(nd.Addr, "-", "error: "+nd.Error)
				continue
			}
			t.row(nd.Addr, nd.Index, nd.Digest)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d nodes did not answer", failed, len(out))
	}
	return nil
}
