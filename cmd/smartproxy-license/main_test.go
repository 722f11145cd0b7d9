package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"smartproxy/internal/license"
)

const proxyID = "SPX-ABCD-EFGH-JKMN-PQRS"

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "signing.pem")
	out, _, err := runCmd(t, "keygen", "--out", keyPath)
	if err != nil {
		t.Fatalf("keygen error = %v", err)
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := license.ParsePrivateKeyPEM(data)
	if err != nil {
		t.Fatalf("ParsePrivateKeyPEM(keygen output) error = %v", err)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	m := regexp.MustCompile(`(?m)^public key:  (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keygen output has no public key line:\n%s", out)
	}
	keys, err := license.ParseKeySet(m[1])
	if err != nil {
		t.Fatalf("ParseKeySet(%q) error = %v", m[1], err)
	}
	pub := key.Public().(ed25519.PublicKey)
	if !keys[license.KeyIDFor(pub)].Equal(pub) {
		t.Errorf("printed key set %q does not hold the generated key under %s", m[1], license.KeyIDFor(pub))
	}
	if !strings.Contains(out, "-X smartproxy/internal/license.productionKeys="+m[1]) {
		t.Errorf("keygen output lacks the -ldflags hint:\n%s", out)
	}

	// Existing file: refused without --force, replaced with it.
	if _, _, err := runCmd(t, "keygen", "--out", keyPath); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("keygen over an existing file error = %v, want a --force hint", err)
	}
	out, _, err = runCmd(t, "keygen", "--out", keyPath, "--force", "--key-id", "prod-7")
	if err != nil || !strings.Contains(out, "public key:  prod-7:") {
		t.Errorf("keygen --force --key-id prod-7 = %q, %v", out, err)
	}
	if data2, _ := os.ReadFile(keyPath); bytes.Equal(data, data2) {
		t.Error("keygen --force did not replace the key")
	}
	for _, args := range [][]string{{"keygen"}, {"keygen", "--out", filepath.Join(dir, "x"), "--key-id", "bad id"}, {"keygen", "extra"}} {
		if _, _, err := runCmd(t, args...); exitCode(err) != 2 {
			t.Errorf("run(%q) = %v (exit %d), want a usage error (exit 2)", args, err, exitCode(err))
		}
	}
}

func TestIssueAndInspect(t *testing.T) {
	dir := t.TempDir()
	devLic := filepath.Join(dir, "dev.lic")
	out, _, err := runCmd(t, "issue", "--proxy-id", strings.ToLower(proxyID), "--customer", "Example AG", "--days", "30",
		"--dev", "--max-sessions", "40", "--features", "outgoing, ha", "--out", devLic)
	if err != nil {
		t.Fatalf("issue --dev error = %v", err)
	}
	if !strings.Contains(out, "signed with key dev-1") {
		t.Errorf("issue output = %q", out)
	}
	data, err := os.ReadFile(devLic)
	if err != nil {
		t.Fatal(err)
	}
	l, err := license.Parse(data, license.TrustedKeys())
	if err != nil {
		t.Fatalf("Parse(issued) error = %v", err)
	}
	if l.ProxyID != proxyID || l.Customer != "Example AG" || l.MaxSessions != 40 || !l.HasFeature("ha") || !l.HasFeature("outgoing") {
		t.Errorf("issued license = %+v", l)
	}
	if d := l.NotAfter.Sub(l.NotBefore); d != 30*24*time.Hour {
		t.Errorf("validity = %v, want 720h", d)
	}

	// inspect, flags after the file name too.
	out, _, err = runCmd(t, "inspect", devLic, "--proxy-id", proxyID)
	if err != nil {
		t.Fatalf("inspect error = %v\n%s", err, out)
	}
	for _, want := range []string{"proxy id:     " + proxyID, "customer:     Example AG", "max sessions: 40",
		"features:     outgoing, ha", "key id:       dev-1", "signature:    verified (development key", "validity:     valid now"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCmd(t, "inspect", "--proxy-id", "SPX-0000-0000-0000-0000", devLic)
	if !errors.Is(err, errNotValid) || !strings.Contains(out, "NOT VALID: license: issued for proxy ID") {
		t.Errorf("inspect for another proxy = %v\n%s, want not valid", err, out)
	}

	// A license signed with a key this binary does not know.
	keyPath := filepath.Join(dir, "k.pem")
	if _, _, err := runCmd(t, "keygen", "--out", keyPath); err != nil {
		t.Fatal(err)
	}
	prodLic := filepath.Join(dir, "prod.lic")
	if _, _, err := runCmd(t, "issue", "--proxy-id", proxyID, "--customer", "C", "--days", "1", "--key", keyPath,
		"--key-id", "prod-9", "--out", prodLic); err != nil {
		t.Fatalf("issue --key error = %v", err)
	}
	out, _, err = runCmd(t, "inspect", prodLic)
	if !errors.Is(err, errNotValid) || !strings.Contains(out, `NOT VERIFIED by this binary's keys: license: signed with unknown key "prod-9"`) ||
		!strings.Contains(out, "customer:     C") {
		t.Errorf("inspect of a license by an unknown key = %v\n%s", err, out)
	}

	// Expired (started long ago) and to standard output.
	out, _, err = runCmd(t, "issue", "--proxy-id", proxyID, "--customer", "Old", "--days", "1", "--dev",
		"--not-before", "2020-01-01T00:00:00Z", "--out", "-")
	if err != nil {
		t.Fatal(err)
	}
	oldLic := filepath.Join(dir, "old.lic")
	if err := os.WriteFile(oldLic, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCmd(t, "inspect", oldLic)
	if !errors.Is(err, errNotValid) || !strings.Contains(out, "NOT VALID: license: expired at 2020-01-02T00:00:00Z") {
		t.Errorf("inspect of an expired license = %v\n%s", err, out)
	}

	// Refuses to overwrite; inspect of garbage fails clearly.
	if _, _, err := runCmd(t, "issue", "--proxy-id", proxyID, "--customer", "C", "--days", "1", "--dev", "--out", devLic); err == nil {
		t.Error("issue over an existing file error = nil, want refusal")
	}
	garbage := filepath.Join(dir, "garbage.lic")
	if err := os.WriteFile(garbage, []byte("not a license"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCmd(t, "inspect", garbage); err == nil || !strings.Contains(err.Error(), "malformed license file") {
		t.Errorf("inspect(garbage) error = %v, want malformed", err)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.lic")
	base := []string{"--proxy-id", proxyID, "--customer", "C", "--out", out}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", nil, "no subcommand"},
		{"unknown", []string{"frobnicate"}, "unknown subcommand"},
		{"unknown flag", []string{"issue", "--colour"}, "flag provided but not defined"},
		{"missing fields", []string{"issue", "--days", "1", "--dev"}, "required"},
		{"no days", append([]string{"issue", "--dev"}, base...), "--days"},
		{"too many days", append([]string{"issue", "--dev", "--days", "99999"}, base...), "--days"},
		{"no key", append([]string{"issue", "--days", "1"}, base...), "exactly one of --key FILE and --dev"},
		{"both keys", append([]string{"issue", "--days", "1", "--dev", "--key", "k"}, base...), "exactly one"},
		{"dev with key id", append([]string{"issue", "--days", "1", "--dev", "--key-id", "x"}, base...), "--key-id applies"},
		{"bad proxy id", []string{"issue", "--days", "1", "--dev", "--proxy-id", "host1", "--customer", "C", "--out", out}, "--proxy-id"},
		{"bad not-before", append([]string{"issue", "--days", "1", "--dev", "--not-before", "yesterday"}, base...), "--not-before"},
		{"negative sessions", append([]string{"issue", "--days", "1", "--dev", "--max-sessions", "-1"}, base...), "--max-sessions"},
		{"inspect without file", []string{"inspect"}, "exactly one license file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCmd(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Errorf("run(%q) = %v (exit %d), want usage error containing %q", tt.args, err, exitCode(err), tt.want)
			}
		})
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed issue left %s behind", out)
	}
	// Errors that are not usage errors: a bad key file, a bad feature.
	keyFile := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(keyFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		append([]string{"issue", "--days", "1", "--key", keyFile}, base...),
		append([]string{"issue", "--days", "1", "--dev", "--features", "Bad Feature"}, base...),
		{"inspect", filepath.Join(dir, "missing.lic")},
	} {
		if _, _, err := runCmd(t, args...); err == nil || exitCode(err) != 1 {
			t.Errorf("run(%q) = %v, want a failure with exit status 1", args, err)
		}
	}
	if o, _, err := runCmd(t, "help"); err != nil || !strings.Contains(o, "usage:") {
		t.Errorf("help = %q, %v", o, err)
	}
	if _, _, err := runCmd(t, "issue", "-h"); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("issue -h error = %v, want flag.ErrHelp", err)
	}
}

// TestReleaseBuildKeys builds the tool the way a release is built (a
// production key compiled in, the development key disallowed) and checks
// that the binary accepts exactly the production-signed license.
func TestReleaseBuildKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not found: %v", err)
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "prod.pem")
	out, _, err := runCmd(t, "keygen", "--out", keyPath, "--key-id", "prod-1")
	if err != nil {
		t.Fatal(err)
	}
	set := regexp.MustCompile(`(?m)^public key:  (\S+)$`).FindStringSubmatch(out)[1]
	bin := filepath.Join(dir, "smartproxy-license")
	build := exec.Command(goBin, "build", "-o", bin, "-ldflags",
		"-X smartproxy/internal/license.productionKeys="+set+" -X smartproxy/internal/license.allowDevKey=false", ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	prodLic, devLic := filepath.Join(dir, "prod.lic"), filepath.Join(dir, "dev.lic")
	if _, _, err := runCmd(t, "issue", "--proxy-id", proxyID, "--customer", "C", "--days", "3", "--key", keyPath,
		"--key-id", "prod-1", "--out", prodLic); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCmd(t, "issue", "--proxy-id", proxyID, "--customer", "C", "--days", "3", "--dev", "--out", devLic); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bin, "inspect", prodLic).CombinedOutput(); err != nil || !strings.Contains(string(b), "signature:    verified\n") {
		t.Errorf("release binary inspect(prod license) = %v\n%s", err, b)
	}
	b, err := exec.Command(bin, "inspect", devLic).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(b), `unknown key "dev-1"`) {
		t.Errorf("release binary inspect(dev license) = %v\n%s, want exit 1 and unknown key dev-1", err, b)
	}
}
