package transport

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Who may do what on the API.
//
// A node authenticates every API request when auth is on (a token file, or
// TLS client certificates, or both) and authorizes it by route: reads need
// the read role, writes the write role, and cluster and capability changes
// the admin role (requiredRole). /healthz and /readyz stay open.
//
// Principals, strongest proof first:
//   - a bearer token from --token-file: its role; named "token:<first 8
//     hex digits of sha256(token)>" so that logs never carry the token;
//   - the cluster token (--cluster-token) as a bearer token: admin, named
//     "cluster"; nodes present it when they join a cluster without TLS;
//   - a TLS client certificate of a node (one valid for server and client
//     auth, as `reconfctl tls cert create --node` makes): admin, named
//     "node:<CN>". A node's certificate can speak Raft to its peers, so the
//     API grants it nothing more;
//   - any other verified TLS client certificate: admin, named "cert:<CN>",
//     but only when no token file is configured (then the certificate is the
//     credential); with a token file, operators need a token as well.
//
// Requests that arrive over the Raft port were forwarded by a peer, which is
// authenticated by the port itself (mutual TLS or the cluster token, see
// peerauth.go). The leader authorizes them again: by their bearer token when
// they carry one, else by the principal the forwarding peer vouches for in
// X-Reconf-Principal and X-Reconf-Role. A request from a peer on its own
// behalf (membership probes) carries neither and is the peer's own: admin.

// Role is what a principal may do.
type Role uint8

// Roles, weakest first: each includes the ones before it.
const (
	RoleNone Role = iota
	RoleRead
	RoleWrite
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads read, write or admin.
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q: want read, write or admin", s)
}

// Principal is who sent a request, as far as this node could tell.
type Principal struct {
	Name string // token:1a2b3c4d, cluster, node:n2, cert:alice, anonymous
	Role Role
}

func (p Principal) String() string { return p.Name + "/" + p.Role.String() }

var anonymous = Principal{Name: "anonymous", Role: RoleAdmin}

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal a request was authenticated as
// ("anonymous" when auth is off).
func PrincipalFrom(ctx context.Context) Principal {
	if p, ok := ctx.Value(principalKey{}).(Principal); ok {
		return p
	}
	return anonymous
}

// TokenFingerprint is how logs name a token: the first 8 hex digits of its
// SHA-256.
func TokenFingerprint(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:4])
}

// ---- token file ----

// Token file limits.
const (
	MinTokenBytes     = 16
	MaxTokenBytes     = 512
	maxTokenFileBytes = 1 << 20
)

type tokenEntry struct {
	hash [sha256.Size]byte
	role Role
	name string
	line int
}

// TokenSet is a parsed token file. Lookups compare against every entry in
// constant time.
type TokenSet struct {
	entries []tokenEntry
}

// Len is the number of tokens.
func (ts *TokenSet) Len() int { return len(ts.entries) }

// Roles counts the tokens of each role, for logs.
func (ts *TokenSet) Roles() map[string]int {
	out := map[string]int{}
	for _, e := range ts.entries {
		out[e.role.String()]++
	}
	return out
}

// Lookup finds the principal of a bearer token. It hashes the token and
// compares the hash with every configured one using crypto/subtle, without
// stopping at a match, so neither the position of a match nor the length of
// a token shows in the time it takes.
func (ts *TokenSet) Lookup(token string) (Principal, bool) {
	if ts == nil {
		return Principal{}, false
	}
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range ts.entries {
		eq := subtle.ConstantTimeCompare(h[:], ts.entries[i].hash[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return Principal{}, false
	}
	e := ts.entries[found]
	return Principal{Name: e.name, Role: e.role}, true
}

// TokenFileError is a problem on one line of a token file.
type TokenFileError struct {
	Line int
	Msg  string
}

func (e *TokenFileError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseTokens reads a token file: one "TOKEN ROLE" per line, where ROLE is
// read, write or admin; blank lines and lines starting with # are ignored,
// and a # field after the role starts a comment. A token is 16 to 512
// printable ASCII characters without spaces and must not start with #.
// Errors name the line and never echo a token.
func ParseTokens(r io.Reader) (*TokenSet, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxTokenFileBytes+1))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	ts := &TokenSet{}
	seen := map[[sha256.Size]byte]int{}
	read, line := 0, 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		read += len(raw) + 1
		if read > maxTokenFileBytes {
			return nil, &TokenFileError{line, fmt.Sprintf("the file is larger than %d bytes", maxTokenFileBytes)}
		}
		text := strings.TrimRight(string(raw), "\r")
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff")
		}
		fields := strings.Fields(text)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 2 {
			return nil, &TokenFileError{line, `want "TOKEN ROLE" (role read, write or admin), found one field`}
		}
		if len(fields) > 2 && !strings.HasPrefix(fields[2], "#") {
			return nil, &TokenFileError{line, fmt.Sprintf(`want "TOKEN ROLE", found %d fields (a comment after the role starts with #)`, len(fields))}
		}
		tok, roleText := fields[0], fields[1]
		if err := checkToken(tok); err != nil {
			return nil, &TokenFileError{line, err.Error()}
		}
		role, err := ParseRole(roleText)
		if err != nil {
			return nil, &TokenFileError{line, err.Error()}
		}
		h := sha256.Sum256([]byte(tok))
		if prev, dup := seen[h]; dup {
			return nil, &TokenFileError{line, fmt.Sprintf("the same token as line %d", prev)}
		}
		seen[h] = line
		ts.entries = append(ts.entries, tokenEntry{hash: h, role: role, name: "token:" + hex.EncodeToString(h[:4]), line: line})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &TokenFileError{line + 1, "line is longer than 64 KiB"}
		}
		return nil, err
	}
	if len(ts.entries) == 0 {
		return nil, errors.New("no tokens: a token file needs at least one \"TOKEN ROLE\" line (an empty file would lock every client out)")
	}
	return ts, nil
}

func checkToken(tok string) error {
	if len(tok) < MinTokenBytes {
		return fmt.Errorf("token is %d characters; use at least %d (e.g. openssl rand -hex 32)", len(tok), MinTokenBytes)
	}
	if len(tok) > MaxTokenBytes {
		return fmt.Errorf("token is %d characters; the limit is %d", len(tok), MaxTokenBytes)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("token has a byte 0x%02x at offset %d; tokens are printable ASCII without spaces", c, i)
		}
	}
	return nil
}

// LoadTokenFile reads and parses a token file.
func LoadTokenFile(path string) (*TokenSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	ts, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	return ts, nil
}

// ---- the authenticator ----

// AuthConfig says how a node authenticates API requests.
type AuthConfig struct {
	// TokenFile enables bearer tokens with roles; empty: none.
	TokenFile string
	// ClusterToken is the shared secret of the cluster's nodes; as a bearer
	// token it is an admin principal ("cluster"). Empty: none.
	ClusterToken string
	// ClientCerts: the API verifies TLS client certificates (mutual TLS), so
	// a verified certificate names a principal.
	ClientCerts bool
}

// Auth authenticates and authorizes API requests. The zero value and nil
// allow everything (auth off).
type Auth struct {
	cfg     AuthConfig
	tokens  atomic.Pointer[TokenSet]
	cluster [sha256.Size]byte

	changedMu sync.Mutex
	changed   chan struct{} // closed and replaced on every reload
}

// NewAuth loads the token file, if any.
func NewAuth(cfg AuthConfig) (*Auth, error) {
	a := &Auth{cfg: cfg}
	if cfg.ClusterToken != "" {
		if err := checkToken(cfg.ClusterToken); err != nil {
			return nil, fmt.Errorf("cluster token: %v", err)
		}
		a.cluster = sha256.Sum256([]byte(cfg.ClusterToken))
	}
	if cfg.TokenFile != "" {
		ts, err := LoadTokenFile(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		a.tokens.Store(ts)
	}
	return a, nil
}

// Enabled reports whether requests are authenticated at all.
func (a *Auth) Enabled() bool {
	return a != nil && (a.cfg.TokenFile != "" || a.cfg.ClientCerts)
}

// Tokens is the token set in use (nil without a token file).
func (a *Auth) Tokens() *TokenSet {
	if a == nil {
		return nil
	}
	return a.tokens.Load()
}

// ReloadTokens re-reads the token file. On any error the tokens in use
// stay, and the error says why the new file was refused.
func (a *Auth) ReloadTokens() (*TokenSet, error) {
	if a == nil || a.cfg.TokenFile == "" {
		return nil, errors.New("no token file is configured")
	}
	ts, err := LoadTokenFile(a.cfg.TokenFile)
	if err != nil {
		return nil, err
	}
	a.tokens.Store(ts)
	a.changedMu.Lock()
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
	a.changedMu.Unlock()
	return ts, nil
}

// Changed is closed at the next token reload, so that long requests
// (watches) check their credentials again; nil without auth.
func (a *Auth) Changed() <-chan struct{} {
	if a == nil {
		return nil
	}
	a.changedMu.Lock()
	defer a.changedMu.Unlock()
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return a.changed
}

// authError is a refused authentication (401) or authorization (403).
type authError struct {
	code string
	msg  string
}

// authenticate finds the principal of a request. viaPeer: it arrived over
// the (peer-authenticated) Raft port.
func (a *Auth) authenticate(r *http.Request, viaPeer bool) (Principal, *authError) {
	if !a.Enabled() {
		return anonymous, nil
	}
	if tok, ok, bad := bearerToken(r); bad != "" {
		return Principal{}, &authError{CodeUnauthorized, bad}
	} else if ok {
		if a.cfg.ClusterToken != "" {
			h := sha256.Sum256([]byte(tok))
			if subtle.ConstantTimeCompare(h[:], a.cluster[:]) == 1 {
				return Principal{Name: "cluster", Role: RoleAdmin}, nil
			}
		}
		if ts := a.tokens.Load(); ts != nil {
			if p, ok := ts.Lookup(tok); ok {
				return p, nil
			}
			return Principal{}, &authError{CodeUnauthorized, "the bearer token is not valid on this node"}
		}
		// Certificates are the credential here; a token adds nothing.
	}
	if viaPeer {
		if name := r.Header.Get(HeaderPrincipal); name != "" {
			role, err := ParseRole(r.Header.Get(HeaderPrincipalRole))
			if err != nil {
				return Principal{}, &authError{CodeUnauthorized, "forwarded request: " + err.Error()}
			}
			return Principal{Name: name, Role: role}, nil
		}
		return Principal{Name: "peer:" + r.Header.Get(HeaderForwardedBy), Role: RoleAdmin}, nil
	}
	if leaf := verifiedLeaf(r); leaf != nil {
		if isNodeCert(leaf) {
			return Principal{Name: "node:" + leaf.Subject.CommonName, Role: RoleAdmin}, nil
		}
		if a.tokens.Load() == nil {
			return Principal{Name: "cert:" + leaf.Subject.CommonName, Role: RoleAdmin}, nil
		}
	}
	if a.tokens.Load() != nil {
		return Principal{}, &authError{CodeUnauthorized, "a bearer token is required (reconfctl --token or RECONF_TOKEN; header Authorization: Bearer <token>)"}
	}
	return Principal{}, &authError{CodeUnauthorized, "a TLS client certificate signed by the cluster's CA is required"}
}

// bearerToken reads "Authorization: Bearer <token>". bad is set when the
// header is there but not a bearer token.
func bearerToken(r *http.Request) (tok string, ok bool, bad string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, ""
	}
	scheme, rest, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false, `the Authorization header must be "Bearer <token>"`
	}
	tok = strings.TrimSpace(rest)
	if tok == "" {
		return "", false, "the bearer token is empty"
	}
	return tok, true, ""
}

func verifiedLeaf(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// requiredRoles maps every route pattern of routes() to the role it needs.
// A pattern missing here needs admin (fail closed); the table-driven auth
// test walks every route of the API.
var requiredRoles = map[string]Role{
	"POST /v1/bundles":                                     RoleWrite,
	"GET /v1/bundles":                                      RoleRead,
	"POST /v1/bundles/link":                                RoleWrite,
	"GET /v1/bundles/{id}":                                 RoleRead,
	"POST /v1/footprints/{authority}/sessions":             RoleWrite,
	"DELETE /v1/footprints/{authority}/sessions/{session}": RoleWrite,
	"GET /v1/footprints/{authority}":                       RoleRead,
	"POST /v1/delegations":                                 RoleWrite,
	"POST /v1/batch":                                       RoleWrite, // each operation also needs its own route's role (batch.go)
	"POST /v1/sessions":                                    RoleWrite,
	"GET /v1/sessions/{id}":                                RoleRead,
	"POST /v1/sessions/{id}/handoff":                       RoleWrite,
	"GET /v1/coherence":                                    RoleRead,
	"PUT /v1/upgrades/{bundle}/membership":                 RoleWrite,
	"GET /v1/upgrades/{bundle}":                            RoleRead,
	"POST /v1/upgrades/{bundle}/execute":                   RoleWrite,
	"GET /v1/facts":                                        RoleRead,
	"GET /v1/facts/watch":                                  RoleRead,
	"GET /v1/capabilities":                                 RoleRead,
	"PUT /v1/capabilities":                                 RoleAdmin,
	"GET /v1/cluster/status":                               RoleRead,
	"POST /v1/cluster/join":                                RoleAdmin,
	"POST /v1/cluster/remove":                              RoleAdmin,
	"POST /v1/cluster/transfer-leadership":                 RoleAdmin,
	"POST /v1/cluster/snapshot":                            RoleAdmin,
	"GET /v1/cluster/backup":                               RoleAdmin,
	"POST /v1/cluster/restore":                             RoleAdmin,
	"GET /v1/cluster/digest":                               RoleRead,
	"GET /v1/internal/node":                                RoleRead,
	"POST /v1/cluster/check":                               RoleAdmin,
	"GET /v1/internal/check/{index}":                       RoleRead,
	"POST /v1/internal/consistency":                        RoleAdmin, // and only over the Raft port
	"GET /healthz":                                         RoleNone,
	"GET /readyz":                                          RoleNone,
	"GET /metrics":                                         RoleRead,
}

// requiredRole is the role a request needs, by the route pattern the
// server's mux picks for it (so path tricks cannot pick a weaker rule).
// Requests no route matches get a 404 or a redirect, and need read (GET,
// HEAD) or write.
func (s *Server) requiredRole(r *http.Request) Role {
	_, pattern := s.mux.Handler(r)
	if role, ok := requiredRoles[pattern]; ok {
		return role
	}
	if pattern == "" || pattern == "/" {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return RoleRead
		}
		return RoleWrite
	}
	return RoleAdmin
}

type viaPeerKey struct{}

// authorize wraps the API: it authenticates each request, checks its role
// against the route, and puts the principal in the request's context.
func (s *Server) authorize(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := s.requiredRole(r)
		if need == RoleNone {
			h.ServeHTTP(w, r)
			return
		}
		viaPeer, _ := r.Context().Value(viaPeerKey{}).(bool)
		// Principal headers are believed only from an authenticated peer.
		viaPeer = viaPeer && (s.cfg.Mux == nil || s.cfg.Mux.PeersAuthenticated() || !s.cfg.Auth.Enabled())
		p, aerr := s.cfg.Auth.authenticate(r, viaPeer)
		if aerr == nil && p.Role < need {
			aerr = &authError{CodeForbidden, fmt.Sprintf("%s %s needs the %s role; %s has %s", r.Method, r.URL.Path, need, p.Name, p.Role)}
		}
		if aerr != nil {
			s.metrics.authDenied(aerr.code)
			s.logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "code", aerr.code, "reason", aerr.msg)
			if aerr.code == CodeUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="reconf"`)
			}
			// No keep-alive for a client without valid credentials, and
			// no waiting for a body it may never send (limits.go).
			w.Header().Set("Connection", "close")
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			writeError(w, aerr.code, aerr.msg)
			return
		}
		h.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// setPrincipalHeaders makes a forwarded request carry the principal this
// node authenticated, for the leader's authorization and logs.
func setPrincipalHeaders(out, in *http.Request) {
	p := PrincipalFrom(in.Context())
	out.Header.Set(HeaderPrincipal, p.Name)
	out.Header.Set(HeaderPrincipalRole, p.Role.String())
}

// Headers between nodes: the principal a forwarding node authenticated.
const (
	HeaderPrincipal     = "X-Reconf-Principal"
	HeaderPrincipalRole = "X-Reconf-Role"
)

// logChange logs a change this node made, with who asked for it.
func (s *Server) logChange(r *http.Request, msg string, args ...any) {
	s.logger.Info(msg, append(args, "principal", PrincipalFrom(r.Context()).String())...)
}
