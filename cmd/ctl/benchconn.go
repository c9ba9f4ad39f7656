package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/reconf/reconf/transport"
)

// benchConn is one bench client's keep-alive HTTP/1.1 connection to its
// node. The load generator shares the machine with the nodes it measures,
// so its own cost per request matters: a plain connection with the request
// written by hand and the answer read with http.ReadResponse costs a
// fraction of net/http's client (no per-connection goroutines and channel
// hand-offs). Requests that fail are not retried here: the bench counts
// them as errors, and the next request reconnects if the connection broke.
type benchConn struct {
	addr    string
	tls     *tls.Config
	token   string
	timeout time.Duration // bound on one request

	conn net.Conn
	br   *bufio.Reader
	buf  []byte // the request being written
}

func newBenchConn(addr string, tlsCfg *tls.Config, token string, timeout time.Duration) *benchConn {
	return &benchConn{addr: addr, tls: tlsCfg, token: token, timeout: timeout}
}

func (c *benchConn) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	if c.tls != nil {
		cfg := c.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(c.addr)
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

func (c *benchConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// do sends one request (body: a value sent as JSON, or nil) and decodes a
// 200 answer into out (nil: discard it). A non-200 answer is an
// *transport.APIError.
func (c *benchConn) do(ctx context.Context, method, path string, body, out any) error {
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return err
		}
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	b := c.buf[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.addr...)
	b = append(b, "\r\nUser-Agent: reconfctl-bench\r\n"...)
	if c.token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, c.token...)
		b = append(b, "\r\n"...)
	}
	if payload != nil {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(payload)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, payload...)
	c.buf = b
	conn := c.conn
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	// The end of the run interrupts a request in flight.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(b); err != nil {
		c.close()
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb transport.ErrorBody
		if json.Unmarshal(msg, &eb) == nil && eb.Error.Code != "" {
			err = &transport.APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		} else {
			err = &transport.APIError{Status: resp.StatusCode, Code: transport.CodeInternal, Message: fmt.Sprintf("%s %s", resp.Status, bytes.TrimSpace(msg))}
		}
	} else if out != nil {
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	// Drain what is left so the connection can carry the next request.
	if _, cerr := io.Copy(io.Discard, resp.Body); cerr != nil || resp.Close {
		c.close()
	}
	return err
}
