package server

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
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

// TestPreadmitVictim: the eviction order over slots in given states. Times are seconds before
// now; "busy" means the server is working on the connection (not waiting in a read).
func TestPreadmitVictim(t *testing.T) {
	type state struct {
		class int     // 0 not a byte received, 1 in TLS, 2 past TLS (trusted)
		since float64 // seconds the server has been waiting for the peer (for class 0: since the accept)
		busy  bool    // the server is working on it
	}
	tests := []struct {
		name  string
		slots map[string]state
		want  string
	}{
		{"not a byte before a handshake", map[string]state{"silent": {0, 3, false}, "hs": {1, 5, false}}, "silent"},
		{"longest silent within a class", map[string]state{"a": {0, 2, false}, "b": {0, 4, false}}, "b"},
		{"stalled anonymous before stalled trusted", map[string]state{"trusted": {2, 5, false}, "hs": {1, 1.2, false}}, "hs"},
		{"stalled trusted before a fresh handshake and a fresh newcomer", map[string]state{"trusted": {2, 2, false}, "hs": {1, 0.2, false}, "new": {0, 0.1, false}}, "trusted"},
		{"a fresh newcomer is spared while one is stalled", map[string]state{"new": {0, 0.05, false}, "hs": {1, 1.5, false}}, "hs"},
		{"the server's own work is not silence", map[string]state{"verifying": {1, 10, true}, "hs": {1, 0.3, false}, "trusted": {2, 0.1, false}}, "hs"},
		{"all fresh: by class", map[string]state{"trusted": {2, 0.5, false}, "hs": {1, 0.1, false}}, "hs"},
		{"a busy one when nothing else is left", map[string]state{"verifying": {1, 10, true}}, "verifying"},
		{"a newcomer the server has not read yet is silent since its accept", map[string]state{"new": {0, 1.5, true}, "hs": {1, 1.2, false}}, "new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newMetrics(nil)
			clk := &fakeClock{t: time.Unix(1_000_000, 0)}
			p := newPreadmitPool(clk.now, m)
			names := map[*preSlot]string{}
			for name, st := range tt.slots {
				sl := &preSlot{pool: p, held: true, trusted: st.class == 2}
				sl.spoke.Store(st.class > 0)
				at := clk.t.Add(-time.Duration(st.since * float64(time.Second))).UnixNano()
				if st.class == 0 {
					sl.lastRead.Store(at) // the accept
				} else {
					sl.lastRead.Store(at - int64(time.Millisecond))
					if !st.busy {
						sl.waitSince.Store(at)
					}
				}
				p.slots[sl] = struct{}{}
				names[sl] = name
			}
			p.mu.Lock()
			got := p.victimLocked()
			p.mu.Unlock()
			if names[got] != tt.want {
				t.Errorf("victim = %q, want %q", names[got], tt.want)
			}
		})
	}
}

// TestPreadmitEviction drives the pool through real reads on in-memory connections: a full
// pool evicts the connection the server has waited for longest (its blocked read returns
// errEvicted), never one whose bytes it is working on while another is waiting, and eviction
// keeps the counts right.
func TestPreadmitEviction(t *testing.T) {
	m, _ := newMetrics(nil)
	clk := &fakeClock{t: time.Now()} // the pipes' deadlines are on the real clock
	var clkMu sync.Mutex
	now := func() time.Time { clkMu.Lock(); defer clkMu.Unlock(); return clk.now() }
	advance := func(d time.Duration) { clkMu.Lock(); clk.advance(d); clkMu.Unlock() }
	p := newPreadmitPool(now, m)
	lim := testLimits()
	lim.MaxHandshakes = 3
	lim.MaxHandshakesPerSource, lim.MaxHandshakesPerPrefix = 0, 0

	type conn struct {
		sl   *preSlot
		peer net.Conn
		read chan error // the result of the read started by wait
	}
	add := func(addr string) *conn {
		t.Helper()
		c, peer := pipeConn(t)
		sl, reason := p.acquire(c, netip.MustParseAddr(addr), lim)
		if sl == nil {
			t.Fatalf("acquire(%s) refused: %s; a full pool must evict", addr, reason)
		}
		return &conn{sl: sl, peer: peer}
	}
	// speak makes the connection receive one byte: the server read it and now works on it.
	speak := func(c *conn) {
		t.Helper()
		go c.peer.Write([]byte{1})
		if _, err := c.sl.conn.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	// wait makes the server wait for the peer in a read, as its next handshake step does.
	wait := func(c *conn) {
		t.Helper()
		c.read = make(chan error, 1)
		go func() {
			_, err := c.sl.conn.Read(make([]byte, 1))
			c.read <- err
		}()
		waitFor(t, "the read to start", func() bool { return c.sl.waitSince.Load() != 0 })
	}
	evicted := func(c *conn) bool {
		t.Helper()
		select {
		case err := <-c.read:
			return errors.Is(err, errEvicted)
		case <-time.After(10 * time.Second):
			return false
		}
	}

	a := add("192.0.2.1")
	b := add("192.0.2.2")
	c := add("192.0.2.3")
	speak(a) // the server works on a's bytes (its TLS computations)
	speak(b)
	speak(c)
	wait(b)
	c.sl.tlsDone()
	wait(c) // past TLS, waiting for the SSID
	advance(2 * time.Second)
	d := add("192.0.2.4") // the pool is full: b, stalled in its handshake, goes first
	if !evicted(b) {
		t.Fatal("the stalled handshake was not evicted")
	}
	advance(100 * time.Millisecond)
	add("192.0.2.5") // d, a newcomer, is spared for evictGrace; c is stalled
	if !evicted(c) {
		t.Fatal("the stalled TLS-verified connection was not evicted before a fresh newcomer")
	}
	wait(d)
	advance(2 * time.Second)
	add("192.0.2.6") // d and e never sent a byte: the older one goes; a, being worked on, stays
	if !evicted(d) {
		t.Fatal("the oldest connection that never sent a byte was not evicted")
	}
	if got := p.size(); got != 3 {
		t.Errorf("size() = %d, want 3", got)
	}
	a.sl.admitted()
	if got, want := len(p.bySource), 2; got != want {
		t.Errorf("sources counted after evictions and an admission: %v, want %d", p.bySource, want)
	}
	// After admission a connection is no longer evictable, and its reads are plain.
	go a.peer.Close()
	if _, err := a.sl.conn.Read(make([]byte, 1)); errors.Is(err, errEvicted) || err == nil {
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

// offsetClock is the real clock plus an offset the test moves forward: deadlines stay real,
// while the pool sees time pass at once.
type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *offsetClock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// heldConn holds the second write on the connection (a TLS client's flight after the server's
// ServerHello) until release is closed, and closes held when it does.
type heldConn struct {
	net.Conn
	writes  int // owned by the writing goroutine
	held    chan struct{}
	release chan struct{}
}

func (c *heldConn) Write(b []byte) (int, error) {
	if c.writes++; c.writes == 2 {
		close(c.held)
		<-c.release
	}
	return c.Conn.Write(b)
}

// TestEvictionSparesAnsweringPartner: the pool is full of TLS-verified connections that have
// not sent their SSID for two seconds and of a partner in the middle of its TLS handshake (the
// server has sent its flight and waits for the partner's). A new connection evicts one of the
// stalled ones, not the partner, which then completes its handshake and is admitted. (Ranking
// by class alone evicted the partner here: a handshake went before every TLS-verified
// connection, however long those had been silent.)
func TestEvictionSparesAnsweringPartner(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	cfg.Limits = &tunnelv1.Limits{MaxHandshakes: 4, PerIpRate: 1e6, PerIpBurst: 1e6}
	clk := &offsetClock{}
	env := newEnv(t, p, cfg, envOptions{logLevel: logrus.InfoLevel, config: func(c *Config) { c.Now = clk.now }})
	addr := env.s.PartnerAddr()

	attacker := p.Partner(t, "O0013ATTACKER", nil) // a trusted CA's certificate, no partner's
	for range 3 {
		rp, err := servertest.DialPartner(addr, &attacker.TLS, p.CompanyCA.Pool())
		if err != nil {
			t.Fatal(err)
		}
		defer rp.Close()
		if err := rp.ExpectSSRM(); err != nil { // past TLS; its SSID never comes
			t.Fatal(err)
		}
	}
	// SSRM reaches the attackers just before the server starts to read their SSIDs.
	waitFor(t, "the server waiting for the 3 SSIDs", func() bool {
		pool := env.s.preadmit
		pool.mu.Lock()
		defer pool.mu.Unlock()
		n := 0
		for sl := range pool.slots {
			if sl.trusted && sl.waitSince.Load() != 0 {
				n++
			}
		}
		return n == 3
	})
	clk.advance(2 * time.Second)

	partner := p.Partner(t, "O0013PARTNER", nil)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hc := &heldConn{Conn: raw, held: make(chan struct{}), release: make(chan struct{})}
	tc := tls.Client(hc, &tls.Config{RootCAs: p.CompanyCA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{partner.TLS}})
	handshake := make(chan error, 1)
	go func() { handshake <- tc.Handshake() }()
	select {
	case <-hc.held: // the server's flight has arrived; the partner's answer is held
	case err := <-handshake:
		t.Fatalf("handshake ended before the partner's flight: %v", err)
	}

	newcomer, err := net.Dial("tcp", addr) // the pool is full: one must go
	if err != nil {
		t.Fatal(err)
	}
	defer newcomer.Close()
	ev := env.logEntry(t, EventPartnerEvicted, nil)
	if got := ev.Data["remote_addr"]; got == raw.LocalAddr().String() {
		t.Fatalf("the partner in its handshake was evicted, want a connection stalled for 2 s: %v", ev.Data)
	}

	close(hc.release)
	if err := <-handshake; err != nil {
		t.Fatalf("partner handshake: %v", err)
	}
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := oftp2.NewReader(tc, 0), oftp2.NewWriter(tc)
	if b, err := r.ReadBuffer(); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSRM {
		t.Fatalf("partner: first command %q, %v; want SSRM", b, err)
	}
	if err := w.WriteBuffer(servertest.SSID(t, "O0013PARTNER", "", nil)); err != nil {
		t.Fatal(err)
	}
	if b, err := r.ReadBuffer(); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
		t.Fatalf("partner: answer to its SSID %q, %v; want the inside's SSID (admitted)", b, err)
	}
}
