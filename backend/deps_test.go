package backend

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRule checks DESIGN.md §2: the reference backend meets the
// proxy client and the DMZ server only through the HTTP contract; it links
// neither of them nor the API client.
func TestDependencyRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "smartproxy/backend/...", "smartproxy/cmd/smartproxy-api").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	seen := map[string]bool{}
	for _, d := range deps {
		seen[d] = true
		for _, banned := range []string{"smartproxy/apiclient", "smartproxy/client", "smartproxy/server"} {
			if d == banned || strings.HasPrefix(d, banned+"/") {
				t.Errorf("the backend depends on %s", d)
			}
		}
	}
	// The check must see the backend's own packages, or it proves nothing.
	for _, want := range []string{"smartproxy/backend", "smartproxy/backend/store", "smartproxy/api/apiv1", "modernc.org/sqlite"} {
		if !seen[want] {
			t.Errorf("go list -deps does not list %s; the dependency check is not looking at the backend", want)
		}
	}
}
