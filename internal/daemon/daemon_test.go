package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"smartproxy/internal/logging"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// notifySocket listens like systemd's notify socket and returns the messages it receives.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	notes := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			notes <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return notes
}

// waitNote waits for a notify message containing every one of want.
func waitNote(t *testing.T, notes <-chan string, want ...string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case n := <-notes:
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(n, w)
			}
			if ok {
				return
			}
		case <-timeout:
			t.Fatalf("no notify message with %q", want)
		}
	}
}

// recorder keeps the order in which the parts saw things happen.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.steps = append(r.steps, s)
	r.mu.Unlock()
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.steps, ", ")
}

// adminStub is an admin server: an HTTP server whose Shutdown is recorded.
type adminStub struct {
	http.Server
	rec *recorder
}

func (a *adminStub) Shutdown(ctx context.Context) error {
	a.rec.add("admin shut down")
	return a.Server.Shutdown(ctx)
}

// TestRun runs a daemon in this process through its whole life: READY with the listeners
// served, SIGUSR1/SIGUSR2 change the level (logged), SIGHUP reloads between RELOADING and READY,
// the end of ctx stops Main first, then After, then the listeners, and Run returns nil.
func TestRun(t *testing.T) {
	notes := notifySocket(t)
	var logs proctest.Buffer
	pid := filepath.Join(t.TempDir(), "test.pid")
	d, err := Start(Options{Name: "smartproxy-test", Log: logging.Options{Format: "json", Output: &logs}, PIDFile: pid,
		AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rec := &recorder{}
	reloads := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- d.Run(ctx, Parts{
			Main: func(ctx context.Context) error { <-ctx.Done(); rec.add("main ended"); return nil },
			With: []func(context.Context) error{func(ctx context.Context) error { <-ctx.Done(); return nil }},
			After: []func(context.Context) error{func(ctx context.Context) error {
				<-ctx.Done()
				rec.add("after ended")
				return nil
			}},
			Admin:  &adminStub{rec: rec},
			Reload: func() string { reloads++; return "reloaded for the test" },
			Ready:  "ready for the test",
			Fields: map[string]any{"part": "test"},
		})
	}()
	waitNote(t, notes, "READY=1", "STATUS=ready for the test")
	started := regexp.MustCompile(`"admin_addr":"([^"]+)".*"metrics_addr":"([^"]+)".*"msg":"started".*"part":"test".*"pid_file"`).FindStringSubmatch(logs.String())
	if started == nil {
		t.Fatalf("no started line with the addresses, the pid file and the daemon's fields:\n%s", logs.String())
	}
	resp, err := http.Get("http://" + started[2] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"smartproxy_build_info{", "go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if resp, err := http.Get("http://" + started[2] + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without Pprof = %v %v, want 404", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	self := func(sig syscall.Signal) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
	}
	self(syscall.SIGUSR1)
	testwait.For(t, 10*time.Second, "the change to debug logged", func() bool {
		return strings.Contains(logs.String(), `"changed_by":"SIGUSR1","event":"log_level_changed","level":"warning","msg":"log level changed","new_level":"debug"`)
	})
	self(syscall.SIGUSR2)
	// A second signal of the same kind may merge with a pending first one: wait in between.
	testwait.For(t, 10*time.Second, "the change to info logged", func() bool {
		return strings.Contains(logs.String(), `"new_level":"info","old_level":"debug"`)
	})
	self(syscall.SIGUSR2)
	testwait.For(t, 10*time.Second, "the change to warn logged", func() bool {
		return strings.Contains(logs.String(), `"new_level":"warning","old_level":"info"`)
	})
	self(syscall.SIGUSR1) // back to info, for the stop line
	testwait.For(t, 10*time.Second, "the change back to info logged", func() bool {
		return strings.Contains(logs.String(), `"new_level":"info","old_level":"warning"`)
	})
	self(syscall.SIGHUP)
	waitNote(t, notes, "RELOADING=1", "MONOTONIC_USEC=")
	waitNote(t, notes, "READY=1", "STATUS=reloaded for the test")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after ctx ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	waitNote(t, notes, "STOPPING=1")
	if got, want := rec.String(), "main ended, after ended, admin shut down"; got != want {
		t.Errorf("shutdown order = %s, want %s", got, want)
	}
	if reloads != 1 {
		t.Errorf("Reload called %d times, want 1", reloads)
	}
	if !strings.Contains(logs.String(), `"msg":"smartproxy-test stopped"`) {
		t.Errorf("no stop line:\n%s", logs.String())
	}
	d.Close()
	if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file after Close: %v, want it removed", err)
	}
}

// TestRunMainEnds: a Main that returns by itself stops the daemon, and its error is Run's.
func TestRunMainEnds(t *testing.T) {
	d, err := Start(Options{Name: "smartproxy-test", Log: logging.Options{Output: io.Discard}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	failed := errors.New("tunnel listener failed")
	afterEnded := false
	err = d.Run(context.Background(), Parts{
		Main:  func(context.Context) error { return failed },
		After: []func(context.Context) error{func(ctx context.Context) error { <-ctx.Done(); afterEnded = true; return nil }},
	})
	if !errors.Is(err, failed) || !afterEnded {
		t.Errorf("Run = %v with After ended %v, want %v and After ended", err, afterEnded, failed)
	}
}

// TestStartRefuses: what Start refuses, releasing what it took.
func TestStartRefuses(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	pid := filepath.Join(t.TempDir(), "test.pid")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"metrics not loopback", Options{MetricsAddr: "0.0.0.0:2883"}, "--metrics: refusing to serve"},
		{"admin not loopback", Options{AdminAddr: "192.0.2.1:2880"}, "--admin: refusing to serve"},
		{"pprof without metrics", Options{Pprof: true}, "--pprof"},
		{"metrics port taken", Options{PIDFile: pid, AdminAddr: "127.0.0.1:0", MetricsAddr: taken.Addr().String()}, "metrics listener"},
		{"bad log format", Options{Log: logging.Options{Format: "xml"}}, "log format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Name = "smartproxy-test"
			if tt.opts.Log.Output == nil {
				tt.opts.Log.Output = io.Discard
			}
			d, err := Start(tt.opts)
			if err == nil {
				d.Close()
				t.Fatalf("Start(%+v) = nil error, want %q", tt.opts, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start(%+v) = %v, want %q", tt.opts, err, tt.want)
			}
			if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pid file after a refused start: %v, want it released", err)
			}
		})
	}
}
