package transport

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff computes reconnect delays with "full jitter" exponential backoff:
// attempt n (from 0) waits a uniformly random time in [0, min(Cap, Base·2ⁿ)).
// Full jitter spreads the reconnects of many clients after a server restart
// evenly instead of in waves. The attempt counter resets once a connection
// has stayed up for StableAfter, so a tunnel that was healthy for a long time
// reconnects quickly, while one that fails right after connecting backs off.
//
// A Backoff is not safe for concurrent use; each tunnel stream loop owns one.
type Backoff struct {
	// Base is the upper bound of the first delay. If zero, 500ms.
	Base time.Duration
	// Cap is the largest upper bound. If zero, 30s.
	Cap time.Duration
	// StableAfter is how long a connection must last for the attempt counter
	// to reset. If zero, 60s.
	StableAfter time.Duration
	// Rand returns a pseudo-random number in [0, n) for n > 0. If nil,
	// math/rand/v2.Int64N is used. Tests inject a deterministic function.
	Rand func(n int64) int64

	attempt int // owned by the caller's loop
}

// Defaults of Backoff.
const (
	DefaultBackoffBase        = 500 * time.Millisecond
	DefaultBackoffCap         = 30 * time.Second
	DefaultBackoffStableAfter = 60 * time.Second
)

func (b *Backoff) base() time.Duration {
	if b.Base > 0 {
		return b.Base
	}
	return DefaultBackoffBase
}

func (b *Backoff) cap() time.Duration {
	if b.Cap > 0 {
		return b.Cap
	}
	return DefaultBackoffCap
}

func (b *Backoff) stableAfter() time.Duration {
	if b.StableAfter > 0 {
		return b.StableAfter
	}
	return DefaultBackoffStableAfter
}

// validate reports a configuration error.
func (b *Backoff) validate() error {
	if b.Base < 0 || b.Cap < 0 || b.StableAfter < 0 {
		return fmt.Errorf("transport: negative backoff duration (base %v, cap %v, stable after %v)", b.Base, b.Cap, b.StableAfter)
	}
	if b.cap() < b.base() {
		return fmt.Errorf("transport: backoff cap %v is below base %v", b.cap(), b.base())
	}
	return nil
}

// Ceiling returns the upper bound of the next delay, min(Cap, Base·2ⁿ) for the
// current attempt n, without advancing.
func (b *Backoff) Ceiling() time.Duration {
	c, base := b.cap(), b.base()
	d := base
	for i := 0; i < b.attempt; i++ {
		if d >= c/2 {
			return c
		}
		d *= 2
	}
	return min(d, c)
}

// Next returns the delay before the next attempt and advances the attempt
// counter.
func (b *Backoff) Next() time.Duration {
	ceil := b.Ceiling()
	b.attempt++
	r := b.Rand
	if r == nil {
		r = rand.Int64N
	}
	return time.Duration(r(int64(ceil)))
}

// Attempt returns the number of delays handed out since the last reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset sets the attempt counter back to zero.
func (b *Backoff) Reset() { b.attempt = 0 }

// Connected tells the backoff how long the last connection lasted; it resets
// the attempt counter when that was at least StableAfter.
func (b *Backoff) Connected(lasted time.Duration) {
	if lasted >= b.stableAfter() {
		b.Reset()
	}
}
