package sdnotify

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestMessages(t *testing.T) {
	c := listen(t)
	tests := []struct {
		name string
		call func() error
		want []string
	}{
		{"Ready", func() error { return Ready("serving") }, []string{"READY=1", "STATUS=serving"}},
		{"Stopping", Stopping, []string{"STOPPING=1"}},
		{"Reloading", Reloading, []string{"RELOADING=1", "MONOTONIC_USEC="}},
		{"Status", func() error { return Status("3 sessions") }, []string{"STATUS=3 sessions"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatalf("%s() = %v", tt.name, err)
			}
			got := recv(t, c)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s sent %q, want it to contain %q", tt.name, got, w)
				}
			}
		})
	}
}

func TestWatchdog(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: pings every 10 ms
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watchdog(ctx, nil) }()
	if got := recv(t, c); got != "WATCHDOG=1" {
		t.Errorf("watchdog sent %q, want WATCHDOG=1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watchdog() = %v, want nil", err)
	}
}

func TestNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready("x"); err != nil {
		t.Errorf("Ready without NOTIFY_SOCKET = %v, want nil", err)
	}
	t.Setenv("WATCHDOG_USEC", "")
	if err := Watchdog(context.Background(), nil); err != nil {
		t.Errorf("Watchdog without WATCHDOG_USEC = %v, want nil", err)
	}
}
