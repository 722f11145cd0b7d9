// Package proctest runs the project's built binaries as separate processes in tests: build them
// from this tree, start them with their output captured, wait for log lines, signal, stop and
// measure them. It is used by the end-to-end tests and by benchmarks (CPUTime).
package proctest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// DefaultTimeout bounds WaitLog and Stop.
const DefaultTimeout = 30 * time.Second

// Buffer is a bytes.Buffer safe for one writer (a process) and concurrent readers (the test).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Proc is a running (or ended) process of a built binary with its output captured.
type Proc struct {
	Name   string    // for messages
	Cmd    *exec.Cmd // the started command
	Stdout Buffer
	Stderr Buffer

	done chan struct{} // closed when the process has been waited for
	err  error         // the Wait result, valid after done
}

// Start starts path with args. The test's cleanup kills the process if it still runs and, when
// the test failed, logs the tail of its output.
func Start(t testing.TB, name, path string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, name, exec.Command(path, args...))
}

// StartCmd starts cmd, prepared by the caller (environment, directory), like Start. Its
// Stdout and Stderr are replaced by the Proc's buffers.
func StartCmd(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = &p.Stdout, &p.Stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s %s\n--- stdout (tail) ---\n%s\n--- stderr (tail) ---\n%s", name, strings.Join(cmd.Args[1:], " "),
				Tail(p.Stdout.String(), 30), Tail(p.Stderr.String(), 40))
		}
	})
	return p
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error; valid after Done is closed.
func (p *Proc) Err() error { return p.err }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits for the process to end within timeout and returns its exit error.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not end within %v", p.Name, timeout)
		return nil
	}
}

// Kill kills the process (SIGKILL) if it still runs and waits for it.
func (p *Proc) Kill() {
	select {
	case <-p.done:
	default:
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Stop sends SIGTERM and waits up to DefaultTimeout for the end.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(DefaultTimeout):
		t.Fatalf("%s did not stop after SIGTERM", p.Name)
	}
}

// WaitLine waits up to DefaultTimeout until stderr holds the text want; it fails the test at
// once if the process ends first.
func (p *Proc) WaitLine(t testing.TB, want string) {
	t.Helper()
	p.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(want)), 1)
}

// WaitLog waits up to DefaultTimeout until stderr holds at least n lines matching re; it fails
// the test at once if the process ends first.
func (p *Proc) WaitLog(t testing.TB, re *regexp.Regexp, n int) {
	t.Helper()
	p.waitOutput(t, &p.Stderr, "stderr", re, n)
}

// WaitStdout waits up to DefaultTimeout until stdout holds at least n matches of re; it fails
// the test at once if the process ends first. A daemon that reports results on stdout (oftp2
// serve's "received" lines) may print them after its peer has already exited, so a test reads
// them through WaitStdout, never straight after the peer's end.
func (p *Proc) WaitStdout(t testing.TB, re *regexp.Regexp, n int) {
	t.Helper()
	p.waitOutput(t, &p.Stdout, "stdout", re, n)
}

// waitOutput polls out every 10 ms until it holds n matches of re, the deadline passes or the
// process ends.
func (p *Proc) waitOutput(t testing.TB, out *Buffer, name string, re *regexp.Regexp, n int) {
	t.Helper()
	deadline := time.Now().Add(DefaultTimeout)
	for len(re.FindAllString(out.String(), -1)) < n {
		select {
		case <-p.done:
			// The process may have written the last lines just before it ended.
			if len(re.FindAllString(out.String(), -1)) >= n {
				return
			}
			t.Fatalf("%s ended (%v) with %d matches of %s on %s, want %d", p.Name, p.err, len(re.FindAllString(out.String(), -1)), re, name, n)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s wrote %d matches of %s on %s within %v, want %d", p.Name, len(re.FindAllString(out.String(), -1)), re, name, DefaultTimeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Memory returns the process's peak resident set size in bytes (VmHWM of /proc/PID/status) and
// its current one (VmRSS).
func (p *Proc) Memory(t testing.TB) (peak, current int64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb << 10
		case "VmRSS:":
			current = kb << 10
		}
	}
	return peak, current
}

// ResetPeak resets the kernel's VmHWM of the process to its current RSS (clear_refs 5), so that
// a later peak belongs to what happened in between.
func (p *Proc) ResetPeak(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.Cmd.Process.Pid), []byte("5"), 0); err != nil {
		t.Logf("%s: resetting the peak RSS is not possible here (%v); VmHWM counts from the start", p.Name, err)
	}
}

// CPUTime returns the user and system CPU time the calling process has used, for benchmarks
// that report CPU per operation (robust where the machine is shared and wall-clock time is not).
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// GoTool returns the go command: the one on PATH, else the one of the running toolchain.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// Binaries builds a set of the project's commands once per test binary into a temporary
// directory. Create it in a package variable, call Dir from the tests and Main from TestMain.
type Binaries struct {
	pkgs []string

	once sync.Once
	dir  string
	err  error
}

// NewBinaries returns the set of commands pkgs (import paths), built on the first Dir.
func NewBinaries(pkgs ...string) *Binaries { return &Binaries{pkgs: pkgs} }

// Dir builds the commands on its first call and returns the directory that holds them; a
// failed build fails t.
func (b *Binaries) Dir(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "smartproxy-bin-"); b.err != nil {
			return
		}
		b.err = Build(b.dir, b.pkgs...)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.dir
}

// Main runs the package's tests, removes the built commands and, when the tests passed, fails
// the run if goroutines leaked. It returns the exit code for os.Exit.
func (b *Binaries) Main(m *testing.M) int {
	code := m.Run()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

// Build builds the main packages pkgs of this module into dir.
func Build(dir string, pkgs ...string) error {
	args := append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)
	if out, err := exec.Command(GoTool(), args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}
