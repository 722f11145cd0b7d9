package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRule checks DESIGN.md §2: the DMZ binary never links the backend client, the
// reference backend or the internal client, so that no code path in the DMZ can talk to the
// backend.
func TestDependencyRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %d packages: %q", len(deps), deps)
	}
	seen := map[string]bool{}
	for _, d := range deps {
		seen[d] = true
		for _, banned := range []string{"smartproxy/apiclient", "smartproxy/backend", "smartproxy/client"} {
			if d == banned || strings.HasPrefix(d, banned+"/") {
				t.Errorf("smartproxy-server depends on %s", d)
			}
		}
	}
	// The check must see the project's own packages, or it proves nothing.
	for _, want := range []string{"smartproxy/server", "smartproxy/oftp2", "smartproxy/tunnel/transport"} {
		if !seen[want] {
			t.Errorf("go list -deps does not list %s; the dependency check is not looking at the right binary", want)
		}
	}
}
