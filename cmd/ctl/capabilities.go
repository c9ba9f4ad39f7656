package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

func capabilitiesCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:    "capabilities",
		Aliases: []string{"caps"},
		Usage:   "show and set the replicated capability gate",
		Description: `The reconfiguration capability gates bundle linking, delegation, live
handoff and upgrade execution cluster-wide (on by default). While it is off
those operations are rejected with missing_capability.

Examples:
   reconfctl capabilities show
   reconfctl capabilities set reconfiguration=off`,
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "show the capability gate",
				UsageText: "reconfctl capabilities show",
				Description: `Shows whether the reconfiguration capability is on.

Example:
   reconfctl capabilities show`,
				Action: action(s, 0, 0, "", capabilitiesShow),
			},
			{
				Name:      "set",
				Usage:     "turn a capability on or off",
				UsageText: "reconfctl capabilities set reconfiguration=on|off|true|false [--request-id R]",
				ArgsUsage: "reconfiguration=on|off",
				Description: `Turns the reconfiguration capability on or off for the whole cluster.

Examples:
   reconfctl capabilities set reconfiguration=off
   reconfctl capabilities set reconfiguration=on`,
				Flags:  []cli.Flag{requestIDFlag()},
				Action: action(s, 1, 1, "reconfiguration=on|off", capabilitiesSet),
			},
		},
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func capabilitiesShow(ctx context.Context, c *cli.Context, x *conn) error {
	on, err := x.client.Capabilities(ctx)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, transport.CapabilitiesJSON{Reconfiguration: &on})
	}
	fmt.Fprintf(x.stdout, "reconfiguration: %s\n", onOff(on))
	return nil
}

// capabilitiesSet calls the API directly: the Go client's SetCapabilities
// always generates its own request id, and --request-id must be honoured.
func capabilitiesSet(ctx context.Context, c *cli.Context, x *conn) error {
	arg := c.Args().First()
	key, val, ok := strings.Cut(arg, "=")
	if !ok {
		return usageErr(c, "%q: want reconfiguration=on|off", arg)
	}
	if strings.TrimSpace(key) != "reconfiguration" {
		return usageErr(c, "unknown capability %q: the only capability is reconfiguration", key)
	}
	var on bool
	switch strings.ToLower(strings.TrimSpace(val)) {
	case "on", "true", "yes", "1":
		on = true
	case "off", "false", "no", "0":
		on = false
	default:
		return usageErr(c, "reconfiguration=%q: want on, off, true or false", val)
	}
	rid := c.String("request-id")
	if rid == "" {
		rid = transport.NewRequestID()
	}
	var res transport.CapabilitiesJSON
	if err := x.client.Call(ctx, http.MethodPut, "/v1/capabilities", transport.CapabilitiesJSON{Reconfiguration: &on, RequestID: rid}, &res); err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, res)
	}
	fmt.Fprintf(x.stdout, "reconfiguration: %s (index %d)\n", onOff(on), res.Index)
	return nil
}
