package server

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// pipeConn returns one end of an in-memory connection; the other end is closed with the test.
func pipeConn(t *testing.T) (server, peer net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func testLimits() Limits {
	return Limits{MaxHandshakes: 100, MaxHandshakesPerSource: 2, MaxHandshakesPerPrefix: 3,
		PrefixLengthV4: 24, PrefixLengthV6: 64, HandshakeTimeout: time.Minute, SSIDTimeout: time.Minute}
}

func TestPreadmitCaps(t *testing.T) {
	m, _ := newMetrics(nil)
	clk := &fakeClock{t: time.Now()} // the pipes' deadlines are on the real clock
	p := newPreadmitPool(clk.now, m)
	lim := testLimits()
	tests := []struct {
		addr string
		want string // refusal reason; "" admitted
	}{
		{"192.0.2.1", ""},
		{"192.0.2.1", ""},
		{"192.0.2.1", reasonPerSource},
		{"::ffff:192.0.2.1", reasonPerSource}, // the same source, IPv4-mapped
		{"192.0.2.2", ""},
		{"192.0.2.3", reasonPerPrefix}, // 192.0.2.0/24 holds 3
		{"192.0.3.1", ""},              // another /24
		{"2001:db8:0:1::1", ""},
		{"2001:db8:0:1::2", ""},
		{"2001:db8:0:1:ffff::3", ""},
		{"2001:db8:0:1::4", reasonPerPrefix}, // the /64 holds 3
		{"2001:db8:0:2::1", ""},
	}
	var slots []*preSlot
	for i, tt := range tests {
		c, _ := pipeConn(t)
		sl, reason := p.acquire(c, netip.MustParseAddr(tt.addr), lim)
		if reason != tt.want || (sl == nil) != (tt.want != "") {
			t.Errorf("#%d acquire(%s) = %v, %q, want reason %q", i, tt.addr, sl != nil, reason, tt.want)
		}
		if sl != nil {
			slots = append(slots, sl)
		}
	}
	if got := p.size(); got != len(slots) {
		t.Errorf("size() = %d, want %d", got, len(slots))
	}
	// Releasing frees the source's place; release and admitted are idempotent.
	slots[0].release()
	slots[0].release()
	slots[0].admitted()
	c, _ := pipeConn(t)
	if sl, reason := p.acquire(c, netip.MustParseAddr("192.0.2.1"), lim); sl == nil {
		t.Errorf("acquire after a release refused: %s", reason)
	} else {
		slots[0] = sl
	}
	for _, sl := range slots {
		sl.admitted()
	}
	if got := p.size(); got != 0 {
		t.Errorf("size() after every slot was admitted = %d, want 0", got)
	}
	if len(p.bySource) != 0 || len(p.byPrefix) != 0 {
		t.Errorf("counts left after release: %v %v", p.bySource, p.byPrefix)
	}
}

func TestPreadmitEviction(t *testing.T) {
	m, _ := newMetrics(nil)
	clk := &fakeClock{t: time.Now()} // the pipes' deadlines are on the real clock
	p := newPreadmitPool(clk.now, m)
	lim := testLimits()
	lim.MaxHandshakes = 3
	lim.MaxHandshakesPerSource, lim.MaxHandshakesPerPrefix = 0, 0

	type conn struct {
		sl   *preSlot
		peer net.Conn
	}
	add := func(addr string) conn {
		t.Helper()
		c, peer := pipeConn(t)
		sl, reason := p.acquire(c, netip.MustParseAddr(addr), lim)
		if sl == nil {
			t.Fatalf("acquire(%s) refused: %s; a full pool must evict", addr, reason)
		}
		clk.advance(time.Second)
		return conn{sl, peer}
	}
	// read makes the connection receive one byte now.
	read := func(c conn) {
		t.Helper()
		go c.peer.Write([]byte{1})
		if _, err := c.sl.conn.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	evicted := func(c conn) bool {
		_, err := c.sl.conn.Read(make([]byte, 1))
		return errors.Is(err, errEvicted)
	}

	a := add("192.0.2.1") // silent since t=0
	b := add("192.0.2.2")
	c := add("192.0.2.3")
	read(a)        // a spoke last: b is now the longest silent
	c.sl.tlsDone() // c passed TLS: evicted only after every anonymous one
	clk.advance(time.Second)
	d := add("192.0.2.4")
	if !evicted(b) {
		t.Fatal("the longest-silent anonymous connection was not evicted")
	}
	e := add("192.0.2.5")
	if !evicted(a) {
		t.Fatal("the next longest-silent anonymous connection was not evicted")
	}
	d.sl.tlsDone()
	e.sl.tlsDone()
	f := add("192.0.2.6") // every other one passed TLS: the longest-silent of them goes
	if !evicted(c) {
		t.Fatal("with only TLS-verified connections left, the longest-silent was not evicted")
	}
	if p.size() != 3 {
		t.Errorf("size() = %d, want 3", p.size())
	}
	// An evicted slot's release does not touch the counts of the others.
	b.sl.release()
	for _, x := range []conn{d, e, f} {
		x.sl.admitted()
	}
	if p.size() != 0 || len(p.bySource) != 0 {
		t.Errorf("after admission: size %d, sources %v", p.size(), p.bySource)
	}
	// After admission a connection is no longer evictable, and its reads are plain.
	go f.peer.Close()
	if _, err := f.sl.conn.Read(make([]byte, 1)); errors.Is(err, errEvicted) || err == nil {
		t.Errorf("read of an admitted connection after the peer closed = %v, want EOF", err)
	}
}
