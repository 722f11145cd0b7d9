// Package testwait waits in tests for a condition that has no event to wait on: it polls the
// condition under a deadline and fails the test when the deadline passes. It is the one place
// where a test sleeps, and only between two checks of the condition, never instead of one.
package testwait

import (
	"testing"
	"time"
)

// Interval is the pause between two checks of the condition.
const Interval = 5 * time.Millisecond

// For checks cond every Interval until it holds and fails tb (on the calling goroutine, which
// must be the test's) if it does not hold within timeout. what names the awaited condition in
// the failure message.
func For(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Interval)
	}
}
