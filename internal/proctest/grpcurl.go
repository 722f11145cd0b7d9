package proctest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Grpcurl returns the path of grpcurl: the repository's bin/ (make tools), then PATH. Without
// it the test is skipped, unless SMARTPROXY_REQUIRE_GRPCURL=1 (as in CI), which makes it fail.
func Grpcurl(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			p := filepath.Join(d, "bin", "grpcurl")
			if _, err := os.Stat(p); err == nil {
				return p
			}
			break
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	msg := "grpcurl not found in ./bin or PATH (run `make tools`)"
	if os.Getenv("SMARTPROXY_REQUIRE_GRPCURL") == "1" {
		t.Fatal(msg + "; SMARTPROXY_REQUIRE_GRPCURL=1 makes this a failure")
	}
	t.Skip(msg)
	return ""
}

// RunGrpcurl runs grpcurl (bin, from Grpcurl) with args under DefaultTimeout and returns its
// combined output.
func RunGrpcurl(t testing.TB, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-max-time", "20"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}
