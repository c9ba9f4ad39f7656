package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// forwardToLeader sends a request whose body was read and checked here on to
// the leader.
func (s *Server) forwardToLeader(ctx context.Context, w http.ResponseWriter, r *http.Request, body []byte) {
	s.relay(ctx, w, r, bytes.NewReader(body), int64(len(body)))
}

// forwardStream forwards a request whose body is streamed, not buffered
// (backup uploads).
func (s *Server) forwardStream(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	s.relay(ctx, w, r, r.Body, r.ContentLength)
}

// relay sends the request on to the leader over the Raft port and copies
// its answer back. A request that was already forwarded once is not
// forwarded again: two nodes that disagree about the leader must not bounce
// a request between them.
func (s *Server) relay(ctx context.Context, w http.ResponseWriter, r *http.Request, body io.Reader, length int64) {
	if r.Header.Get(HeaderForwardedBy) != "" {
		writeError(w, CodeUnavailable, "this node received a forwarded request but is not the leader; retry")
		return
	}
	waitCtx, cancel := context.WithTimeout(ctx, s.cfg.LeaderWait)
	leaderID, leaderAddr, err := s.node.WaitLeader(waitCtx)
	cancel()
	if err != nil {
		msg := "no leader is known (election in progress or no quorum): " + err.Error()
		if serr := s.node.StorageError(); serr != nil {
			msg += "; and this node " + serr.Error()
		}
		writeError(w, CodeUnavailable, msg)
		return
	}
	if leaderID == s.node.ID() {
		writeError(w, CodeUnavailable, "leadership is changing; retry")
		return
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+leaderAddr+r.URL.RequestURI(), body)
	if err != nil {
		writeError(w, CodeInternal, err.Error())
		return
	}
	req.ContentLength = length
	for _, h := range []string{"Content-Type", "Authorization", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(HeaderForwardedBy, s.node.ID())
	setPrincipalHeaders(req, r)
	resp, err := s.forward.Do(req)
	if err != nil {
		// Whether a write reached the leader is unknown once the request
		// may have been sent.
		writeError(w, CodeUnknownOutcome, fmt.Sprintf("forwarding to leader %s failed: %v; retry with the same request_id", leaderID, err))
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
