package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/reconf/reconf/internal/rawhttp"
	"github.com/reconf/reconf/transport"
)

// benchConn is one bench client's keep-alive HTTP/1.1 connection to its
// node (internal/rawhttp: the load generator shares the machine with the
// nodes it measures, so its own cost per request matters). Requests that
// fail are not retried here: the bench counts them as errors, and the next
// request reconnects if the connection broke.
type benchConn struct {
	rawhttp.Conn
}

func newBenchConn(addr string, tlsCfg *tls.Config, token string, timeout time.Duration) *benchConn {
	c := &benchConn{rawhttp.Conn{Addr: addr, TLS: tlsCfg, Timeout: timeout, Header: "User-Agent: reconfctl-bench\r\n"}}
	if token != "" {
		c.Header += "Authorization: Bearer " + token + "\r\n"
	}
	return c
}

func (c *benchConn) close() { c.Close() }

// do sends one request (body: a value sent as JSON, or nil) and decodes a
// 200 answer into out (nil: discard it). A non-200 answer is an
// *transport.APIError.
func (c *benchConn) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	status, msg, err := c.Do(ctx, method, path, payload)
	switch {
	case err != nil:
		return err
	case status != http.StatusOK:
		var eb transport.ErrorBody
		if json.Unmarshal(msg, &eb) == nil && eb.Error.Code != "" {
			return &transport.APIError{Status: status, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &transport.APIError{Status: status, Code: transport.CodeInternal, Message: fmt.Sprintf("%d %s %s", status, http.StatusText(status), bytes.TrimSpace(msg))}
	case out != nil:
		return json.Unmarshal(msg, out)
	}
	return nil
}
