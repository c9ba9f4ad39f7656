package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/transport"
)

// subcommands: small tools that share reconfd's binary (a FROM scratch
// image has nothing else).
func subcommands() []*cli.Command {
	return []*cli.Command{healthcheckCommand(), recoverCommand()}
}

func healthcheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "healthcheck",
		Usage: "exit 0 if the node at --addr is ready (GET /readyz), else 1: for container health checks",
		Description: `Asks a node's API whether it is ready: it knows a leader and has applied what
it knows to be committed (GET /readyz; --live asks GET /healthz, which only
says the process serves). With TLS (--tls-cert, --tls-key, --tls-ca or their
RECONF_TLS_* variables, as the node itself uses) it speaks HTTPS with the
node's certificate. The default --addr is the node's own RECONF_HTTP_ADDR,
with an unspecified host (0.0.0.0) replaced by 127.0.0.1.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Usage: "`host:port` of the API (default: $RECONF_HTTP_ADDR, else 127.0.0.1:8101)"},
			&cli.BoolFlag{Name: "live", Usage: "check liveness (/healthz) instead of readiness"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "bound on the check"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: env("TLS_CERT"), Usage: "client certificate `file` (HTTPS)"},
			&cli.StringFlag{Name: "tls-key", EnvVars: env("TLS_KEY"), Usage: "key `file` of --tls-cert"},
			&cli.StringFlag{Name: "tls-ca", EnvVars: env("TLS_CA"), Usage: "CA `file` that signs the node's certificate"},
		},
		Action: healthcheck,
	}
}

func healthcheck(c *cli.Context) error {
	addr := c.String("addr")
	if addr == "" {
		addr = os.Getenv("RECONF_HTTP_ADDR")
	}
	if addr == "" {
		addr = "127.0.0.1:8101"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return cli.Exit("healthcheck: --addr "+addr+": want host:port", 1)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	tr := &http.Transport{}
	scheme := "http"
	if c.String("tls-cert") != "" || c.String("tls-key") != "" || c.String("tls-ca") != "" {
		t, err := transport.LoadNodeTLS(transport.TLSFiles{CertFile: c.String("tls-cert"), KeyFile: c.String("tls-key"), CAFile: c.String("tls-ca")})
		if err != nil {
			return cli.Exit("healthcheck: "+err.Error(), 1)
		}
		tr.TLSClientConfig, scheme = t.ClientConfig(), "https"
	}
	path := "/readyz"
	if c.Bool("live") {
		path = "/healthz"
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+path, nil)
	if err != nil {
		return cli.Exit("healthcheck: "+err.Error(), 1)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return cli.Exit("healthcheck: "+err.Error(), 1)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cli.Exit(fmt.Sprintf("healthcheck: %s%s: %s", addr, path, resp.Status), 1)
	}
	fmt.Fprintf(c.App.Writer, "%s%s: ok\n", addr, path)
	return nil
}

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "recover",
		Usage:     "rewrite a stopped node's Raft configuration from a peers.json (quorum lost)",
		UsageText: "reconfd recover --data-dir DIR --peers peers.json",
		Description: `Manual recovery of a cluster that lost its quorum for good (docs/operations.md,
"Recovering from quorum loss"). Stop every surviving node; write the members
the cluster should have now into peers.json, a JSON array like

   [{"id": "n1", "address": "10.0.0.1:8201"},
    {"id": "n2", "address": "10.0.0.2:8201"}]

("non_voter": true for a non-voter); run reconfd recover with the same file on
each of those nodes; start them again as usual (no --bootstrap, no --join).
They elect a leader among themselves. Writes the lost nodes committed but the
survivors never received are lost.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", EnvVars: env("DATA_DIR"), Required: true, Usage: "the stopped node's data `dir`"},
			&cli.StringFlag{Name: "peers", Required: true, Usage: "peers.json `file`: the configuration to recover to"},
		},
		Action: func(c *cli.Context) error {
			peers, err := cluster.ReadPeersFile(c.String("peers"))
			if err != nil {
				return err
			}
			logger := hclog.New(&hclog.LoggerOptions{Name: "reconfd", Level: hclog.Info, Output: os.Stderr})
			if err := cluster.Recover(c.String("data-dir"), peers, logger); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "recovered %s: its Raft configuration is now the %d peers of %s.\n"+
				"Do the same on every node listed, then start them as usual (without --bootstrap or --join).\n",
				c.String("data-dir"), len(peers), c.String("peers"))
			return nil
		},
	}
}
