// Command reconfctl is the operator CLI of a reconf cluster: it drives the
// HTTP API v1 of the reconfd nodes through the Go client in transport/.
//
// Exit status: 0 on success, 1 when the cluster rejects an operation or
// anything else fails, 2 on usage errors (unknown command or flag, missing
// argument, bad value).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// defaultAddrs are the three local nodes of `make run`.
const defaultAddrs = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103"

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// streams are the process's standard files, injectable for tests.
type streams struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// run runs reconfctl with args (args[0] is the program name) and returns
// the exit status. It never calls os.Exit.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	app := newApp(&streams{stdin: stdin, stdout: stdout, stderr: stderr})
	if len(args) == 0 {
		args = []string{"reconfctl"}
	}
	args = prepareCompletion(app, args)
	err := app.RunContext(ctx, reorderArgs(app, args))
	return report(stderr, err)
}

// report prints err the way reconfctl prints errors and returns the exit
// status that goes with it.
func report(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var apiErr *transport.APIError
	var exitErr cli.ExitCoder
	switch {
	case errors.As(err, &apiErr):
		fmt.Fprintf(stderr, "reconfctl: %s: %s\n", apiErr.Code, apiErr.Message)
		tlsHint(stderr, err) // tls.go
		return exitError
	case errors.As(err, &exitErr):
		code := exitErr.ExitCode()
		if code == exitOK {
			return exitOK
		}
		msg := strings.TrimSpace(exitErr.Error())
		// 3 is urfave's "No help topic for ...": a usage error too.
		if code == exitUsage || code == 3 {
			if msg != "" {
				fmt.Fprintf(stderr, "reconfctl: usage: %s\n", msg)
			}
			return exitUsage
		}
		if msg != "" {
			fmt.Fprintf(stderr, "reconfctl: error: %s\n", msg)
		}
		return exitError
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "reconfctl: timeout: %v (raise --timeout to wait longer)\n", err)
		return exitError
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "reconfctl: canceled: %v\n", err)
		return exitError
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &netErr) || errors.As(err, &urlErr) {
		fmt.Fprintf(stderr, "reconfctl: unavailable: %v\n", err)
		tlsHint(stderr, err)
		return exitError
	}
	fmt.Fprintf(stderr, "reconfctl: error: %v\n", err)
	return exitError
}

// usageErr is a usage error of the command c: exit status 2.
func usageErr(c *cli.Context, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if c != nil && c.Command != nil && c.Command.HelpName != "" {
		msg += fmt.Sprintf(" (see '%s --help')", c.Command.HelpName)
	}
	return cli.Exit(msg, exitUsage)
}

// onUsageError turns urfave's flag parsing errors into usage errors.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return usageErr(c, "%v", err)
}

func newApp(s *streams) *cli.App {
	app := &cli.App{
		Name:     "reconfctl",
		HelpName: "reconfctl",
		Usage:    "operate a reconf cluster (replicated reconfiguration controller)",
		UsageText: `reconfctl [global options] <noun> <verb> [options] [arguments]

   reconfctl bundle list
   reconfctl --addr 10.0.0.1:8101 --json cluster status`,
		Description: `reconfctl talks to the HTTP API of reconfd nodes. It tries each --addr in
turn and follows the leader a node names; followers also forward to the leader,
so any node will do. Reads are linearizable unless --stale is given.

Every write carries a request id (--request-id, or a generated one), so a
retry after an unknown outcome is applied at most once.

Output is a human-readable table; --json prints the API's JSON instead.
Flags may be given before or after positional arguments, and global flags
may also follow the command (reconfctl bundle list --json).

Exit status: 0 on success, 1 when an operation is rejected or fails (the
error code and message go to stderr as "reconfctl: <code>: <message>"),
2 on usage errors.`,
		Flags:                globalFlags(),
		Commands:             commands(s),
		EnableBashCompletion: true,
		HideVersion:          true,
		Reader:               s.stdin,
		Writer:               s.stdout,
		ErrWriter:            s.stderr,
		OnUsageError:         onUsageError,
		// Never os.Exit from inside the app: run maps errors to statuses.
		ExitErrHandler: func(*cli.Context, error) {},
		Action:         groupAction,
	}
	setUsageHandlers(app.Commands)
	return app
}

func setUsageHandlers(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = groupAction
		}
		setUsageHandlers(c.Subcommands)
	}
}

// groupAction runs when a noun is given without a (known) verb, or the
// program without a command.
func groupAction(c *cli.Context) error {
	if !c.Args().Present() {
		if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
			_ = cli.ShowSubcommandHelp(c)
		} else {
			_ = cli.ShowAppHelp(c)
		}
		return usageErr(nil, "missing command")
	}
	name := c.Args().First()
	msg := fmt.Sprintf("unknown command %q", name)
	subs := c.App.Commands
	if c.Command != nil && len(c.Command.Subcommands) > 0 {
		subs = c.Command.Subcommands
	}
	if cli.SuggestCommand != nil && len(subs) > 0 {
		if s := cli.SuggestCommand(subs, name); s != "" {
			msg += ". " + s
		}
	}
	return usageErr(c, "%s", msg)
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "addr", Value: defaultAddrs, EnvVars: []string{"RECONF_ADDR"}, Usage: "comma-separated `host:port` API addresses of cluster nodes"},
		&cli.BoolFlag{Name: "json", Usage: "print the API's JSON instead of tables"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"RECONF_TOKEN"}, Usage: "bearer `token` sent with every request"},
		&cli.BoolFlag{Name: "stale", Usage: "serve reads from the answering node's local state (may be behind)"},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "bound on one command, retries included"},
		&cli.StringFlag{Name: "ca-file", EnvVars: []string{"RECONF_CA_FILE"}, Usage: "PEM `file` of CAs that sign the nodes' certificates (enables HTTPS)"},
		&cli.StringFlag{Name: "cert-file", EnvVars: []string{"RECONF_CERT_FILE"}, Usage: "PEM client certificate `file` (with --key-file; enables HTTPS)"},
		&cli.StringFlag{Name: "key-file", EnvVars: []string{"RECONF_KEY_FILE"}, Usage: "PEM client key `file` (with --cert-file)"},
	}
}

func commands(s *streams) []*cli.Command {
	return []*cli.Command{
		bundleCommand(s),
		footprintCommand(s),
		sessionCommand(s),
		delegateCommand(s),
		coherenceCommand(s),
		upgradeCommand(s),
		factsCommand(s),
		capabilitiesCommand(s),
		clusterCommand(s),
		benchCommand(s), // bench.go
		tlsCommand(s),   // tls.go
		completionCommand(s),
	}
}

// reorderArgs lets flags follow positional arguments (urfave/cli v2 stops
// parsing flags at the first positional argument) and lets global flags
// follow the command: `reconfctl bundle link a b --as c --json` becomes
// `reconfctl --json bundle link --as c a b`. Unknown flags stay where they
// are, so urfave reports them.
func reorderArgs(app *cli.App, args []string) []string {
	out := []string{args[0]}
	rest := args[1:]
	complete := false
	if app.EnableBashCompletion && len(rest) > 0 && rest[len(rest)-1] == "--generate-bash-completion" {
		complete, rest = true, rest[:len(rest)-1]
	}
	var global []string
	var levels [][]string // per command level: its name, then its flags
	flags, cmds := app.Flags, app.Commands
	var pos []string
	dashdash, help := false, false
	add := func(toGlobal bool, v ...string) {
		if toGlobal || len(levels) == 0 {
			global = append(global, v...)
			return
		}
		levels[len(levels)-1] = append(levels[len(levels)-1], v...)
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			pos = append(pos, rest[i+1:]...)
			dashdash = true
			break
		}
		if len(a) > 1 && a[0] == '-' {
			name := strings.TrimLeft(a, "-")
			hasValue := false
			if j := strings.IndexByte(name, '='); j >= 0 {
				name, hasValue = name[:j], true
			}
			f := findFlag(flags, name)
			if f == nil && (name == "h" || name == "help") {
				help = true
			}
			toGlobal := false
			if f == nil && len(levels) > 0 {
				if f = findFlag(app.Flags, name); f != nil {
					toGlobal = true
				}
			}
			add(toGlobal, a)
			if f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(rest) {
				i++
				add(toGlobal, rest[i])
			}
			continue
		}
		if len(pos) == 0 {
			if sub := findCommand(cmds, a); sub != nil {
				levels = append(levels, []string{a})
				flags, cmds = sub.Flags, sub.Subcommands
				continue
			}
		}
		pos = append(pos, a)
	}
	out = append(out, global...)
	for _, l := range levels {
		out = append(out, l...)
	}
	if help {
		// urfave reads "cmd --help ARG" as help about ARG; the help of the
		// command itself is meant.
		pos, dashdash = nil, false
	}
	needDash := dashdash
	for _, p := range pos {
		if len(p) > 1 && p[0] == '-' {
			needDash = true
		}
	}
	if needDash && !complete {
		out = append(out, "--")
	}
	out = append(out, pos...)
	if complete {
		out = append(out, "--generate-bash-completion")
	}
	return out
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func isBoolFlag(f cli.Flag) bool {
	_, ok := f.(*cli.BoolFlag)
	return ok
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
