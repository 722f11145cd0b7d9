// Package scripts holds tests of the repository's shell scripts.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// findBuf returns the pinned buf (`make tools` puts it into ./bin) or fails or skips the test
// when it is missing; CI sets SMARTPROXY_REQUIRE_BUF=1 to make a missing buf a failure.
func findBuf(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs(filepath.Join("..", "bin", "buf")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("buf"); err == nil {
		return p
	}
	msg := "buf is not installed (make tools)"
	if os.Getenv("SMARTPROXY_REQUIRE_BUF") == "1" {
		t.Fatal(msg + "; SMARTPROXY_REQUIRE_BUF=1 makes this a failure")
	}
	t.Skip(msg)
	return ""
}

// TestBreaking runs scripts/breaking.sh in a temporary repository holding a copy of buf.yaml and
// proto/: a compatible change passes, a field removed or renumbered fails — against the commit
// before HEAD and, once a release tag exists, against the tag even when later commits follow.
func TestBreaking(t *testing.T) {
	buf := findBuf(t)
	script, err := filepath.Abs("breaking.sh")
	if err != nil {
		t.Fatal(err)
	}
	proto := filepath.Join("proto", "smartproxy", "tunnel", "v1", "tunnel.proto")
	original, err := os.ReadFile(filepath.Join("..", proto))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	write := func(rel string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(msg string) { t.Helper(); git("add", "-A"); git("commit", "-q", "-m", msg) }
	run := func() (string, error) {
		cmd := exec.Command("bash", script, dir)
		cmd.Env = append(os.Environ(), "BUF="+buf)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// change replaces old by new in the working copy of tunnel.proto; old must be present.
	change := func(from, old, new string) []byte {
		t.Helper()
		if !strings.Contains(from, old) {
			t.Fatalf("tunnel.proto no longer contains %q: adjust the test", old)
		}
		return []byte(strings.Replace(from, old, new, 1))
	}

	git("init", "-q")
	if out, err := run(); err != nil || !strings.Contains(out, "nothing to compare") {
		t.Fatalf("breaking.sh in an empty repository: %v, want success with nothing to compare\n%s", err, out)
	}
	buildYAML, err := os.ReadFile(filepath.Join("..", "buf.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	write("buf.yaml", buildYAML)
	err = filepath.WalkDir(filepath.Join("..", "proto"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		write(strings.TrimPrefix(p, ".."+string(filepath.Separator)), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	commit("contracts as in this tree")
	if out, err := run(); err != nil || !strings.Contains(out, "nothing to compare") {
		t.Fatalf("breaking.sh on the first commit: %v, want success with nothing to compare\n%s", err, out)
	}

	// A compatible change: a new field.
	compatible := change(string(original), "message Route {\n", "message Route {\n  // A field added for the test.\n  string test_only_note = 99;\n")
	write(proto, compatible)
	commit("compatible: a field added")
	if out, err := run(); err != nil || !strings.Contains(out, "against commit") {
		t.Fatalf("breaking.sh after a compatible change: %v, want success against the previous commit\n%s", err, out)
	}
	git("tag", "v0.1.0")

	// A breaking change: a field renumbered.
	broken := change(string(compatible), "string listen_address = 2;", "string listen_address = 12;")
	write(proto, broken)
	commit("breaking: a field renumbered")
	if out, err := run(); err == nil || !strings.Contains(out, "listen_address") {
		t.Fatalf("breaking.sh after renumbering a field: %v, want a failure naming listen_address\n%s", err, out)
	}

	// A harmless commit on top: the comparison is against the release tag, so the break is
	// still found.
	write("README", []byte("later\n"))
	commit("unrelated")
	if out, err := run(); err == nil || !strings.Contains(out, "release v0.1.0") || !strings.Contains(out, "listen_address") {
		t.Fatalf("breaking.sh one commit after the break: %v, want a failure against release v0.1.0\n%s", err, out)
	}
}
