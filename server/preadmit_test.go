package server

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
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
	if !evicted(d) {
		t.Fatal("a connection that never sent a byte was not evicted before one in its handshake")
	}
	f0 := add("192.0.2.7")
	if !evicted(e) {
		t.Fatal("the connection that never sent a byte was not evicted")
	}
	f1 := add("192.0.2.8")
	if !evicted(f0) {
		t.Fatal("the connection that never sent a byte was not evicted")
	}
	read(f1)
	clk.advance(time.Second)
	d = add("192.0.2.9")
	if !evicted(a) {
		t.Fatal("the longest-silent connection in its handshake was not evicted")
	}
	e = f1
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

// TestSessionSlotOnAdmission checks that connections in admission hold no session slot: with
// max_sessions 1 and silent connections open, a partner is admitted; a partner verified after
// the slot was taken gets ESID 08; a new connection while the slot is held is closed before
// TLS.
func TestSessionSlotOnAdmission(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"), servertest.EnabledPartner("O0013OTHER"))
	cfg.Limits = &tunnelv1.Limits{MaxSessions: 1, PerIpRate: 1e6, PerIpBurst: 1e6}
	env := newEnv(t, p, cfg, envOptions{logLevel: logrus.InfoLevel})
	addr := env.s.PartnerAddr()

	for range 3 { // silent connections in the pool
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	dial := func(id string) *servertest.RawPartner {
		t.Helper()
		leaf := p.Partner(t, id, nil)
		rp, err := servertest.DialPartner(addr, &leaf.TLS, p.CompanyCA.Pool())
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		t.Cleanup(func() { rp.Close() })
		if err := rp.ExpectSSRM(); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return rp
	}
	late := dial("O0013OTHER") // verified TLS, SSID still to come
	first := dial("O0013PARTNER")
	write(t, first, servertest.SSID(t, "O0013PARTNER", "", nil))
	if b, err := first.Read(10 * time.Second); err != nil || len(b) == 0 || b[0] != byte(oftp2.CodeSSID) {
		t.Fatalf("first partner: %q, %v; want the inside's SSID (admitted despite the silent connections)", b, err)
	}

	write(t, late, servertest.SSID(t, "O0013OTHER", "", nil))
	esid, err := late.ReadESID(10 * time.Second)
	if err != nil || esid.Reason != oftp2.ESIDResourcesNotAvailable {
		t.Fatalf("partner verified while the only slot is taken: ESID %v, %v; want reason 08", esid, err)
	}
	entry, _ := env.waitSecurityEvent(t, EventPartnerOverloaded, late.Conn.LocalAddr().String())
	if entry.Data["reason"] != "max_sessions" {
		t.Errorf("reason = %v, want max_sessions", entry.Data["reason"])
	}
	if n := len(env.client.SessionOpens()); n != 1 {
		t.Errorf("%d SessionOpens, want 1", n)
	}

	leaf := p.Partner(t, "O0013OTHER", nil)
	if rp, err := servertest.DialPartner(addr, &leaf.TLS, p.CompanyCA.Pool()); err == nil {
		err = rp.ExpectSSRM()
		rp.Close()
		if err == nil {
			t.Error("a new connection while the only session slot is held got SSRM, want it closed before TLS")
		}
	}
}

// TestPreadmitIdentify: a slot acquired without a source (a load balancer's connection) counts
// only in the total until identify gives it the partner's address, which then meets the source
// and prefix caps like any other.
func TestPreadmitIdentify(t *testing.T) {
	m, _ := newMetrics(nil)
	p := newPreadmitPool(time.Now, m)
	lim := testLimits()
	var slots []*preSlot
	for range 3 { // more than the per-source cap of 2: the balancer is not a source
		c, _ := pipeConn(t)
		sl, reason := p.acquire(c, netip.Addr{}, lim)
		if sl == nil {
			t.Fatalf("acquire without a source refused: %s", reason)
		}
		slots = append(slots, sl)
	}
	if len(p.bySource) != 0 || len(p.byPrefix) != 0 {
		t.Errorf("sourceless slots counted per source: %v %v", p.bySource, p.byPrefix)
	}
	src := netip.MustParseAddr("192.0.2.1")
	for i, want := range []string{"", "", reasonPerSource} {
		if got := slots[i].identify(src); got != want {
			t.Errorf("identify #%d = %q, want %q", i+1, got, want)
		}
	}
	if got := p.bySource[src]; got != 2 {
		t.Errorf("bySource[%s] = %d, want 2", src, got)
	}
	for _, sl := range slots {
		sl.release()
	}
	if p.size() != 0 || len(p.bySource) != 0 || len(p.byPrefix) != 0 {
		t.Errorf("left after release: %d slots, %v, %v", p.size(), p.bySource, p.byPrefix)
	}
}
