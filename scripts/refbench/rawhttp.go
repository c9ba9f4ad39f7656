package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// rawHTTPClient is one load client's keep-alive HTTP/1.1 connection with
// the request written by hand and the answer read with http.ReadResponse:
// the kind of client `reconfctl bench` uses, so that a reference server and
// reconf are driven at the same cost to the machine they share. (net/http's
// client spends several times more CPU per request.)
type rawHTTPClient struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

// put sends PUT path with body and reads the answer, which must be 200.
func (c *rawHTTPClient) put(path string, body []byte) error {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 2*time.Second)
		if err != nil {
			return err
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 4096)
	}
	b := append(c.buf[:0], "PUT "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.addr...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	c.buf = b
	_ = c.conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		c.close()
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return err
	}
	msg, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close()
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return err
}

func (c *rawHTTPClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
