package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// rule forbids packages matching from to depend, directly or transitively, on packages matching
// any of to. A pattern "p/..." matches p and everything below it.
type rule struct {
	from   string
	to     []string
	reason string
}

var rules = []rule{
	{"smartproxy/oftp2/...", []string{"smartproxy/"}, "oftp2 is a library of its own: it imports nothing of this project"},
	{"smartproxy/server/...", []string{"smartproxy/apiclient/...", "smartproxy/backend/...", "smartproxy/client/..."}, "the DMZ never talks to the backend"},
	{"smartproxy/cmd/smartproxy-server", []string{"smartproxy/apiclient/...", "smartproxy/backend/...", "smartproxy/client/..."}, "the DMZ binary never links the backend client"},
	{"smartproxy/backend/...", []string{"smartproxy/apiclient/...", "smartproxy/client/...", "smartproxy/server/..."}, "the backend meets the daemons only through the HTTP API"},
	{"smartproxy/tunnel/...", []string{"smartproxy/server/...", "smartproxy/client/...", "smartproxy/apiclient/...", "smartproxy/backend/..."}, "the tunnel is shared plumbing below both daemons"},
}

// importersOnly lists packages that only the named importers (and their own subpackages and
// tests) may import.
var importersOnly = map[string][]string{
	"smartproxy/apiclient": {"smartproxy/client/...", "smartproxy/cmd/smartproxy-client", "smartproxy/apiclient/...", "smartproxy/e2e/..."},
}

func match(pattern, pkg string) bool {
	if p, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == p || strings.HasPrefix(pkg, p+"/")
	}
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(pkg, pattern)
	}
	return pkg == pattern
}

// list returns, for every package of the module, the module packages it depends on (-deps) and
// those it imports directly.
func list(t *testing.T) (deps, imports map[string][]string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}|{{join .Imports \" \"}}", "smartproxy/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps, imports = map[string][]string{}, map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "|", 3)
		if len(parts) != 3 {
			t.Fatalf("go list line %q", sc.Text())
		}
		own := func(s string) []string {
			var r []string
			for _, p := range strings.Fields(s) {
				if strings.HasPrefix(p, "smartproxy/") {
					r = append(r, p)
				}
			}
			return r
		}
		deps[parts[0]] = own(parts[1])
		imports[parts[0]] = own(parts[2])
	}
	return deps, imports
}

func TestDependencyRules(t *testing.T) {
	deps, imports := list(t)
	// The check must see the project's packages, or it proves nothing.
	for _, want := range []string{"smartproxy/oftp2", "smartproxy/server", "smartproxy/client", "smartproxy/tunnel"} {
		if _, ok := deps[want]; !ok {
			t.Fatalf("go list did not list %s", want)
		}
	}
	for pkg, ds := range deps {
		for _, r := range rules {
			if !match(r.from, pkg) {
				continue
			}
			for _, d := range ds {
				for _, banned := range r.to {
					if match(banned, d) && !match(r.from, d) {
						t.Errorf("%s depends on %s: %s", pkg, d, r.reason)
					}
				}
			}
		}
	}
	for target, allowed := range importersOnly {
		for pkg, is := range imports {
			for _, i := range is {
				if i != target {
					continue
				}
				ok := false
				for _, a := range allowed {
					ok = ok || match(a, pkg)
				}
				if !ok {
					t.Errorf("%s imports %s; only %v may", pkg, target, allowed)
				}
			}
		}
	}
}

// TestTunnelWithoutGRPC: the multiplexer (package tunnel) and the tunnel's
// messages do not depend on gRPC, not even transitively; the gRPC binding is
// tunnel/transport's (see buf.gen.yaml). The transport, which does use gRPC,
// shows that the check sees third-party dependencies at all.
func TestTunnelWithoutGRPC(t *testing.T) {
	for _, tt := range []struct {
		pkg  string
		want bool
	}{
		{"smartproxy/tunnel", false},
		{"smartproxy/gen/smartproxy/tunnel/v1", false},
		{"smartproxy/tunnel/transport", true},
	} {
		cmd := exec.Command("go", "list", "-deps", tt.pkg)
		cmd.Dir = "../.."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", tt.pkg, err)
		}
		got := false
		for _, d := range strings.Fields(string(out)) {
			got = got || match("google.golang.org/grpc/...", d)
		}
		if got != tt.want {
			t.Errorf("%s depends on google.golang.org/grpc: %v, want %v", tt.pkg, got, tt.want)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, pkg string
		want         bool
	}{
		{"smartproxy/server/...", "smartproxy/server", true},
		{"smartproxy/server/...", "smartproxy/server/servertest", true},
		{"smartproxy/server/...", "smartproxy/serverx", false},
		{"smartproxy/", "smartproxy/tunnel", true},
		{"smartproxy/cmd/smartproxy-server", "smartproxy/cmd/smartproxy-server", true},
		{"smartproxy/cmd/smartproxy-server", "smartproxy/cmd/smartproxy-serverx", false},
	}
	for _, tt := range tests {
		if got := match(tt.pattern, tt.pkg); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.pkg, got, tt.want)
		}
	}
}
