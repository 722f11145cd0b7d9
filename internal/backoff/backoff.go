// Package backoff computes retry delays: full-jitter exponential backoff with a cap and a reset
// after a stable period. The tunnel client spaces its reconnects with it, the client's backend
// sync and event spool their retries.
package backoff

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Exponential computes delays with "full jitter" exponential backoff: attempt n (from 0) waits
// a uniformly random time in [0, min(Cap, Base·2ⁿ)). Full jitter spreads the retries of many
// clients after a server restart evenly instead of in waves.
//
// The cap bounds how long a client may sleep after the server has become reachable again:
// with the default cap of 3s, a tunnel client is back at most 3s plus one connection set-up
// after the server is up, however long the outage lasted. The attempt counter resets once a
// connection has stayed up for StableAfter, so a tunnel that was healthy reconnects quickly
// after a cut, while one that fails right after connecting keeps backing off.
//
// An Exponential is not safe for concurrent use; each retry loop owns its own copy.
type Exponential struct {
	// Base is the upper bound of the first delay. If zero, DefaultBase.
	Base time.Duration
	// Cap is the largest upper bound. If zero, DefaultCap.
	Cap time.Duration
	// StableAfter is how long a connection must last for the attempt counter to reset. If
	// zero, DefaultStableAfter.
	StableAfter time.Duration
	// Rand returns a pseudo-random number in [0, n) for n > 0. If nil, math/rand/v2.Int64N is
	// used. Tests inject a deterministic function.
	Rand func(n int64) int64

	attempt int // owned by the caller's loop
}

// Defaults of Exponential.
const (
	DefaultBase = 500 * time.Millisecond
	// DefaultCap keeps a reconnect within 5s of the server being reachable again: at most 3s
	// of sleep plus the connection set-up.
	DefaultCap         = 3 * time.Second
	DefaultStableAfter = 10 * time.Second
)

func (b *Exponential) base() time.Duration {
	if b.Base > 0 {
		return b.Base
	}
	return DefaultBase
}

func (b *Exponential) cap() time.Duration {
	if b.Cap > 0 {
		return b.Cap
	}
	return DefaultCap
}

func (b *Exponential) stableAfter() time.Duration {
	if b.StableAfter > 0 {
		return b.StableAfter
	}
	return DefaultStableAfter
}

// Validate reports a configuration error: a negative duration, or a cap below the base.
func (b *Exponential) Validate() error {
	if b.Base < 0 || b.Cap < 0 || b.StableAfter < 0 {
		return fmt.Errorf("backoff: negative duration (base %v, cap %v, stable after %v)", b.Base, b.Cap, b.StableAfter)
	}
	if b.cap() < b.base() {
		return fmt.Errorf("backoff: cap %v is below base %v", b.cap(), b.base())
	}
	return nil
}

// Ceiling returns the upper bound of the next delay, min(Cap, Base·2ⁿ) for the current attempt
// n, without advancing.
func (b *Exponential) Ceiling() time.Duration {
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

// Next returns the delay before the next attempt and advances the attempt counter.
func (b *Exponential) Next() time.Duration {
	ceil := b.Ceiling()
	b.attempt++
	r := b.Rand
	if r == nil {
		r = rand.Int64N
	}
	return time.Duration(r(int64(ceil)))
}

// Attempt returns the number of delays handed out since the last reset.
func (b *Exponential) Attempt() int { return b.attempt }

// Reset sets the attempt counter back to zero.
func (b *Exponential) Reset() { b.attempt = 0 }

// Connected tells the backoff how long the last connection lasted; it resets the attempt
// counter when that was at least StableAfter.
func (b *Exponential) Connected(lasted time.Duration) {
	if lasted >= b.stableAfter() {
		b.Reset()
	}
}
