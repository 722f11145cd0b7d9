// Package sdnotify tells systemd about a daemon's state (Type=notify units): READY, STOPPING,
// RELOADING, STATUS and watchdog keep-alives. Outside systemd (no NOTIFY_SOCKET) every call is a
// no-op, so the daemons call it unconditionally.
package sdnotify

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Ready reports that start-up is finished, with a status line.
func Ready(status string) error { return send(daemon.SdNotifyReady + "\nSTATUS=" + status) }

// Stopping reports that the daemon is shutting down.
func Stopping() error { return send(daemon.SdNotifyStopping) }

// Reloading reports that the daemon is reloading its configuration; call Ready when done.
// MONOTONIC_USEC is included, as systemd's Type=notify-reload requires.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sd_notify: clock: %w", err)
	}
	usec := ts.Nano() / 1000
	return send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, usec))
}

// Status sets the free-form status line systemctl status shows.
func Status(s string) error { return send("STATUS=" + s) }

// Watchdog sends WATCHDOG=1 at half the unit's WatchdogSec until ctx ends. If the watchdog is not
// enabled for this process it returns at once. healthy, if not nil, is asked before each ping; a
// daemon that is stuck stops pinging and systemd restarts it.
func Watchdog(ctx context.Context, healthy func() bool) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("sd_notify: watchdog: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if healthy == nil || healthy() {
				if err := send(daemon.SdNotifyWatchdog); err != nil {
					return err
				}
			}
		}
	}
}

func send(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
