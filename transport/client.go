package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// APIError is an error answer from a node: the HTTP status and the typed
// error body.
type APIError struct {
	Status   int
	Code     string
	Message  string
	FirstSeq uint64 // facts_trimmed: the oldest retained fact
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// IsCode reports whether err is an APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// Client is the Go client of API v1. It tries each address in turn, follows
// the leader a node names, and retries requests that failed for want of a
// leader. Every write carries a request id (one is generated when the caller
// gives none), so a retry after an unknown outcome is applied at most once
// (domain 9.7).
type Client struct {
	addrs  []string
	http   *http.Client
	scheme string

	// Token is sent as a bearer token when set.
	Token string
	// Stale makes reads use ?consistency=stale.
	Stale bool
	// FollowLeader sends requests to the leader once a node names it,
	// saving the forwarding hop. Default true.
	FollowLeader bool
	// RetryFor bounds how long one call keeps retrying; default 15s.
	RetryFor time.Duration

	mu        sync.Mutex
	preferred string
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithTLS makes the client speak HTTPS with this configuration.
func WithTLS(cfg *tls.Config) ClientOption {
	return func(c *Client) {
		c.scheme = "https"
		c.http.Transport.(*http.Transport).TLSClientConfig = cfg
	}
}

// WithHTTPClient replaces the underlying HTTP client.
func WithHTTPClient(h *http.Client) ClientOption { return func(c *Client) { c.http = h } }

// NewClient returns a client for the given API addresses (host:port).
func NewClient(addrs []string, opts ...ClientOption) *Client {
	c := &Client{
		addrs:  append([]string(nil), addrs...),
		scheme: "http",
		http: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}},
		FollowLeader: true,
		RetryFor:     15 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// NewRequestID returns a random request id.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (c *Client) order() []string {
	c.mu.Lock()
	pref := c.preferred
	c.mu.Unlock()
	if pref == "" {
		return c.addrs
	}
	out := []string{pref}
	for _, a := range c.addrs {
		if a != pref {
			out = append(out, a)
		}
	}
	return out
}

func (c *Client) noteLeader(h http.Header) {
	if !c.FollowLeader {
		return
	}
	if l := h.Get(HeaderLeader); l != "" {
		c.mu.Lock()
		c.preferred = l
		c.mu.Unlock()
	}
}

// retryable reports whether an answer means "try again, maybe elsewhere".
func retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code == CodeUnavailable || ae.Code == CodeUnknownOutcome
	}
	return true // transport error: the node may be down
}

// call sends a request, retrying across addresses, and decodes a 200 answer
// into out (when out is not nil).
func (c *Client) call(ctx context.Context, method, path string, body any, out any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = b
	}
	deadline := time.Now().Add(c.RetryFor)
	backoff := 20 * time.Millisecond
	var lastErr error
	for {
		for _, addr := range c.order() {
			resp, err := c.send(ctx, method, addr, path, payload)
			if err == nil {
				noteAnswer(ctx, addr, resp)
				err = c.finish(resp, out)
			}
			if err == nil || !retryable(err) || ctx.Err() != nil {
				return err
			}
			lastErr = err
			if !IsCode(err, CodeUnknownOutcome) && !IsCode(err, CodeUnavailable) {
				c.mu.Lock()
				if c.preferred == addr {
					c.preferred = ""
				}
				c.mu.Unlock()
			}
		}
		if time.Now().After(deadline) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			// The last answer says more than "deadline exceeded" (no
			// leader, connection refused).
			if lastErr == nil {
				return ctx.Err()
			}
			return lastErr
		case <-time.After(jitter(backoff)):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}

// jitter spreads a backoff over [d/2, 3d/2), so that clients that failed
// together (a leader change) do not all retry in the same instant.
func jitter(d time.Duration) time.Duration {
	return d/2 + mrand.N(d)
}

// Call sends any API request with the client's retries and leader
// following, decoding a 200 answer into out (when not nil). For routes the
// typed methods below do not cover, or callers that need the raw answer.
func (c *Client) Call(ctx context.Context, method, path string, body, out any) error {
	return c.call(ctx, method, path, body, out)
}

// CallAt sends one request to one address, without retries: for asking a
// particular node (its digest, its health).
func (c *Client) CallAt(ctx context.Context, addr, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = b
	}
	resp, err := c.send(ctx, method, addr, path, payload)
	if err != nil {
		return err
	}
	noteAnswer(ctx, addr, resp)
	return c.finish(resp, out)
}

// AnswerInfo describes the last answer a call received: where it came
// from and what state it reflects. Callers that need it (a checker that
// judges reads by the index they were served at) ask with WithAnswerInfo.
type AnswerInfo struct {
	Addr        string // the address that answered
	Status      int    // HTTP status
	Index       uint64 // X-Reconf-Index: the applied index the answer reflects; 0 if absent
	Consistency string // X-Reconf-Consistency on reads: linearizable or stale
	Leader      string // X-Reconf-Leader: the leader that confirmed a linearizable read (its HTTP address)
}

type answerInfoKey struct{}

// WithAnswerInfo returns a context under which calls record their answer
// in the returned AnswerInfo (the last one, when a call retried).
func WithAnswerInfo(ctx context.Context) (context.Context, *AnswerInfo) {
	info := &AnswerInfo{}
	return context.WithValue(ctx, answerInfoKey{}, info), info
}

func noteAnswer(ctx context.Context, addr string, resp *http.Response) {
	info, _ := ctx.Value(answerInfoKey{}).(*AnswerInfo)
	if info == nil {
		return
	}
	index, _ := strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64)
	*info = AnswerInfo{Addr: addr, Status: resp.StatusCode, Index: index, Consistency: resp.Header.Get(HeaderConsistency),
		Leader: resp.Header.Get(HeaderLeader)}
}

// Addrs lists the addresses the client was given.
func (c *Client) Addrs() []string { return append([]string(nil), c.addrs...) }

func (c *Client) send(ctx context.Context, method, addr, path string, payload []byte) (*http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.scheme+"://"+addr+path, body)
	if err != nil {
		return nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return c.http.Do(req)
}

func (c *Client) finish(resp *http.Response, out any) error {
	defer resp.Body.Close()
	c.noteLeader(resp.Header)
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, FirstSeq: eb.Error.FirstSeq}
	}
	return &APIError{Status: resp.StatusCode, Code: CodeInternal, Message: strings.TrimSpace(resp.Status + " " + string(b))}
}

func (c *Client) readPath(path string, q url.Values) string {
	if c.Stale {
		if q == nil {
			q = url.Values{}
		}
		q.Set("consistency", "stale")
	}
	if len(q) > 0 {
		return path + "?" + q.Encode()
	}
	return path
}

// writeCall sends a write, giving it a request id first when it has none,
// so that the client's retries are applied exactly once (domain 9.7).
func writeCall[T any](ctx context.Context, c *Client, method, path string, requestID *string, req any) (*T, error) {
	if *requestID == "" {
		*requestID = NewRequestID()
	}
	var out T
	return &out, c.call(ctx, method, path, req, &out)
}

// readCall sends a read, stale when the client says so.
func readCall[T any](ctx context.Context, c *Client, path string) (*T, error) {
	var out T
	return &out, c.call(ctx, http.MethodGet, c.readPath(path, nil), nil, &out)
}

// ---- bundles ----

func (c *Client) RegisterBundle(ctx context.Context, req RegisterBundleRequest) (*BundleResponse, error) {
	return writeCall[BundleResponse](ctx, c, http.MethodPost, "/v1/bundles", &req.RequestID, &req)
}

func (c *Client) LinkBundles(ctx context.Context, req LinkRequest) (*BundleResponse, error) {
	return writeCall[BundleResponse](ctx, c, http.MethodPost, "/v1/bundles/link", &req.RequestID, &req)
}

func (c *Client) ListBundles(ctx context.Context) ([]BundleJSON, error) {
	var out struct {
		Bundles []BundleJSON `json:"bundles"`
	}
	// The call fills out, so it runs before out.Bundles is read (in
	// "return out.X, f()" Go leaves that order unspecified).
	err := c.call(ctx, http.MethodGet, c.readPath("/v1/bundles", nil), nil, &out)
	return out.Bundles, err
}

func (c *Client) ShowBundle(ctx context.Context, id string) (*BundleJSON, error) {
	return readCall[BundleJSON](ctx, c, "/v1/bundles/"+url.PathEscape(id))
}

// ---- footprints ----

func (c *Client) AddFootprint(ctx context.Context, authority string, req FootprintAddRequest) (*IndexResponse, error) {
	return writeCall[IndexResponse](ctx, c, http.MethodPost, "/v1/footprints/"+url.PathEscape(authority)+"/sessions", &req.RequestID, &req)
}

func (c *Client) RemoveFootprint(ctx context.Context, authority, session string) (*IndexResponse, error) {
	var out IndexResponse
	q := url.Values{"request_id": {NewRequestID()}}
	return &out, c.call(ctx, http.MethodDelete, "/v1/footprints/"+url.PathEscape(authority)+"/sessions/"+url.PathEscape(session)+"?"+q.Encode(), nil, &out)
}

func (c *Client) ShowFootprint(ctx context.Context, authority string) (*AuthorityFootprint, error) {
	return readCall[AuthorityFootprint](ctx, c, "/v1/footprints/"+url.PathEscape(authority))
}

// ---- delegation and live sessions ----

func (c *Client) Delegate(ctx context.Context, req DelegationRequest) (*DelegationResponse, error) {
	return writeCall[DelegationResponse](ctx, c, http.MethodPost, "/v1/delegations", &req.RequestID, &req)
}

func (c *Client) OpenSession(ctx context.Context, req OpenSessionRequest) (*LiveSessionJSON, error) {
	return writeCall[LiveSessionJSON](ctx, c, http.MethodPost, "/v1/sessions", &req.RequestID, &req)
}

func (c *Client) ShowSession(ctx context.Context, id string) (*LiveSessionJSON, error) {
	return readCall[LiveSessionJSON](ctx, c, "/v1/sessions/"+url.PathEscape(id))
}

func (c *Client) Handoff(ctx context.Context, session string, req HandoffRequest) (*HandoffResponse, error) {
	return writeCall[HandoffResponse](ctx, c, http.MethodPost, "/v1/sessions/"+url.PathEscape(session)+"/handoff", &req.RequestID, &req)
}

func (c *Client) Coherence(ctx context.Context) (*CoherenceJSON, error) {
	return readCall[CoherenceJSON](ctx, c, "/v1/coherence")
}

// ---- upgrades ----

func (c *Client) SeedMembership(ctx context.Context, bundle string, req MembershipRequest) (*UpgradeSnapshotResponse, error) {
	return writeCall[UpgradeSnapshotResponse](ctx, c, http.MethodPut, "/v1/upgrades/"+url.PathEscape(bundle)+"/membership", &req.RequestID, &req)
}

func (c *Client) ShowUpgrade(ctx context.Context, bundle string) (*UpgradeSnapshotJSON, error) {
	return readCall[UpgradeSnapshotJSON](ctx, c, "/v1/upgrades/"+url.PathEscape(bundle))
}

func (c *Client) ExecuteUpgrade(ctx context.Context, bundle string, req ExecuteUpgradeRequest) (*ExecuteUpgradeResponse, error) {
	return writeCall[ExecuteUpgradeResponse](ctx, c, http.MethodPost, "/v1/upgrades/"+url.PathEscape(bundle)+"/execute", &req.RequestID, &req)
}

// ---- facts ----

func (c *Client) Facts(ctx context.Context, after uint64, limit int) (*FactsResponse, error) {
	q := url.Values{"after": {strconv.FormatUint(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out FactsResponse
	return &out, c.call(ctx, http.MethodGet, c.readPath("/v1/facts", q), nil, &out)
}

// WatchFacts follows the fact journal from after, calling fn for each fact,
// until ctx ends or fn returns an error. It reconnects (to any address) when
// a stream breaks, resuming after the last fact seen.
func (c *Client) WatchFacts(ctx context.Context, after uint64, fn func(FactJSON) error) error {
	for ctx.Err() == nil {
		for _, addr := range c.order() {
			err := c.watchOnce(ctx, addr, &after, fn)
			var stop stopError
			if errors.As(err, &stop) {
				return stop.err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return ctx.Err()
}

type stopError struct{ err error }

func (s stopError) Error() string { return s.err.Error() }

func (c *Client) watchOnce(ctx context.Context, addr string, after *uint64, fn func(FactJSON) error) error {
	resp, err := c.send(ctx, http.MethodGet, addr, "/v1/facts/watch?after="+strconv.FormatUint(*after, 10), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := decodeError(resp)
		if IsCode(err, CodeFactsTrimmed) {
			return stopError{err} // no other node has them either
		}
		return err
	}
	dec := json.NewDecoder(resp.Body)
	for {
		// A line is a fact, or the error that ends the stream
		// (facts_trimmed: the watcher fell behind retention).
		var line struct {
			FactJSON
			Error *ErrorDetail `json:"error"`
		}
		if err := dec.Decode(&line); err != nil {
			return err
		}
		if e := line.Error; e != nil {
			return stopError{&APIError{Status: statusOf(e.Code), Code: e.Code, Message: e.Message, FirstSeq: e.FirstSeq}}
		}
		f := line.FactJSON
		if err := fn(f); err != nil {
			return stopError{err}
		}
		*after = f.Seq
	}
}

// ---- capabilities ----

func (c *Client) Capabilities(ctx context.Context) (bool, error) {
	var out CapabilitiesJSON
	err := c.call(ctx, http.MethodGet, c.readPath("/v1/capabilities", nil), nil, &out)
	return out.Reconfiguration != nil && *out.Reconfiguration, err
}

func (c *Client) SetCapabilities(ctx context.Context, reconfiguration bool) (*CapabilitiesJSON, error) {
	req := CapabilitiesJSON{Reconfiguration: &reconfiguration, RequestID: NewRequestID()}
	var out CapabilitiesJSON
	return &out, c.call(ctx, http.MethodPut, "/v1/capabilities", req, &out)
}

// ---- cluster ----

func (c *Client) Status(ctx context.Context) (*StatusJSON, error) {
	var out StatusJSON
	return &out, c.call(ctx, http.MethodGet, "/v1/cluster/status", nil, &out)
}

// Check runs a replica consistency check (POST /v1/cluster/check).
func (c *Client) Check(ctx context.Context) (*CheckJSON, error) {
	var out CheckJSON
	return &out, c.call(ctx, http.MethodPost, "/v1/cluster/check", nil, &out)
}

func (c *Client) Join(ctx context.Context, req JoinRequest) error {
	return c.call(ctx, http.MethodPost, "/v1/cluster/join", req, nil)
}

func (c *Client) Remove(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodPost, "/v1/cluster/remove", NodeIDRequest{ID: id}, nil)
}

func (c *Client) TransferLeadership(ctx context.Context, id string) (string, error) {
	var out struct {
		Leader string `json:"leader"`
	}
	err := c.call(ctx, http.MethodPost, "/v1/cluster/transfer-leadership", NodeIDRequest{ID: id}, &out)
	return out.Leader, err
}

func (c *Client) Snapshot(ctx context.Context) (uint64, error) {
	var out struct {
		Index uint64 `json:"index"`
	}
	err := c.call(ctx, http.MethodPost, "/v1/cluster/snapshot", struct{}{}, &out)
	return out.Index, err
}

func (c *Client) Digest(ctx context.Context) (*DigestJSON, error) {
	var out DigestJSON
	return &out, c.call(ctx, http.MethodGet, "/v1/cluster/digest", nil, &out)
}

// Backup downloads a backup from the first node that answers into w.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var lastErr error
	for _, addr := range c.order() {
		resp, err := c.send(ctx, http.MethodGet, addr, "/v1/cluster/backup", nil)
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			lastErr = decodeError(resp)
			resp.Body.Close()
			continue
		}
		n, err := io.Copy(w, resp.Body)
		resp.Body.Close()
		return n, err
	}
	return 0, lastErr
}

// Restore uploads a backup; the cluster adopts it. The body is read once, so
// it is sent to one node (which forwards it to the leader).
func (c *Client) Restore(ctx context.Context, r io.Reader) (*DigestJSON, error) {
	addrs := c.order()
	if len(addrs) == 0 {
		return nil, errors.New("no address")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.scheme+"://"+addrs[0]+"/v1/cluster/restore", r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	var out DigestJSON
	if err := c.finish(resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Healthz checks one address's liveness.
func (c *Client) Healthz(ctx context.Context, addr string) error {
	resp, err := c.send(ctx, http.MethodGet, addr, "/healthz", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", addr, resp.Status)
	}
	return nil
}
