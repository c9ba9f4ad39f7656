// Package rawhttp is the HTTP/1.1 client of the load generators
// (`reconfctl bench` and scripts/refbench): one keep-alive connection per
// simulated client, the request written by hand and the answer read with
// http.ReadResponse. A load generator shares the machine with the servers it
// measures, so its own cost per request is part of every figure; this costs a
// fraction of net/http's client (no per-connection goroutines and channel
// hand-offs), and both generators using it means reconf and the reference
// servers are driven at the same cost.
package rawhttp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Conn is one client's connection to Addr. It dials on first use and again
// after a failed request; it does not retry. A Conn is not safe for
// concurrent use.
type Conn struct {
	Addr    string
	TLS     *tls.Config   // nil: plain TCP
	Header  string        // extra header lines, each ending in "\r\n"
	Timeout time.Duration // bound on one request

	conn net.Conn
	br   *bufio.Reader
	req  []byte       // the request being written
	body bytes.Buffer // the last answer's body
}

// Do sends one request with body (nil: none; else sent as application/json)
// and returns the answer's status and body. The body is valid until the
// next Do. Cancelling ctx interrupts a request in flight.
func (c *Conn) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return 0, nil, err
		}
	}
	b := append(c.req[:0], method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.Addr...)
	b = append(b, "\r\n"...)
	b = append(b, c.Header...)
	if body != nil {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	c.req = b
	conn := c.conn
	_ = conn.SetDeadline(time.Now().Add(c.Timeout))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(b); err != nil {
		c.Close()
		return 0, nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.Close()
		return 0, nil, err
	}
	c.body.Reset()
	_, err = c.body.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.Close()
	}
	return resp.StatusCode, c.body.Bytes(), err
}

func (c *Conn) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return err
	}
	if c.TLS != nil {
		cfg := c.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(c.Addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return err
		}
		conn = tc
	}
	c.conn, c.br = conn, bufio.NewReaderSize(conn, 16<<10)
	return nil
}

// Close closes the connection; the next Do dials again.
func (c *Conn) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
