package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
)

func TestTunnelListenAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ":2878"},
		{":2878", ":2878"},
		{"127.0.0.1:9000", "127.0.0.1:9000"},
		{"127.0.0.1", "127.0.0.1:2878"},
		{"[::1]:9000", "[::1]:9000"},
		{"::1", "[::1]:2878"},
		{"[::1]", "[::1]:2878"},
		{"127.0.0.1:0", "127.0.0.1:0"},
	}
	for _, tt := range tests {
		if got, err := tunnelListenAddr(tt.in); err != nil || got != tt.want {
			t.Errorf("tunnelListenAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"dmz.example.com:2878", "1.2.3.4:99999", "1.2.3.4:x", "nonsense"} {
		if got, err := tunnelListenAddr(bad); err == nil {
			t.Errorf("tunnelListenAddr(%q) = %q, want error", bad, got)
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad -i", []string{"-i", "example.com:1"}, "-i"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"bad log format", []string{"--log-format", "xml"}, "--log-format"},
		{"admin not loopback", []string{"--admin", "0.0.0.0:2879"}, "--admin"},
		{"metrics not loopback", []string{"--metrics", "192.0.2.1:9"}, "--metrics"},
		{"pprof without metrics", []string{"--pprof", "--metrics="}, "--pprof"},
		{"unknown flag", []string{"--bogus"}, "bogus"},
		{"extra argument", []string{"extra"}, "unexpected argument"},
		{"bad drain timeout", []string{"--drain-timeout", "soon", "--pid-file="}, "--drain-timeout"},
		{"partner listener without port", []string{"--partner-listen", "127.0.0.1"}, "--partner-listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if got := exitCode(err); got != 2 {
				t.Errorf("exitCode(%v) = %d, want 2", err, got)
			}
		})
	}
}

func TestRunHelpAndVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Fatalf("run(-h) = %v", err)
	}
	for _, want := range []string{"-i [ip]:port", "-L", "-l file", "-V", "--tunnel-cert", "--tunnel-allow-client", "--admin", "--metrics", "--pid-file", "--log-format", "--log-level", "--log-dir", "pki init"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help output lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"-v"}, &stdout, &stderr); err != nil {
		t.Fatalf("run(-v) = %v", err)
	}
	if !strings.HasPrefix(stdout.String(), "smartproxy-server ") {
		t.Errorf("run(-v) printed %q, want \"smartproxy-server VERSION\"", stdout.String())
	}
}

func TestRunProxyID(t *testing.T) {
	want, err := license.ProxyID()
	if err != nil {
		t.Skipf("this host has no Proxy ID: %v", err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-L"}, &stdout, &stderr); err != nil {
		t.Fatalf("run(-L) = %v", err)
	}
	if got := strings.TrimSpace(stdout.String()); got != want {
		t.Errorf("run(-L) printed %q, want %q", got, want)
	}
	if !regexp.MustCompile(`^SPX(-[0-9A-Z]{4}){4}$`).MatchString(want) {
		t.Errorf("Proxy ID %q does not look like SPX-XXXX-XXXX-XXXX-XXXX", want)
	}
}

// writeLicense writes a license signed with the development key for proxyID.
func writeLicense(t *testing.T, path, proxyID string, notBefore, notAfter time.Time) {
	t.Helper()
	key, keyID := devkey.SigningKey()
	file, err := license.Sign(license.License{ProxyID: proxyID, Customer: "Test Customer", NotBefore: notBefore, NotAfter: notAfter}, key, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRunLicenseValidity(t *testing.T) {
	if !license.DevKeyAllowed() {
		t.Skip("this build does not accept the development key")
	}
	id, err := license.ProxyID()
	if err != nil {
		t.Skipf("this host has no Proxy ID: %v", err)
	}
	dir := t.TempDir()
	now := time.Now()
	valid := filepath.Join(dir, "valid")
	writeLicense(t, valid, id, now.Add(-time.Hour), now.Add(30*24*time.Hour))
	expired := filepath.Join(dir, "expired")
	writeLicense(t, expired, id, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	other := filepath.Join(dir, "other")
	writeLicense(t, other, "SPX-0000-0000-0000-0001", now.Add(-time.Hour), now.Add(time.Hour))
	tests := []struct {
		name      string
		path      string
		wantValid bool
		wantText  string
	}{
		{"valid", valid, true, "Test Customer"},
		{"expired", expired, false, "NOT VALID"},
		{"other host", other, false, "NOT VALID"},
		{"missing", filepath.Join(dir, "missing"), false, "NOT VALID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"-V", "-l", tt.path}, &stdout, &stderr)
			if tt.wantValid && err != nil {
				t.Errorf("run(-V) = %v, want nil", err)
			}
			if !tt.wantValid && !errors.Is(err, errLicenseInvalid) {
				t.Errorf("run(-V) = %v, want errLicenseInvalid", err)
			}
			if !strings.Contains(stdout.String(), tt.wantText) || !strings.Contains(stdout.String(), id) {
				t.Errorf("run(-V) printed:\n%s\nwant it to contain %q and the Proxy ID", stdout.String(), tt.wantText)
			}
		})
	}
}

// binaries holds smartproxy-server, built once for the tests that run it.
var binaries = proctest.NewBinaries("smartproxy/cmd/smartproxy-server")

func TestMain(m *testing.M) { os.Exit(binaries.Main(m)) }

// buildBinary returns the built smartproxy-server.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	return filepath.Join(binaries.Dir(t), "smartproxy-server")
}

func startDaemon(t *testing.T, bin string, args ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, "smartproxy-server", bin, args...)
}

func TestDaemonPIDFile(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	if _, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{Hostname: "test"}); err != nil {
		t.Fatal(err)
	}
	pidPath := filepath.Join(dir, "server.pid")
	args := []string{
		"-i", "127.0.0.1:0", "-l", filepath.Join(dir, "license"),
		"--tunnel-cert", filepath.Join(dir, "pki", pki.FileServerCert),
		"--tunnel-key", filepath.Join(dir, "pki", pki.FileServerKey),
		"--tunnel-ca", filepath.Join(dir, "pki", pki.FileCACert),
		"--admin", "", "--metrics", "", "--pid-file", pidPath, "--drain-timeout", "2s",
	}

	first := startDaemon(t, bin, args...)
	first.WaitLine(t, `msg=started`)
	data, err := os.ReadFile(pidPath)
	if err != nil {
		t.Fatalf("PID file: %v", err)
	}
	if got, want := strings.TrimSpace(string(data)), strconv.Itoa(first.Cmd.Process.Pid); got != want {
		t.Errorf("PID file holds %q, want %q", got, want)
	}

	second := startDaemon(t, bin, args...)
	err = second.Wait(t, proctest.DefaultTimeout)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("second start exited with %v, want exit status 1", err)
	}
	if want := fmt.Sprintf("PID %d", first.Cmd.Process.Pid); !strings.Contains(second.Stderr.String(), want) {
		t.Errorf("second start's message lacks %q:\n%s", want, second.Stderr.String())
	}

	first.Cmd.Process.Signal(syscall.SIGTERM)
	if err := first.Wait(t, proctest.DefaultTimeout); err != nil {
		t.Errorf("SIGTERM: daemon exited with %v, want 0:\n%s", err, first.Stderr.String())
	}
	if _, err := os.Stat(pidPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PID file after exit: %v, want it removed", err)
	}

	// A stale PID file (its owner gone, no lock held) is replaced with a warning.
	if err := os.WriteFile(pidPath, []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third := startDaemon(t, bin, args...)
	third.WaitLine(t, `msg=started`)
	if !strings.Contains(third.Stderr.String(), "stale") || !strings.Contains(third.Stderr.String(), "999999") {
		t.Errorf("no stale PID file warning naming 999999:\n%s", third.Stderr.String())
	}
	third.Cmd.Process.Signal(syscall.SIGTERM)
	if err := third.Wait(t, proctest.DefaultTimeout); err != nil {
		t.Errorf("SIGTERM: daemon exited with %v:\n%s", err, third.Stderr.String())
	}
}

func TestBinaryLicenseExitStatus(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "-V", "-l", filepath.Join(t.TempDir(), "none")).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("-V without a license exited with %v, want exit status 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "NOT VALID") {
		t.Errorf("-V output lacks NOT VALID:\n%s", out)
	}
	out, err = exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-i [ip]:port") {
		t.Errorf("-h = %v:\n%s", err, out)
	}
}

func TestDaemonSignalsNotifyAndMetrics(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	if _, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{Hostname: "test"}); err != nil {
		t.Fatal(err)
	}
	// A notify socket like systemd's, to see READY and STOPPING.
	sockPath := filepath.Join(dir, "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	notes := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := sock.ReadFromUnix(buf)
			if err != nil {
				close(notes)
				return
			}
			notes <- string(buf[:n])
		}
	}()
	waitNote := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case n, ok := <-notes:
				if !ok {
					t.Fatalf("notify socket closed before %q", want)
				}
				if strings.Contains(n, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q on the notify socket", want)
			}
		}
	}

	cmd := exec.Command(bin,
		"-i", "127.0.0.1:0", "-l", filepath.Join(dir, "license"),
		"--tunnel-cert", filepath.Join(dir, "pki", pki.FileServerCert),
		"--tunnel-key", filepath.Join(dir, "pki", pki.FileServerKey),
		"--tunnel-ca", filepath.Join(dir, "pki", pki.FileCACert),
		"--admin", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--pprof", "--pid-file=", "--log-format", "json",
	)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath)
	d := proctest.StartCmd(t, "smartproxy-server", cmd)
	d.WaitLine(t, `"msg":"started"`)
	waitNote("READY=1")
	m := regexp.MustCompile(`"metrics_addr":"([^"]+)"`).FindStringSubmatch(d.Stderr.String())
	if m == nil {
		t.Fatalf("no metrics_addr in the log:\n%s", d.Stderr.String())
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"smartproxy_server_partner_listener_open 0", "smartproxy_server_tunnels 0", "smartproxy_server_license_valid 0", "smartproxy_build_info{", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// --pprof: the runtime profiles on the same loopback listener.
	resp, err = http.Get("http://" + m[1] + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Errorf("GET /debug/pprof/goroutine?debug=1 with --pprof = %d %.200q, want 200 with a goroutine profile", resp.StatusCode, body)
	}

	d.Cmd.Process.Signal(syscall.SIGUSR1)
	d.WaitLine(t, `"new_level":"debug"`)
	d.Cmd.Process.Signal(syscall.SIGUSR2)
	d.WaitLine(t, `"new_level":"info"`)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	d.WaitLine(t, "SIGHUP: tunnel certificate files reloaded")
	waitNote("RELOADING=1")

	d.Cmd.Process.Signal(syscall.SIGTERM)
	waitNote("STOPPING=1")
	if err := d.Wait(t, proctest.DefaultTimeout); err != nil {
		t.Errorf("SIGTERM: exit %v:\n%s", err, d.Stderr.String())
	}
}
