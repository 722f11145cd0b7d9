package server

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	var g gate
	for i := 0; i < 3; i++ {
		if !g.tryAcquire(3) {
			t.Fatalf("tryAcquire #%d with limit 3 = false", i+1)
		}
	}
	if g.tryAcquire(3) {
		t.Errorf("tryAcquire over the limit = true")
	}
	if got := g.held(); got != 3 {
		t.Errorf("held() = %d, want 3", got)
	}
	g.release()
	if !g.tryAcquire(3) {
		t.Errorf("tryAcquire after release = false")
	}
	if !g.tryAcquire(0) {
		t.Errorf("tryAcquire with no limit = false")
	}
	// Concurrent acquirers never exceed the limit.
	var c gate
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.tryAcquire(10) {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if got != 10 {
		t.Errorf("%d concurrent acquirers got through a limit of 10", got)
	}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRateLimiter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := newRateLimiter(100, clk.now)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 3; i++ {
		if !l.allow(a, 1, 3) {
			t.Fatalf("allow #%d within the burst = false", i+1)
		}
	}
	if l.allow(a, 1, 3) {
		t.Errorf("allow beyond the burst = true")
	}
	if !l.allow(b, 1, 3) {
		t.Errorf("another source is limited by the first one's bucket")
	}
	clk.advance(time.Second)
	if !l.allow(a, 1, 3) {
		t.Errorf("allow after one second at rate 1/s = false")
	}
	if l.allow(a, 1, 3) {
		t.Errorf("second allow after one second at rate 1/s = true")
	}
	if !l.allow(a, 0, 0) {
		t.Errorf("rate 0 (no limit) refused")
	}
	// IPv4-mapped addresses share the IPv4 bucket; IPv6 is limited per /64.
	if l.allow(netip.MustParseAddr("::ffff:192.0.2.1"), 1, 3) {
		t.Errorf("IPv4-mapped address has its own bucket")
	}
	v6a := netip.MustParseAddr("2001:db8:1:2::1")
	v6b := netip.MustParseAddr("2001:db8:1:2:ffff::9")
	for i := 0; i < 3; i++ {
		l.allow(v6a, 1, 3)
	}
	if l.allow(v6b, 1, 3) {
		t.Errorf("an address of the same /64 has its own bucket")
	}
	if !l.allow(netip.MustParseAddr("2001:db8:1:3::1"), 1, 3) {
		t.Errorf("an address of another /64 is limited")
	}
}

func TestRateLimiterBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	const max = 64
	l := newRateLimiter(max, clk.now)
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	// A flood from many sources never grows the table beyond its bound.
	for i := 0; i < 10*max; i++ {
		l.allow(src(i), 1, 2)
		if n := l.size(); n > max {
			t.Fatalf("table holds %d sources after %d, bound %d", n, i+1, max)
		}
	}
	// Sources whose buckets refilled are dropped first: a source that is limited right now
	// keeps its state while the table overflows.
	clk.advance(10 * time.Second) // every flood bucket (rate 1/s, burst 2) has refilled
	hot := netip.MustParseAddr("192.0.2.99")
	l.allow(hot, 1, 2)
	l.allow(hot, 1, 2)
	for i := 0; i < max-2; i++ { // flood entries are swept; hot and these fit without random eviction
		l.allow(src(100000+i), 1, 2)
	}
	if l.allow(hot, 1, 2) {
		t.Errorf("a limited source lost its bucket to refilled ones")
	}
}
