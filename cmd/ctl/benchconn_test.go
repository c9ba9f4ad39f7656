package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/reconf/reconf/transport"
)

// A bench client decodes 200 answers and turns others into typed API errors,
// sending its token with every request.
func TestBenchConnAnswersAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"index":7}` + "\n"))
		case "/typed":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":{"code":"session_not_owned","message":"not yours"}}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("upstream gone\n"))
		}
	}))
	defer srv.Close()
	c := newBenchConn(srv.Listener.Addr().String(), nil, "tok", 5*time.Second)
	defer c.close()
	ctx := context.Background()

	var out transport.IndexResponse
	if err := c.do(ctx, http.MethodPost, "/ok", map[string]int{"a": 1}, &out); err != nil || out.Index != 7 {
		t.Fatalf("ok: %v, %+v", err, out)
	}
	var apiErr *transport.APIError
	if err := c.do(ctx, http.MethodGet, "/typed", nil, nil); !errors.As(err, &apiErr) || apiErr.Status != 409 || apiErr.Code != "session_not_owned" || apiErr.Message != "not yours" {
		t.Fatalf("typed: %v", err)
	}
	if err := c.do(ctx, http.MethodGet, "/other", nil, nil); !errors.As(err, &apiErr) || apiErr.Status != 502 || apiErr.Code != transport.CodeInternal || apiErr.Message != "502 Bad Gateway upstream gone" {
		t.Fatalf("untyped: %v", err)
	}
}
