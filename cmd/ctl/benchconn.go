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
	msg, err := c.doRaw(ctx, method, path, payload)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(msg, out)
}

// doRaw sends one request with a JSON body already encoded (nil: none) and
// returns a 200 answer's body, valid until the next request. A non-200
// answer is an *transport.APIError.
func (c *benchConn) doRaw(ctx context.Context, method, path string, payload []byte) ([]byte, error) {
	status, msg, err := c.Do(ctx, method, path, payload)
	switch {
	case err != nil:
		return nil, err
	case status != http.StatusOK:
		var eb transport.ErrorBody
		if json.Unmarshal(msg, &eb) == nil && eb.Error.Code != "" {
			return nil, &transport.APIError{Status: status, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return nil, &transport.APIError{Status: status, Code: transport.CodeInternal, Message: fmt.Sprintf("%d %s %s", status, http.StatusText(status), bytes.TrimSpace(msg))}
	}
	return msg, nil
}
