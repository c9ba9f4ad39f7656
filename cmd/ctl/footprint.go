package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

func footprintCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "footprint",
		Usage: "show and change an authority's session footprint",
		Description: `An authority's footprint records the sessions it holds natively, has
delegated in, and has delegated out. Authorities are "authority-<uuid>" (a bare
UUID is accepted), sessions "session-<uuid>".

Examples:
   reconfctl footprint show authority-1f0c…
   reconfctl footprint add authority-1f0c… --session session-9a7e…
   reconfctl footprint remove authority-1f0c… --session session-9a7e…`,
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "show an authority's footprint",
				UsageText: "reconfctl footprint show AUTHORITY",
				ArgsUsage: "AUTHORITY",
				Description: `Shows the sessions an authority holds, one row per session and class.
An authority that no operation has touched is authority_not_found.

Example:
   reconfctl footprint show authority-1f0c…`,
				Action: action(s, 1, 1, "AUTHORITY", footprintShow),
			},
			{
				Name:      "add",
				Usage:     "record a session in an authority's footprint",
				UsageText: "reconfctl footprint add AUTHORITY --session S [--class native|delegated_in|delegated_out] [--request-id R]",
				ArgsUsage: "AUTHORITY",
				Description: `Records session S under AUTHORITY in the given class (native by default),
moving it out of the authority's other classes. No coherence check runs: this
is how source ownership is recorded before a delegation.

Example:
   reconfctl footprint add authority-1f0c… --session session-9a7e… --class native`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "session", Usage: "`session` id (required)"},
					&cli.StringFlag{Name: "class", Value: "native", Usage: "`class`: native, delegated_in or delegated_out"},
					requestIDFlag(),
				},
				Action: action(s, 1, 1, "AUTHORITY", footprintAdd),
			},
			{
				Name:      "remove",
				Aliases:   []string{"rm"},
				Usage:     "remove a session from an authority's footprint",
				UsageText: "reconfctl footprint remove AUTHORITY --session S [--request-id R]",
				ArgsUsage: "AUTHORITY",
				Description: `Removes session S from every class of AUTHORITY's footprint. The footprint
itself stays, possibly empty.

Example:
   reconfctl footprint remove authority-1f0c… --session session-9a7e…`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "session", Usage: "`session` id (required)"},
					requestIDFlag(),
				},
				Action: action(s, 1, 1, "AUTHORITY", footprintRemove),
			},
		},
	}
}

func footprintShow(ctx context.Context, c *cli.Context, x *conn) error {
	f, err := x.client.ShowFootprint(ctx, c.Args().First())
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, f)
	}
	fmt.Fprintf(x.stdout, "authority: %s\nschema:    %s\n\n", f.AuthorityID, dash(f.SchemaVersion))
	t := newTable(x.stdout, "CLASS", "SESSION")
	for _, s := range f.NativeSessions {
		t.row("native", s)
	}
	for _, s := range f.DelegatedInSessions {
		t.row("delegated_in", s)
	}
	for _, s := range f.DelegatedOutSessions {
		t.row("delegated_out", s)
	}
	return t.flush()
}

// parseClass accepts native, delegated_in, delegated_out (and the hyphened
// forms).
func parseClass(c *cli.Context, v string) (string, error) {
	v = strings.ReplaceAll(strings.ToLower(strings.TrimSpace(v)), "-", "_")
	switch v {
	case "native", "delegated_in", "delegated_out":
		return v, nil
	}
	return "", usageErr(c, "--class %q: want native, delegated_in or delegated_out", c.String("class"))
}

func footprintAdd(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "session"); err != nil {
		return err
	}
	class, err := parseClass(c, c.String("class"))
	if err != nil {
		return err
	}
	auth := c.Args().First()
	res, err := x.client.AddFootprint(ctx, auth, transport.FootprintAddRequest{
		SessionID: c.String("session"), Class: class, RequestID: c.String("request-id"),
	})
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "recorded %s as %s at %s (index %d)%s\n", c.String("session"), class, auth, res.Index, dedupedNote(res.Deduped))
	return nil
}

// footprintRemove calls the API directly: the Go client's RemoveFootprint
// always generates its own request id, and --request-id must be honoured.
func footprintRemove(ctx context.Context, c *cli.Context, x *conn) error {
	if err := need(c, "session"); err != nil {
		return err
	}
	auth, sess := c.Args().First(), c.String("session")
	rid := c.String("request-id")
	if rid == "" {
		rid = transport.NewRequestID()
	}
	q := url.Values{"request_id": {rid}}
	path := "/v1/footprints/" + url.PathEscape(auth) + "/sessions/" + url.PathEscape(sess) + "?" + q.Encode()
	var res transport.IndexResponse
	if err := x.client.Call(ctx, http.MethodDelete, path, nil, &res); err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "removed %s from %s (index %d)%s\n", sess, auth, res.Index, dedupedNote(res.Deduped))
	return nil
}
