package server

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// gate counts holders of a resource with a limit that may change between calls (the limit comes
// from the policy in force). It never blocks: a caller over the limit is refused at once, which
// is what an overloaded listener must do. The zero value is ready to use.
type gate struct {
	n atomic.Int64
}

// tryAcquire takes one unit if fewer than max are held. max <= 0 means no limit. The count
// never exceeds max, not even for an instant.
func (g *gate) tryAcquire(max int) bool {
	for {
		v := g.n.Load()
		if max > 0 && v >= int64(max) {
			return false
		}
		if g.n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release returns one unit.
func (g *gate) release() { g.n.Add(-1) }

// held returns the number of units held.
func (g *gate) held() int64 { return g.n.Load() }

// rateLimiter is a per-source token bucket: each source may start rate connections per second
// with bursts of burst. Sources are IPv4 addresses and IPv6 /64 prefixes (one IPv6 host usually
// owns a whole /64, so limiting single addresses would be useless).
//
// The table of buckets is bounded by maxEntries. A bucket that has refilled completely carries
// no information (it behaves like a new one), so it is dropped when the table is full; if that
// is not enough, arbitrary buckets are dropped until a quarter of the table is free. Dropping a
// bucket can only make the limiter more permissive for that source, never refuse anyone
// wrongly. Each sweep frees at least a quarter of the table, so the cost per call is O(1)
// amortised.
//
// rateLimiter is safe for concurrent use.
type rateLimiter struct {
	maxEntries int
	now        func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket // owned by mu
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newRateLimiter returns a limiter whose table holds at most maxEntries sources.
func newRateLimiter(maxEntries int, now func() time.Time) *rateLimiter {
	if maxEntries <= 0 {
		maxEntries = defaultRateLimiterEntries
	}
	if now == nil {
		now = time.Now
	}
	return &rateLimiter{maxEntries: maxEntries, now: now, buckets: make(map[netip.Prefix]*bucket)}
}

// defaultRateLimiterEntries bounds the per-source table: 65,536 sources × ~100 bytes.
const defaultRateLimiterEntries = 1 << 16

// sourceKey returns the rate-limiting key of addr: the address itself for IPv4 (also when
// IPv4-mapped) and its /64 for IPv6.
func sourceKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.WithZone("").Prefix(64)
	return p
}

// allow reports whether a new connection from addr is allowed, and takes a token if so. A rate
// of 0 or less means no limit; a burst below 1 is treated as 1.
func (l *rateLimiter) allow(addr netip.Addr, rate float64, burst int) bool {
	if rate <= 0 || math.IsInf(rate, 1) || math.IsNaN(rate) {
		return true
	}
	if burst < 1 {
		burst = 1
	}
	key := sourceKey(addr)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxEntries {
			l.sweepLocked(now, rate, burst)
		}
		b = &bucket{tokens: float64(burst), last: now}
		l.buckets[key] = b
	} else {
		elapsed := now.Sub(b.last).Seconds()
		if elapsed > 0 {
			b.tokens = math.Min(float64(burst), b.tokens+elapsed*rate)
			b.last = now
		}
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweepLocked frees at least a quarter of the table. l.mu is held.
func (l *rateLimiter) sweepLocked(now time.Time, rate float64, burst int) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= float64(burst) {
			delete(l.buckets, k)
		}
	}
	target := l.maxEntries - l.maxEntries/4
	for k := range l.buckets {
		if len(l.buckets) <= target {
			break
		}
		delete(l.buckets, k)
	}
}

// size returns the number of sources in the table.
func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
