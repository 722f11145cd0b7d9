package scripts

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"smartproxy/internal/license/devkey"
)

// TestRelease runs scripts/release.sh for smartproxy-server and smartproxy-license with a
// throwaway production key and checks what the release promises (docs/packaging.md): the version
// and commit in -v, the development key refused with a clear message and a production license
// accepted, the release flags in `go version -m`, and no trace of the development private key
// (package devkey, its PEM text or its seed) in the DMZ binary — while the license tool, built
// the same way, holds all of them, so that the check can fail.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds release binaries")
	}
	const version = "0.2.0"
	dir := t.TempDir()
	dist := filepath.Join(dir, "dist")
	run := func(env []string, name string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	mustRun := func(env []string, name string, args ...string) string {
		t.Helper()
		out, err := run(env, name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}

	// The vendor's production key, as docs/packaging.md says to make it.
	prodKey := filepath.Join(dir, "prod.pem")
	keygen := mustRun(nil, "go", "run", "../cmd/smartproxy-license", "keygen", "--out", prodKey, "--key-id", "prod-test")
	m := regexp.MustCompile(`(?m)^public key:\s+(\S+)$`).FindStringSubmatch(keygen)
	if m == nil {
		t.Fatalf("keygen printed no public key:\n%s", keygen)
	}
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keys, []byte("# throwaway production key\n"+m[1]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Refusals of the script itself.
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, []byte("# no key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, version, keys, want string }{
		{"bad version", "v0.2", keys, "is not x.y.z"},
		{"no key", version, empty, "holds no key"},
	} {
		out, err := run([]string{"VERSION=" + tc.version, "LICENSE_KEYS=" + tc.keys, "DIST=" + dist, "PROGRAMS=./cmd/smartproxy-server"}, "./release.sh")
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("release.sh with %s = %v\n%s, want a failure saying %q", tc.name, err, out, tc.want)
		}
	}

	mustRun([]string{"VERSION=" + version, "LICENSE_KEYS=" + keys, "DIST=" + dist,
		"PROGRAMS=./cmd/smartproxy-server ./cmd/smartproxy-license"}, "./release.sh")
	server := filepath.Join(dist, version, "smartproxy-server")
	tool := filepath.Join(dist, version, "smartproxy-license")

	commit := strings.TrimSpace(mustRun(nil, "git", "rev-parse", "HEAD"))
	if v := mustRun(nil, server, "-v"); !strings.HasPrefix(v, "smartproxy-server "+version+" (commit "+commit) {
		t.Errorf("smartproxy-server -v = %q, want version %s and commit %s", v, version, commit)
	}

	// Licenses for this host: the development one is refused by name, the production one valid.
	proxyID := strings.TrimSpace(mustRun(nil, server, "-L"))
	devLic, prodLic := filepath.Join(dir, "dev.lic"), filepath.Join(dir, "prod.lic")
	issue := []string{"issue", "--proxy-id", proxyID, "--customer", "Release Test", "--days", "30"}
	mustRun(nil, tool, append(issue, "--dev", "--out", devLic)...)
	mustRun(nil, tool, append(issue, "--key", prodKey, "--key-id", "prod-test", "--out", prodLic)...)
	out, err := run(nil, server, "-V", "-l", devLic)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "the development key, which this release build refuses") {
		t.Errorf("smartproxy-server -V (development license) = %v\n%s, want exit status 1 naming the development key", err, out)
	}
	if out, err := run(nil, server, "-V", "-l", prodLic); err != nil || !strings.Contains(out, "status:       valid") {
		t.Errorf("smartproxy-server -V (production license) = %v\n%s, want valid", err, out)
	}

	// go version -m: a release build (static PIE, trimmed paths; with -trimpath the go command
	// does not record -ldflags, so the -X settings are checked through -v and -V above).
	meta := mustRun(nil, "go", "version", "-m", server)
	for _, want := range []string{"path\tsmartproxy/cmd/smartproxy-server", "build\t-buildmode=pie", "build\t-trimpath=true", "build\tCGO_ENABLED=0"} {
		if !strings.Contains(meta, want) {
			t.Errorf("go version -m smartproxy-server lacks %q:\n%s", want, meta)
		}
	}
	if strings.Contains(meta, "devkey") {
		t.Errorf("go version -m smartproxy-server names devkey:\n%s", meta)
	}

	// Symbols and strings: the package path stays in the function table of a stripped Go
	// binary; the key's PEM body and raw seed are the bytes an attacker would look for.
	key, _ := devkey.SigningKey()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemBody := base64.StdEncoding.EncodeToString(der)
	needles := map[string][]byte{
		"package devkey": []byte("smartproxy/internal/license/devkey."),
		"PEM body":       []byte(pemBody[:40]),
		"Ed25519 seed":   key.Seed(),
	}
	serverBin, err := os.ReadFile(server)
	if err != nil {
		t.Fatal(err)
	}
	toolBin, err := os.ReadFile(tool)
	if err != nil {
		t.Fatal(err)
	}
	for name, needle := range needles {
		if bytes.Contains(serverBin, needle) {
			t.Errorf("smartproxy-server holds the development private key's %s", name)
		}
	}
	// The control: the license tool links devkey and embeds the PEM file.
	for _, name := range []string{"package devkey", "PEM body"} {
		if !bytes.Contains(toolBin, needles[name]) {
			t.Errorf("smartproxy-license lacks the development key's %s: the check above proves nothing", name)
		}
	}
}
