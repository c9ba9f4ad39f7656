package transport

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

const (
	tokRead    = "read-token-aaaaaaaaaaaa"
	tokWrite   = "write-token-bbbbbbbbbbb"
	tokAdmin   = "admin-token-ccccccccccc"
	tokCluster = "cluster-token-ddddddddd"
)

func writeTokens(t testing.TB, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "tokens")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var baseTokens = "# reconf tokens\n" + tokRead + " read\n\n" + tokWrite + " write  # the app\n" + tokAdmin + " admin\n"

func TestParseTokens(t *testing.T) {
	good := []struct {
		name, file string
		want       map[string]Role
	}{
		{"roles, comments, blank lines", baseTokens, map[string]Role{tokRead: RoleRead, tokWrite: RoleWrite, tokAdmin: RoleAdmin}},
		{"CRLF, BOM, tabs, indented comment", "\ufeff" + tokRead + "\tread\r\n   # x\r\n\t" + tokAdmin + "   admin\r\n", map[string]Role{tokRead: RoleRead, tokAdmin: RoleAdmin}},
		{"no final newline", tokWrite + " write", map[string]Role{tokWrite: RoleWrite}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := ParseTokens(strings.NewReader(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if ts.Len() != len(tc.want) {
				t.Fatalf("%d tokens, want %d", ts.Len(), len(tc.want))
			}
			for tok, role := range tc.want {
				p, ok := ts.Lookup(tok)
				if !ok || p.Role != role || p.Name != "token:"+TokenFingerprint(tok) {
					t.Errorf("Lookup(%s) = %v, %v; want role %s", tok, p, ok, role)
				}
				for _, near := range []string{tok[:len(tok)-1], tok + "x", strings.ToUpper(tok), " " + tok} {
					if _, ok := ts.Lookup(near); ok {
						t.Errorf("Lookup(%q) matched", near)
					}
				}
			}
			if _, ok := ts.Lookup(""); ok {
				t.Error("the empty token matched")
			}
		})
	}
	bad := []struct {
		name, file, want string
	}{
		{"one field", baseTokens + tokCluster + "\n", "line 6: want \"TOKEN ROLE\""},
		{"unknown role", "# c\n" + tokCluster + " root\n", `line 2: unknown role "root"`},
		{"role in capitals", tokCluster + " Admin\n", `line 1: unknown role "Admin"`},
		{"three fields", tokCluster + " read extra\n", "line 1: want \"TOKEN ROLE\", found 3 fields"},
		{"short token", "shorty read\n", "line 1: token is 6 characters; use at least 16"},
		{"long token", strings.Repeat("x", MaxTokenBytes+1) + " read\n", "line 1: token is 513 characters"},
		{"non-ASCII token", "tøken-0123456789abcdef read\n", "line 1: token has a byte 0xc3"},
		{"duplicate", tokRead + " read\n" + tokRead + " admin\n", "line 2: the same token as line 1"},
		{"empty", "# nothing\n\n", "no tokens"},
		{"long line", strings.Repeat("y", 70000) + " read\n", "line 1: line is longer than 64 KiB"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTokens(strings.NewReader(tc.file))
			if err == nil {
				t.Fatal("parsed")
			}
			mustContain(t, "error", err.Error(), tc.want)
			for _, tok := range []string{tokRead, tokCluster, "tøken-0123456789abcdef"} {
				if strings.Contains(err.Error(), tok) {
					t.Errorf("the error %q shows a token", err)
				}
			}
		})
	}
}

// The reload keeps the tokens in use when the new file is bad.
func TestReloadTokens(t *testing.T) {
	dir := t.TempDir()
	path := writeTokens(t, dir, baseTokens)
	a, err := NewAuth(AuthConfig{TokenFile: path})
	if err != nil {
		t.Fatal(err)
	}
	role := func(tok string) Role {
		p, ok := a.Tokens().Lookup(tok)
		if !ok {
			return RoleNone
		}
		return p.Role
	}
	if role(tokAdmin) != RoleAdmin || role(tokCluster) != RoleNone {
		t.Fatal("initial tokens wrong")
	}
	writeTokens(t, dir, tokRead+" read\n"+tokCluster+" write\n")
	if _, err := a.ReloadTokens(); err != nil {
		t.Fatal(err)
	}
	if role(tokAdmin) != RoleNone || role(tokCluster) != RoleWrite || role(tokRead) != RoleRead {
		t.Fatal("reload did not replace the tokens")
	}
	writeTokens(t, dir, tokAdmin+" admin\nbroken\n")
	_, err = a.ReloadTokens()
	if err == nil {
		t.Fatal("a bad file was accepted")
	}
	mustContain(t, "reload error", err.Error(), "line 2")
	if role(tokAdmin) != RoleNone || role(tokCluster) != RoleWrite {
		t.Fatal("a failed reload changed the tokens in use")
	}
	os.Remove(path)
	if _, err := a.ReloadTokens(); err == nil || role(tokCluster) != RoleWrite {
		t.Fatalf("a missing file: err %v; tokens kept: %v", err, role(tokCluster) == RoleWrite)
	}
}

// routePatterns reads the route patterns registered in routes.go, so that
// a new route without an entry in requiredRoles fails this test.
func routePatterns(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("routes.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`m\.Handle(?:Func)?\("([A-Z]+ [^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		out = append(out, m[1])
	}
	for _, o := range writeOps { // registered in a loop (writeops.go)
		out = append(out, o.route())
	}
	if len(out) < 25 {
		t.Fatalf("found only %d route patterns in routes.go: %v", len(out), out)
	}
	return out
}

// Every route, for every role: what it may do and what it is refused, on a
// node with a token file.
func TestRolesPerRoute(t *testing.T) {
	dir := t.TempDir()
	n := startSecNode(t, "r1", secOpts{bootstrap: true, tokenFile: writeTokens(t, dir, baseTokens), clusterToken: tokCluster})
	n.waitLeading()

	auth := "authority-" + secNewUUID()
	sess := "session-" + secNewUUID()
	routes := []struct {
		method, path string
		body         any
		need         Role
	}{
		{"POST", "/v1/bundles", map[string]any{}, RoleWrite},
		{"GET", "/v1/bundles", nil, RoleRead},
		{"POST", "/v1/bundles/link", map[string]any{}, RoleWrite},
		{"GET", "/v1/bundles/device_migration", nil, RoleRead},
		{"POST", "/v1/footprints/" + auth + "/sessions", map[string]any{"session_id": sess}, RoleWrite},
		{"DELETE", "/v1/footprints/" + auth + "/sessions/" + sess, nil, RoleWrite},
		{"GET", "/v1/footprints/" + auth, nil, RoleRead},
		{"POST", "/v1/delegations", map[string]any{}, RoleWrite},
		{"POST", "/v1/batch", map[string]any{}, RoleWrite},
		{"POST", "/v1/sessions", map[string]any{}, RoleWrite},
		{"GET", "/v1/sessions/" + sess, nil, RoleRead},
		{"POST", "/v1/sessions/" + sess + "/handoff", map[string]any{}, RoleWrite},
		{"GET", "/v1/coherence", nil, RoleRead},
		{"PUT", "/v1/upgrades/device_migration/membership", map[string]any{}, RoleWrite},
		{"GET", "/v1/upgrades/device_migration", nil, RoleRead},
		{"POST", "/v1/upgrades/device_migration/execute", map[string]any{}, RoleWrite},
		{"GET", "/v1/facts", nil, RoleRead},
		{"GET", "/v1/facts/watch", nil, RoleRead},
		{"GET", "/v1/capabilities", nil, RoleRead},
		{"PUT", "/v1/capabilities", map[string]any{}, RoleAdmin},
		{"GET", "/v1/cluster/status", nil, RoleRead},
		{"POST", "/v1/cluster/join", map[string]any{"id": ""}, RoleAdmin},
		{"POST", "/v1/cluster/remove", map[string]any{"id": "nobody"}, RoleAdmin},
		{"POST", "/v1/cluster/transfer-leadership", map[string]any{"id": "nobody"}, RoleAdmin},
		{"POST", "/v1/cluster/snapshot", nil, RoleAdmin},
		{"GET", "/v1/cluster/backup", nil, RoleAdmin},
		{"POST", "/v1/cluster/restore", "not a backup", RoleAdmin},
		{"GET", "/v1/cluster/digest", nil, RoleRead},
		{"GET", "/v1/internal/node", nil, RoleRead},
		{"POST", "/v1/cluster/check", nil, RoleAdmin},
		{"GET", "/v1/internal/check/1", nil, RoleRead},
		{"POST", "/v1/internal/consistency", nil, RoleAdmin},
		{"GET", "/healthz", nil, RoleNone},
		{"GET", "/readyz", nil, RoleNone},
		{"GET", "/metrics", nil, RoleRead},
		{"GET", "/v1/no-such-route", nil, RoleRead},
		{"POST", "/v1/no-such-route", nil, RoleWrite},
	}

	// The table covers every registered route, and every registered route
	// has a role.
	covered := map[string]bool{}
	for _, rt := range routes {
		req, _ := http.NewRequest(rt.method, "http://x"+rt.path, nil)
		_, pattern := n.api.mux.Handler(req)
		covered[pattern] = true
		if want, ok := requiredRoles[pattern]; ok && want != rt.need {
			t.Errorf("%s %s: table says %s, requiredRoles says %s", rt.method, rt.path, rt.need, want)
		}
	}
	var missing []string
	for _, p := range routePatterns(t) {
		if _, ok := requiredRoles[p]; !ok {
			t.Errorf("route %q has no entry in requiredRoles (it would need admin)", p)
		}
		if !covered[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("routes the table does not cover: %v", missing)
	}

	principals := []struct {
		name  string
		token string
		role  Role
		bad   bool
	}{
		{"no token", "", RoleNone, false},
		{"unknown token", "unknown-token-0000000000", RoleNone, true},
		{"read", tokRead, RoleRead, false},
		{"write", tokWrite, RoleWrite, false},
		{"admin", tokAdmin, RoleAdmin, false},
		{"cluster token", tokCluster, RoleAdmin, false},
	}
	for _, rt := range routes {
		for _, p := range principals {
			t.Run(strings.ReplaceAll(rt.method+rt.path, "/", "_")+"/"+p.name, func(t *testing.T) {
				status, e := authProbe(t, n, p.token, rt.method, rt.path, rt.body)
				switch {
				case rt.need == RoleNone:
					if status != http.StatusOK {
						t.Errorf("open route: %d %s", status, e.Code)
					}
				case p.role == RoleNone:
					if status != http.StatusUnauthorized || e.Code != CodeUnauthorized {
						t.Errorf("got %d %s %q; want 401 unauthorized", status, e.Code, e.Message)
					}
				case p.role < rt.need:
					if status != http.StatusForbidden || e.Code != CodeForbidden {
						t.Errorf("got %d %s %q; want 403 forbidden", status, e.Code, e.Message)
					}
					mustContain(t, "403 message", e.Message, "needs the "+rt.need.String()+" role")
				default:
					if status == http.StatusUnauthorized || status == http.StatusForbidden || status < 0 {
						t.Errorf("allowed, but got %d %s %q", status, e.Code, e.Message)
					}
				}
			})
		}
	}
	// Inside a batch each operation needs its own route's role.
	status, e, body := rawDo(t, nil, tokWrite, "POST", n.url("/v1/batch"), map[string]any{"operations": []any{
		map[string]any{"op": "capabilities_set", "request": map[string]any{"reconfiguration": false}},
		map[string]any{"op": "footprint_add", "authority": auth, "request": map[string]any{"session_id": sess}},
	}})
	if status != http.StatusOK || !strings.Contains(string(body), `"forbidden"`) || !strings.Contains(string(body), "needs the admin role") {
		t.Errorf("batch with an admin operation and a write token: %d %v %s", status, e, body)
	}
	// Malformed Authorization headers are refused, not ignored.
	for _, h := range []string{"Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", tokAdmin} {
		req, _ := http.NewRequest("GET", n.url("/v1/bundles"), nil)
		req.Header.Set("Authorization", h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", h, resp.StatusCode)
		}
	}
}

// authProbe sends one request and returns its status and error; streamed
// answers (facts/watch) are cut after the headers.
func authProbe(t *testing.T, n *secNode, token, method, path string, body any) (int, ErrorDetail) {
	t.Helper()
	if path == "/v1/facts/watch" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, n.url(path), nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return 200, ErrorDetail{}
		}
		var eb ErrorBody
		_ = decodeStrict(resp.Body, &eb)
		return resp.StatusCode, eb.Error
	}
	if s, ok := body.(string); ok {
		req, _ := http.NewRequest(method, n.url(path), strings.NewReader(s))
		req.Header.Set("Authorization", "Bearer "+token)
		if token == "" {
			req.Header.Del("Authorization")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb ErrorBody
		_ = decodeStrict(resp.Body, &eb)
		return resp.StatusCode, eb.Error
	}
	status, e, _ := rawDo(t, nil, token, method, n.url(path), body)
	return status, e
}
