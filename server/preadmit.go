package server

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The pre-admission pool holds every partner connection from accept until its SSID is
// verified (or it is refused): the TLS handshake and the SSID exchange, the part of a session
// an anonymous peer controls. It is what a flood of slow connections aims at, so it is strictly
// bounded and built so that a full pool does not lock real partners out:
//
//   - At most Limits.MaxHandshakes connections in total, Limits.MaxHandshakesPerSource from one
//     address and Limits.MaxHandshakesPerPrefix from one network prefix (/24 and /64 by
//     default). A connection over the source or prefix cap is closed before TLS (event
//     partner_source_limit): one host or one network cannot fill the pool alone.
//   - When the pool is full, a new connection evicts the connection that has been silent
//     longest, where silent means that the server is waiting for the peer: since the accept for
//     a connection that has not sent a byte, else since the server began its current read. The
//     time the server itself spends on a connection (its TLS computations, the certificate and
//     CRL checks, waiting for a CPU on a loaded host) is not the peer's silence: a connection
//     the server is working on is evicted only when no other is left. Connections silent for
//     longer than evictGrace (stalled) go first, those silent for less (a partner between two
//     of its flights) only when none is stalled; within each, connections that have not sent
//     a single byte go first, then those still in the TLS handshake, and only then those that
//     completed TLS: those presented a certificate of a trusted CA, which an anonymous prober
//     cannot. The evicted connection is closed (event partner_preadmission_evicted). A real
//     partner answers each flight within a round trip, so it is evicted only if the pool holds
//     no stalled connection at all, that is if it turned over completely within evictGrace.
//   - The TLS handshake and the SSID exchange have their own deadlines
//     (Limits.HandshakeTimeout, Limits.SSIDTimeout).
//
// The limits of the policy: an attacker who keeps MaxHandshakes connections talking, each
// answering within evictGrace, leaves no stalled connection and turns the pool over faster than
// a partner can finish; the per-source rate limit, the source and prefix caps and fail2ban on
// the event lines bound that rate per attacker address. docs/operations.md describes the
// policy for operators.

// evictGrace is how long the server may wait for a peer before the peer counts as stalled
// and goes before every connection that is merely between two flights: a partner's round trip
// across the internet and its own processing, generously. Its value only orders the
// candidates; a full pool always evicts one.
const evictGrace = time.Second

// errEvicted is the read error of a pre-admission connection that was evicted from the pool
// to make room for a new one.
var errEvicted = errors.New("evicted from the pre-admission pool: silent longest while the pool was full")

// Reasons of pre-admission refusals, the `reason` field of their events.
const (
	reasonPerSource = "max_handshakes_per_source"
	reasonPerPrefix = "max_handshakes_per_prefix"
	reasonEvicted   = "evicted_silent_longest"
)

// preadmitPool is the set of connections in admission. It is safe for concurrent use; the
// zero value is not: use newPreadmitPool.
type preadmitPool struct {
	now     func() time.Time
	metrics *metrics

	mu       sync.Mutex
	slots    map[*preSlot]struct{} // owned by mu
	bySource map[netip.Addr]int    // owned by mu
	byPrefix map[netip.Prefix]int  // owned by mu
}

func newPreadmitPool(now func() time.Time, m *metrics) *preadmitPool {
	return &preadmitPool{
		now:      now,
		metrics:  m,
		slots:    make(map[*preSlot]struct{}),
		bySource: make(map[netip.Addr]int),
		byPrefix: make(map[netip.Prefix]int),
	}
}

// preSlot is one connection's place in the pool.
type preSlot struct {
	pool   *preadmitPool
	conn   *preConn     // immutable
	source netip.Addr   // set once, at acquire or by identify; owned by pool.mu
	prefix netip.Prefix // set with source; owned by pool.mu
	lim    Limits       // the limits in force at accept; immutable

	lastRead  atomic.Int64 // unix nanoseconds of the last byte received, or of the accept
	waitSince atomic.Int64 // unix nanoseconds since the server waits in a read; 0 outside reads
	spoke     atomic.Bool  // at least one byte received
	evicted   atomic.Bool  // set under pool.mu before the deadline that unblocks the reader

	trusted bool // TLS completed (a certificate of a trusted CA); owned by pool.mu
	held    bool // counted in the pool; owned by pool.mu

	session bool // holds a session slot (Server.admitSession); owned by the connection's goroutine
}

// preConn is a partner connection that records when it last received a byte and reports
// errEvicted once its slot was evicted.
type preConn struct {
	net.Conn
	slot *preSlot
}

func (c *preConn) Read(b []byte) (int, error) {
	c.slot.waitSince.Store(c.slot.pool.now().UnixNano())
	n, err := c.Conn.Read(b)
	c.slot.waitSince.Store(0)
	if n > 0 {
		c.slot.lastRead.Store(c.slot.pool.now().UnixNano())
		c.slot.spoke.Store(true)
	}
	if err != nil && c.slot.evicted.Load() {
		err = errEvicted
	}
	return n, err
}

// acquire puts conn into the pool under lim, evicting the longest-silent connection when the
// pool is full, and sets the TLS deadline. It returns the slot, or "" and the reason of the
// refusal when the source or its prefix is at its cap. An invalid source (a connection from a
// load balancer, whose PROXY header names the partner) is counted in the total only, until
// identify gives the slot its source.
func (p *preadmitPool) acquire(conn net.Conn, source netip.Addr, lim Limits) (*preSlot, string) {
	sl := &preSlot{pool: p, lim: lim}
	sl.conn = &preConn{Conn: conn, slot: sl}
	now := p.now()
	sl.lastRead.Store(now.UnixNano())

	p.mu.Lock()
	defer p.mu.Unlock()
	if reason := p.placeLocked(sl, source); reason != "" {
		return nil, reason
	}
	for lim.MaxHandshakes > 0 && len(p.slots) >= lim.MaxHandshakes {
		v := p.victimLocked()
		if v == nil {
			break
		}
		v.evicted.Store(true)
		p.releaseLocked(v)
		v.conn.Conn.SetDeadline(time.Unix(1, 0))
	}
	sl.held = true
	p.slots[sl] = struct{}{}
	p.metrics.handshakes.Inc()
	conn.SetDeadline(now.Add(lim.HandshakeTimeout))
	return sl, ""
}

// placeLocked gives sl the source address and its prefix and counts them, or returns the
// reason of the refusal when either is at its cap. An invalid source is not counted. p.mu is
// held.
func (p *preadmitPool) placeLocked(sl *preSlot, source netip.Addr) string {
	if !source.IsValid() {
		return ""
	}
	lim := sl.lim
	source = source.Unmap().WithZone("")
	bits := lim.PrefixLengthV6
	if source.Is4() {
		bits = lim.PrefixLengthV4
	}
	prefix, err := source.Prefix(bits)
	if err != nil {
		prefix = netip.PrefixFrom(source, source.BitLen())
	}
	if lim.MaxHandshakesPerSource > 0 && p.bySource[source] >= lim.MaxHandshakesPerSource {
		return reasonPerSource
	}
	if lim.MaxHandshakesPerPrefix > 0 && p.byPrefix[prefix] >= lim.MaxHandshakesPerPrefix {
		return reasonPerPrefix
	}
	sl.source, sl.prefix = source, prefix
	p.bySource[source]++
	p.byPrefix[prefix]++
	return ""
}

// identify gives a slot acquired without a source (a connection from a load balancer) the
// partner's address from its PROXY header and applies the source and prefix caps to it. It
// returns the reason of the refusal when the source or its prefix is at its cap; the caller
// then closes the connection. A slot already evicted stays out of the pool (its next read
// reports errEvicted).
func (sl *preSlot) identify(source netip.Addr) string {
	p := sl.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if !sl.held || sl.source.IsValid() {
		return ""
	}
	return p.placeLocked(sl, source)
}

// victimLocked returns the connection to evict: the one of the lowest rank, p.mu is held.
func (p *preadmitPool) victimLocked() *preSlot {
	now := p.now().UnixNano()
	var best *preSlot
	var bestRank slotRank
	for sl := range p.slots {
		if r := sl.rank(now); best == nil || r.before(bestRank) {
			best, bestRank = sl, r
		}
	}
	return best
}

// slotRank orders the candidates for eviction: by tier, then class, then the longer silence.
type slotRank struct {
	tier   int   // 0 stalled (silent for evictGrace or more), 1 silent for less, 2 the server is working on it
	class  int   // 0 not a byte received, 1 in the TLS handshake, 2 past TLS with a trusted certificate
	silent int64 // nanoseconds the server has been waiting for the peer
}

func (a slotRank) before(b slotRank) bool {
	if a.tier != b.tier {
		return a.tier < b.tier
	}
	if a.class != b.class {
		return a.class < b.class
	}
	return a.silent > b.silent
}

// rank returns sl's eviction rank at now (unix nanoseconds). A connection that has not sent a
// byte is silent since its accept, whatever its goroutine is doing (it may not have run yet);
// one that has is silent only while the server waits for it in a read. p.mu is held.
func (sl *preSlot) rank(now int64) slotRank {
	var r slotRank
	since := sl.lastRead.Load() // the accept, for a connection that has not sent a byte
	switch {
	case sl.trusted:
		r.class = 2
		since = sl.waitSince.Load()
	case sl.spoke.Load():
		r.class = 1
		since = sl.waitSince.Load()
	}
	switch {
	case since == 0:
		r.tier = 2
	case now-since >= int64(evictGrace):
		r.silent = now - since
	default:
		r.tier, r.silent = 1, now-since
	}
	return r
}

// releaseLocked takes sl out of the pool if it is still in it. p.mu is held.
func (p *preadmitPool) releaseLocked(sl *preSlot) {
	if !sl.held {
		return
	}
	sl.held = false
	delete(p.slots, sl)
	if sl.source.IsValid() {
		if p.bySource[sl.source]--; p.bySource[sl.source] <= 0 {
			delete(p.bySource, sl.source)
		}
		if p.byPrefix[sl.prefix]--; p.byPrefix[sl.prefix] <= 0 {
			delete(p.byPrefix, sl.prefix)
		}
	}
	p.metrics.handshakes.Dec()
}

// size returns the number of connections in the pool.
func (p *preadmitPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.slots)
}

// tlsDone marks the connection as past TLS (its certificate chains to a trusted CA) and
// replaces the TLS deadline with the SSID deadline. An evicted connection keeps its expired
// deadline.
func (sl *preSlot) tlsDone() {
	p := sl.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if !sl.held {
		return
	}
	sl.trusted = true
	sl.conn.Conn.SetDeadline(p.now().Add(sl.lim.SSIDTimeout))
}

// admitted takes the verified connection out of the pool and clears its deadline: from here
// the session limits apply (sessionOpenTimeout, then the idle timeout). A connection evicted
// after its SSID was read is verified all the same, so the eviction is undone for it.
func (sl *preSlot) admitted() {
	p := sl.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(sl)
	sl.evicted.Store(false)
	sl.conn.Conn.SetDeadline(time.Time{})
}

// release takes the connection out of the pool if it is still in it. It is idempotent.
func (sl *preSlot) release() {
	p := sl.pool
	p.mu.Lock()
	p.releaseLocked(sl)
	p.mu.Unlock()
}
