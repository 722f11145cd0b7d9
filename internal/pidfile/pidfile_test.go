package pidfile

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestAcquireFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.pid")
	p, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire(%q) = %v, want nil", path, err)
	}
	if p.Stale {
		t.Errorf("Acquire(new file).Stale = true, want false")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(b)), strconv.Itoa(os.Getpid()); got != want {
		t.Errorf("pid file content = %q, want %q", got, want)
	}
	if err := p.Release(); err != nil {
		t.Fatalf("Release() = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Release, Stat(%q) = %v, want not exist", path, err)
	}
	if err := p.Release(); err != nil {
		t.Errorf("second Release() = %v, want nil", err)
	}
}

func TestAcquireStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.pid")
	// A file left behind by a process that is gone: nobody holds its lock.
	if err := os.WriteFile(path, []byte("4194301\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire(stale) = %v, want nil", err)
	}
	defer p.Release()
	if !p.Stale || p.StalePID != 4194301 {
		t.Errorf("Acquire(stale) = Stale %v StalePID %d, want true 4194301", p.Stale, p.StalePID)
	}
}

func TestAcquireGarbageIsStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.pid")
	if err := os.WriteFile(path, []byte("not a pid"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire(garbage) = %v, want nil", err)
	}
	defer p.Release()
	if !p.Stale {
		t.Errorf("Acquire(garbage).Stale = false, want true")
	}
}

// TestAcquireHeldByOtherProcess runs a child process that holds the lock (flock(1) from
// util-linux is not assumed; the test binary itself is the child) and checks that a second
// Acquire fails naming the child's PID.
func TestAcquireHeldByOtherProcess(t *testing.T) {
	if os.Getenv("PIDFILE_TEST_CHILD") != "" {
		p, err := Acquire(os.Getenv("PIDFILE_TEST_PATH"))
		if err != nil {
			os.Stdout.WriteString("ERR " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("LOCKED\n")
		// Hold the lock until the parent closes our stdin.
		buf := make([]byte, 1)
		os.Stdin.Read(buf)
		p.Release()
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "d.pid")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcquireHeldByOtherProcess$")
	cmd.Env = append(os.Environ(), "PIDFILE_TEST_CHILD=1", "PIDFILE_TEST_PATH="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line := make([]byte, 7)
	if _, err := stdout.Read(line); err != nil || string(line) != "LOCKED\n" {
		t.Fatalf("child said %q (%v), want LOCKED", line, err)
	}

	_, err = Acquire(path)
	var re *RunningError
	if !errors.As(err, &re) {
		t.Fatalf("Acquire(held) = %v, want *RunningError", err)
	}
	if re.PID != cmd.Process.Pid {
		t.Errorf("RunningError.PID = %d, want %d", re.PID, cmd.Process.Pid)
	}
	if !errors.Is(err, ErrRunning) {
		t.Errorf("errors.Is(%v, ErrRunning) = false", err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("error %q does not name pid %d", err, cmd.Process.Pid)
	}

	// Once the owner exits, the file it left behind is free again.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	p, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after owner exit = %v, want nil", err)
	}
	p.Release()
}

func TestAcquireEmptyPath(t *testing.T) {
	if _, err := Acquire(""); err == nil {
		t.Error(`Acquire("") = nil error, want error`)
	}
}

func TestClaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.pid")
	if err := os.WriteFile(path, []byte("4194301\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	p, err := Claim(path, "smartproxy-test", log)
	if err != nil {
		t.Fatalf("Claim(stale) = %v", err)
	}
	defer p.Release()
	if !strings.Contains(buf.String(), "stale_pid=4194301") {
		t.Errorf("Claim(stale) logged %q, want the stale PID", buf.String())
	}
}

func TestRunningErrorNamesDaemon(t *testing.T) {
	err := &RunningError{Path: "/run/x.pid", PID: 42, Daemon: "smartproxy-server"}
	if got, want := err.Error(), "another smartproxy-server is running with PID 42 (PID file /run/x.pid)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
