package backoff

import (
	"testing"
	"time"
)

func TestExponentialCeiling(t *testing.T) {
	b := &Exponential{Base: 100 * time.Millisecond, Cap: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		if got := b.Ceiling(); got != w {
			t.Errorf("attempt %d: Ceiling() = %v, want %v", i, got, w)
		}
		b.Next()
	}
	// A very high attempt count must not overflow.
	b.attempt = 500
	if got := b.Ceiling(); got != time.Second {
		t.Errorf("attempt 500: Ceiling() = %v, want %v", got, time.Second)
	}
}

func TestExponentialFullJitter(t *testing.T) {
	var asked []int64
	b := &Exponential{Base: 100 * time.Millisecond, Cap: 350 * time.Millisecond, Rand: func(n int64) int64 {
		asked = append(asked, n)
		return n - 1 // the largest value the range allows
	}}
	var got []time.Duration
	for range 4 {
		got = append(got, b.Next())
	}
	wantAsked := []int64{int64(100 * time.Millisecond), int64(200 * time.Millisecond), int64(350 * time.Millisecond), int64(350 * time.Millisecond)}
	for i := range wantAsked {
		if asked[i] != wantAsked[i] {
			t.Errorf("Next() #%d asked Rand(%d), want Rand(%d)", i, asked[i], wantAsked[i])
		}
		if got[i] != time.Duration(wantAsked[i]-1) {
			t.Errorf("Next() #%d = %v, want %v", i, got[i], time.Duration(wantAsked[i]-1))
		}
	}

	// With the real random source every delay lies in [0, ceiling).
	r := &Exponential{Base: 10 * time.Millisecond, Cap: 80 * time.Millisecond}
	for i := range 200 {
		ceil := r.Ceiling()
		d := r.Next()
		if d < 0 || d >= ceil {
			t.Fatalf("Next() #%d = %v, want in [0, %v)", i, d, ceil)
		}
	}
}

func TestExponentialReset(t *testing.T) {
	tests := []struct {
		name        string
		lasted      time.Duration
		wantAttempt int
	}{
		{"short connection keeps backing off", 5 * time.Second, 3},
		{"just below stable", 9999 * time.Millisecond, 3},
		{"stable connection resets", 10 * time.Second, 0},
		{"long connection resets", time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Exponential{StableAfter: 10 * time.Second, Rand: func(int64) int64 { return 0 }}
			b.Next()
			b.Next()
			b.Next()
			b.Connected(tt.lasted)
			if got := b.Attempt(); got != tt.wantAttempt {
				t.Errorf("Connected(%v); Attempt() = %d, want %d", tt.lasted, got, tt.wantAttempt)
			}
		})
	}
}

func TestExponentialDefaultsAndValidate(t *testing.T) {
	var b Exponential
	if got := b.Ceiling(); got != DefaultBase {
		t.Errorf("zero Exponential Ceiling() = %v, want %v", got, DefaultBase)
	}
	if err := b.Validate(); err != nil {
		t.Errorf("zero Exponential Validate() = %v, want nil", err)
	}
	bad := []Exponential{
		{Base: -1},
		{Base: time.Minute, Cap: time.Second},
		{StableAfter: -time.Second},
	}
	for _, b := range bad {
		if err := b.Validate(); err == nil {
			t.Errorf("Exponential%+v.Validate() = nil, want error", b)
		}
	}
}

// TestDefaultCapBoundsReconnect checks the documented promise of the defaults: however many
// attempts an outage has cost, the next delay is below the cap, which leaves at least a second
// of a 5s budget for the connection set-up.
func TestDefaultCapBoundsReconnect(t *testing.T) {
	var b Exponential
	for range 1000 {
		b.Next()
	}
	if got := b.Ceiling(); got != DefaultCap || got > 4*time.Second {
		t.Errorf("after 1000 attempts Ceiling() = %v, want the default cap %v, at most 4s", got, DefaultCap)
	}
	b.Connected(DefaultStableAfter)
	if got := b.Ceiling(); got != DefaultBase {
		t.Errorf("after a stable connection Ceiling() = %v, want %v", got, DefaultBase)
	}
}
