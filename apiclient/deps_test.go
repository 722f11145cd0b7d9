package apiclient_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencyRules checks the import rules of the API packages with "go list": the DMZ
// server links neither this package nor the backend, the backend does not link this package,
// and the contract package links no client or server code of the project.
func TestDependencyRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{"smartproxy/cmd/smartproxy-server", []string{"smartproxy/apiclient", "smartproxy/backend"}},
		{"smartproxy/server", []string{"smartproxy/apiclient", "smartproxy/backend"}},
		{"smartproxy/backend", []string{"smartproxy/apiclient", "smartproxy/client", "smartproxy/server"}},
		{"smartproxy/api/apiv1", []string{"smartproxy/apiclient", "smartproxy/backend", "smartproxy/client", "smartproxy/server"}},
	}
	for _, tc := range tests {
		t.Run(tc.pkg, func(t *testing.T) {
			out, err := exec.Command(goTool, "list", "-e", "-deps", "-f", "{{.ImportPath}}", tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list %s: %v", tc.pkg, err)
			}
			deps := strings.Fields(string(out))
			if !slices.Contains(deps, tc.pkg) {
				t.Skipf("%s does not exist (yet)", tc.pkg)
			}
			for _, d := range deps {
				for _, f := range tc.forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s depends on %s", tc.pkg, d)
					}
				}
			}
		})
	}
}
