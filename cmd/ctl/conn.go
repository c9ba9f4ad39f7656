package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// conn is what one command needs to talk to the cluster: the Go client and
// the output settings.
type conn struct {
	*streams
	client  *transport.Client
	json    bool
	timeout time.Duration
	// base is the command's context without the --timeout bound, for
	// commands that run until interrupted (facts --follow).
	base context.Context
}

// connect builds a conn from the global flags.
func connect(c *cli.Context, s *streams) (*conn, error) {
	addrs := splitList(c.String("addr"))
	if len(addrs) == 0 {
		return nil, usageErr(c, "--addr: at least one host:port is required")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, usageErr(c, "--addr %q: want host:port", a)
		}
	}
	timeout := c.Duration("timeout")
	if timeout <= 0 {
		return nil, usageErr(c, "--timeout must be positive, not %s", timeout)
	}
	tlsCfg, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}}
	opts := []transport.ClientOption{transport.WithHTTPClient(hc)}
	if tlsCfg != nil {
		opts = append(opts, transport.WithTLS(tlsCfg))
	}
	client := transport.NewClient(addrs, opts...)
	client.Token = c.String("token")
	client.Stale = c.Bool("stale")
	// Stop retrying before the deadline (the client sleeps up to 500ms
	// between rounds), so that the error shown is the last answer or
	// connection error, not "deadline exceeded".
	retryFor := timeout - 600*time.Millisecond
	if timeout < 1200*time.Millisecond {
		retryFor = timeout / 2
	}
	client.RetryFor = retryFor
	return &conn{
		streams: s,
		client:  client,
		json:    c.Bool("json"),
		timeout: timeout,
	}, nil
}

// tlsConfig builds the client TLS configuration from --ca-file,
// --cert-file and --key-file; nil when none is set.
func tlsConfig(c *cli.Context) (*tls.Config, error) {
	ca, cert, key := c.String("ca-file"), c.String("cert-file"), c.String("key-file")
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, usageErr(c, "--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErr(c, "--ca-file %s: no PEM certificates found", ca)
		}
		cfg.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, usageErr(c, "--cert-file and --key-file go together")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, usageErr(c, "--cert-file/--key-file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// action wraps a command body: it checks the number of positional
// arguments (min..max; max < 0 means any), connects, and bounds the command
// by --timeout.
func action(s *streams, minArgs, maxArgs int, argsUsage string, body func(ctx context.Context, c *cli.Context, x *conn) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		n := c.Args().Len()
		switch {
		case n < minArgs:
			return usageErr(c, "missing argument: want %s", argsUsage)
		case maxArgs >= 0 && n > maxArgs:
			extra := c.Args().Slice()[maxArgs:]
			if argsUsage == "" {
				return usageErr(c, "unexpected argument %q: this command takes none", extra[0])
			}
			return usageErr(c, "unexpected argument %q: want %s", extra[0], argsUsage)
		}
		x, err := connect(c, s)
		if err != nil {
			return err
		}
		x.base = c.Context
		ctx, cancel := context.WithTimeout(c.Context, x.timeout)
		defer cancel()
		return body(ctx, c, x)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
