package rawhttp

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDoKeepsTheConnectionAndReconnects(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("close") != "" {
			w.Header().Set("Connection", "close")
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+r.Header.Get("X-Test")+" "+string(body))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c := &Conn{Addr: srv.Listener.Addr().String(), Header: "X-Test: yes\r\n", Timeout: 5 * time.Second}
	defer c.Close()
	ctx := context.Background()
	for i, tc := range []struct {
		method, path string
		body         []byte
		want         string
		conns        int32
	}{
		{"POST", "/a", []byte(`{"x":1}`), `POST /a application/json yes {"x":1}`, 1},
		{"GET", "/b", nil, "GET /b  yes ", 1}, // same connection
		{"PUT", "/c?close=1", []byte(`{}`), "PUT /c application/json yes {}", 1},
		{"GET", "/d", nil, "GET /d  yes ", 2}, // the server closed it: dialled again
	} {
		status, body, err := c.Do(ctx, tc.method, tc.path, tc.body)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if status != http.StatusCreated || string(body) != tc.want {
			t.Fatalf("request %d: got %d %q, want 201 %q", i, status, body, tc.want)
		}
		if n := conns.Load(); n != tc.conns {
			t.Fatalf("request %d: %d connections, want %d", i, n, tc.conns)
		}
	}
}

func TestDoStopsWhenTheContextEnds(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)

	c := &Conn{Addr: srv.Listener.Addr().String(), Timeout: time.Minute}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, _, err := c.Do(ctx, "GET", "/slow", nil)
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("got %v, want a timeout error once the context ended", err)
	}
	if c.conn != nil {
		t.Fatal("the broken connection was kept")
	}
}
