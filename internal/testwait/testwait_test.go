package testwait

import (
	"testing"
	"time"
)

func TestForHolds(t *testing.T) {
	n := 0
	For(t, 10*time.Second, "the third check", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("For returned after %d checks, want 3", n)
	}
}

// recorder is a testing.TB that records Fatalf instead of ending the goroutine.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = format }

func TestForTimesOut(t *testing.T) {
	r := &recorder{TB: t}
	stop := make(chan struct{})
	// A condition that never holds: For must give up and fail.
	For(r, 20*time.Millisecond, "nothing", func() bool {
		if r.failed != "" {
			close(stop)
			return true // leave the loop once the failure is recorded
		}
		return false
	})
	select {
	case <-stop:
	default:
		t.Fatal("For returned without failing the test")
	}
}
