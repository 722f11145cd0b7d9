package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/client/clienttest"
	"smartproxy/internal/proctest"
)

// binaries holds smartproxy-client, built once for the tests that run it.
var binaries = proctest.NewBinaries("smartproxy/cmd/smartproxy-client")

func TestMain(m *testing.M) { os.Exit(binaries.Main(m)) }

// binary returns the built smartproxy-client.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	return filepath.Join(binaries.Dir(t), "smartproxy-client")
}

func start(t *testing.T, bin string, args ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, "smartproxy-client", bin, args...)
}

// exitCode waits for p to end and returns its exit status.
func exitCode(t *testing.T, p *proctest.Proc) int {
	t.Helper()
	err := p.Wait(t, proctest.DefaultTimeout)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestDaemon runs the built binary against a harness server: PID file (second start refused
// naming the PID; a stale file replaced with a warning), configuration push, SIGHUP with a
// broken and a good file, SIGTERM.
func TestDaemon(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	files := clienttest.NewFiles(t, dir)
	srv := clienttest.NewServer(t, clienttest.ServerConfig{})
	cert, key, ca := srv.WriteClientFiles(t, dir)
	config := filepath.Join(dir, "client.json")
	clienttest.WriteConfig(t, config, files.Config("127.0.0.1:3305"))
	pidFile := filepath.Join(dir, "client.pid")
	args := []string{"-S", srv.Addr, "--tunnel-server-name", "localhost", "--config", config, "--tunnel-cert", cert, "--tunnel-key", key,
		"--tunnel-ca", ca, "--admin", "", "--metrics", "", "--pid-file", pidFile}

	first := start(t, bin, args...)
	conn := srv.WaitConn(t, 15*time.Second)
	v1 := conn.WaitConfig(t, 15*time.Second).GetVersion()
	first.WaitLine(t, "event=config_applied")

	second := start(t, bin, args...)
	if code := exitCode(t, second); code != 1 {
		t.Errorf("second start exited with %d, want 1", code)
	}
	if want := fmt.Sprintf("another smartproxy-client is running with PID %d", first.Cmd.Process.Pid); !strings.Contains(second.Stderr.String(), want) {
		t.Errorf("second start output = %q, want it to contain %q", second.Stderr.String(), want)
	}

	// kill -9 leaves the PID file behind: the next start replaces it with a warning.
	first.Cmd.Process.Signal(syscall.SIGKILL)
	exitCode(t, first)
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("PID file after kill -9: %v, want it left behind", err)
	}
	third := start(t, bin, args...)
	third.WaitLine(t, "replaced a stale PID file")
	third.WaitLine(t, "stale_pid="+strconv.Itoa(first.Cmd.Process.Pid))
	conn = srv.WaitConn(t, 15*time.Second)
	conn.WaitConfig(t, 15*time.Second)
	third.WaitLine(t, "event=config_applied")

	// SIGHUP with a broken file: refused, the configuration in force stays.
	bad := files.Config("127.0.0.1:3305")
	bad.Partners[0].AllowedNetworks = []string{"10.0.0.1/8"}
	clienttest.WriteConfig(t, config, bad)
	third.Cmd.Process.Signal(syscall.SIGHUP)
	third.WaitLine(t, "field=\"partners[0].allowed_networks[0]\"")
	third.WaitLine(t, "configuration file refused; the configuration in force stays")

	// SIGHUP with a good, changed file: a new version goes to the server.
	good := files.Config("127.0.0.1:3305")
	good.Partners = good.Partners[:1]
	clienttest.WriteConfig(t, config, good)
	third.Cmd.Process.Signal(syscall.SIGHUP)
	got := conn.WaitConfig(t, 15*time.Second)
	if got.GetVersion() <= v1 || len(got.GetConfig().GetPartners()) != 1 {
		t.Errorf("after SIGHUP: pushed version %d with %d partners, want a version above %d with 1 partner", got.GetVersion(), len(got.GetConfig().GetPartners()), v1)
	}

	// SIGUSR1 makes logging more verbose, and says so.
	third.Cmd.Process.Signal(syscall.SIGUSR1)
	third.WaitLine(t, "new_level=debug")

	third.Cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, third); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0:\n%s", code, third.Stderr.String())
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PID file after SIGTERM: %v, want it removed", err)
	}
}

// TestStartFailures: a start with a broken configuration file fails with the field named, before
// anything is dialled; -U with an unreadable --api-ca fails with the file named and without the
// URL's password.
func TestStartFailures(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	files := clienttest.NewFiles(t, dir)
	cfg := files.Config("127.0.0.1:3305")
	cfg.Partners[2].OdetteID = "acme"
	config := filepath.Join(dir, "client.json")
	clienttest.WriteConfig(t, config, cfg)
	p := start(t, bin, "-S", "127.0.0.1:1", "--config", config, "--tunnel-cert", "x", "--tunnel-key", "y", "--tunnel-ca", "z",
		"--admin", "", "--metrics", "", "--pid-file", filepath.Join(dir, "pid"))
	if code := exitCode(t, p); code != 1 {
		t.Errorf("start with a broken file exited with %d, want 1", code)
	}
	if out := p.Stderr.String(); !strings.Contains(out, `partners[2].odette_id: "acme" is not a valid Odette ID`) {
		t.Errorf("start output = %q, want the field named", out)
	}

	srv := clienttest.NewServer(t, clienttest.ServerConfig{})
	cert, key, ca := srv.WriteClientFiles(t, dir)
	p = start(t, bin, "-U", "https://proxy:pw@127.0.0.1:1/", "-S", "127.0.0.1:1", "--tunnel-cert", cert, "--tunnel-key", key, "--tunnel-ca", ca,
		"--api-ca", filepath.Join(dir, "missing-ca.pem"), "--state-dir", filepath.Join(dir, "state"), "--admin", "", "--metrics", "", "--pid-file", "")
	if code := exitCode(t, p); code != 1 {
		t.Errorf("-U with a missing --api-ca exited with %d, want 1", code)
	}
	if out := p.Stderr.String(); !strings.Contains(out, "missing-ca.pem") || strings.Contains(out, ":pw@") || strings.Contains(out, "pw") {
		t.Errorf("-U output = %q, want the missing file named and no password", out)
	}
	p = start(t, bin, "--frobnicate")
	if code := exitCode(t, p); code != 2 {
		t.Errorf("unknown flag exited with %d, want 2", code)
	}
}

// TestRunContextCancel runs the daemon in-process and ends it through its context.
func TestRunContextCancel(t *testing.T) {
	dir := t.TempDir()
	files := clienttest.NewFiles(t, dir)
	srv := clienttest.NewServer(t, clienttest.ServerConfig{})
	cert, key, ca := srv.WriteClientFiles(t, dir)
	config := filepath.Join(dir, "client.json")
	clienttest.WriteConfig(t, config, files.Config("127.0.0.1:3305"))
	ctx, cancel := context.WithCancel(context.Background())
	var stderr proctest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-S", srv.Addr, "--tunnel-server-name", "localhost", "--config", config, "--tunnel-cert", cert,
			"--tunnel-key", key, "--tunnel-ca", ca, "--admin", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--pid-file", filepath.Join(dir, "pid")},
			&stderr, &stderr)
	}()
	srv.WaitConn(t, 15*time.Second).WaitConfig(t, 15*time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() = %v, want nil after cancel", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run() did not return after cancel")
	}
	if out := stderr.String(); !strings.Contains(out, `msg="smartproxy-client stopped"`) {
		t.Errorf("run() output lacks the stop line:\n%s", out)
	}
}
