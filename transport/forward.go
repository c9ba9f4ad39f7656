package transport

import (
	"bytes"
	"context"
	"io"
	"net/http"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// forwardStream forwards a request whose body is streamed, not buffered
// (backup uploads).
func (s *Server) forwardStream(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(HeaderForwardedBy) != "" {
		writeError(w, CodeUnavailable, "this node received a forwarded request but is not the leader; retry")
		return
	}
	_, leaderAddr, err := s.node.WaitLeader(ctx)
	if err != nil {
		writeError(w, CodeUnavailable, "no leader is known: "+err.Error())
		return
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+leaderAddr+r.URL.RequestURI(), r.Body)
	if err != nil {
		writeError(w, CodeInternal, err.Error())
		return
	}
	req.ContentLength = r.ContentLength
	for _, h := range []string{"Content-Type", "Authorization"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(HeaderForwardedBy, s.node.ID())
	resp, err := s.forward.Do(req)
	if err != nil {
		writeError(w, CodeUnknownOutcome, "forwarding to leader failed: "+err.Error())
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
