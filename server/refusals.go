package server

import (
	"net"
	"net/netip"
	"smartproxy/internal/event"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Refusal log summaries. Every security event that names a remote address (refused
// connections, failed handshakes, refused SSIDs, protocol violations; not partner_crl_missing
// nor partner_proxy_invalid, see summarised) counts against its source
// (an IPv4 address or an IPv6 /64, as for the rate limit). Per source and interval the first Config.RefusalLogBurst events are logged and
// sent to the backend one by one, so that fail2ban and an IDS see each of them; further ones
// are only counted, and at the end of the interval one event partner_refusals_suppressed per
// such source carries their count. Over all sources at most Config.RefusalLogMax events are
// logged one by one per interval and at most Config.RefusalLogMax sources are tracked; the
// events of sources beyond that are counted in one partner_refusals_suppressed line without an
// address. So a flood writes at most 2·RefusalLogMax + 1 security lines per interval whatever
// the number of connections and sources (defaults: 401 lines per 10 s), and the backend
// receives exactly the lines that were logged.

// Defaults of the refusal log summaries.
const (
	// DefaultRefusalLogInterval is Config.RefusalLogInterval when zero.
	DefaultRefusalLogInterval = 10 * time.Second
	// DefaultRefusalLogBurst is Config.RefusalLogBurst when zero: above fail2ban's usual
	// maxretry of 5, so that a source is banned on its individual lines alone.
	DefaultRefusalLogBurst = 10
	// DefaultRefusalLogMax is Config.RefusalLogMax when zero.
	DefaultRefusalLogMax = 200
)

// summarised reports whether security events named name count against their source's
// threshold: every one but the summaries themselves, partner_crl_missing, which is not a
// refusal (the connection is accepted; at most one per connection that passed TLS), and
// partner_proxy_invalid, whose source is a load balancer allowed to send PROXY headers: its
// summary would name the balancer, and the fail2ban filter bans the sources of summaries. A
// balancer sends it only when misconfigured, at most once per connection it relays.
func summarised(name string) bool {
	return name != EventPartnerRefusalsSuppressed && name != EventPartnerCRLMissing && name != EventPartnerProxyInvalid
}

// refusalLog decides which security events are logged one by one and collects the counts of
// the others. It is safe for concurrent use.
type refusalLog struct {
	burst int // events per source logged one by one per interval; < 0: all; immutable
	max   int // events logged one by one and sources tracked per interval; immutable

	mu              sync.Mutex
	logged          int                      // events logged one by one this interval; owned by mu
	sources         map[string]*sourceCounts // by source (sourceKey); owned by mu
	overflow        int                      // events of untracked sources; owned by mu
	overflowSources map[string]struct{}      // untracked sources, up to max; owned by mu
	overflowMore    bool                     // more untracked sources than overflowSources holds; owned by mu
}

// sourceCounts are one source's events of the current interval.
type sourceCounts struct {
	logged     int
	suppressed int
	lastAddr   string          // remote address of the last suppressed event
	names      map[string]bool // event names suppressed
}

func newRefusalLog(burst, max int) *refusalLog {
	return &refusalLog{burst: burst, max: max, sources: make(map[string]*sourceCounts), overflowSources: make(map[string]struct{})}
}

// admit reports whether the event name about remoteAddr ("ip:port") is to be logged one by
// one; if not, it is counted for the summary.
func (l *refusalLog) admit(remoteAddr, name string) bool {
	if l.burst < 0 {
		return true
	}
	// A source as the rate limiter counts it: an IPv4 address or an IPv6 /64, so that an
	// attacker cannot multiply its lines by the addresses of its /64.
	ip := remoteAddr
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		ip = sourceKey(ap.Addr()).String()
	} else if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		ip = h
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.sources[ip]
	if c == nil {
		if len(l.sources) >= l.max {
			l.overflow++
			if _, ok := l.overflowSources[ip]; !ok {
				if len(l.overflowSources) < l.max {
					l.overflowSources[ip] = struct{}{}
				} else {
					l.overflowMore = true
				}
			}
			return false
		}
		c = &sourceCounts{}
		l.sources[ip] = c
	}
	if c.logged < l.burst && l.logged < l.max {
		c.logged++
		l.logged++
		return true
	}
	c.suppressed++
	c.lastAddr = remoteAddr
	if c.names == nil {
		c.names = make(map[string]bool)
	}
	c.names[name] = true
	return false
}

// flush ends the interval: it returns the summary events of the sources with suppressed
// events (ordered by address) and starts a new interval.
func (l *refusalLog) flush(interval time.Duration) []event.Event {
	l.mu.Lock()
	sources, overflow, overflowSources, more := l.sources, l.overflow, len(l.overflowSources), l.overflowMore
	l.logged, l.overflow, l.overflowMore = 0, 0, false
	l.sources = make(map[string]*sourceCounts)
	l.overflowSources = make(map[string]struct{})
	l.mu.Unlock()

	var out []event.Event
	for _, c := range sources {
		if c.suppressed == 0 {
			continue
		}
		names := make([]string, 0, len(c.names))
		for n := range c.names {
			names = append(names, n)
		}
		sort.Strings(names)
		out = append(out, event.Security(EventPartnerRefusalsSuppressed, c.lastAddr, "", "per_source_threshold",
			strconv.Itoa(c.suppressed)+" more security events of this source in the last "+interval.String()+" were not logged one by one").
			With("count", strconv.Itoa(c.suppressed)).With("interval", interval.String()).With("events", strings.Join(names, ",")))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RemoteAddr < out[j].RemoteAddr })
	if overflow > 0 {
		n := strconv.Itoa(overflowSources)
		if more {
			n += " or more"
		}
		out = append(out, event.Security(EventPartnerRefusalsSuppressed, "", "", "too_many_sources",
			strconv.Itoa(overflow)+" security events of "+n+" further sources in the last "+interval.String()+" were not logged one by one").
			With("count", strconv.Itoa(overflow)).With("sources", n).With("interval", interval.String()))
	}
	return out
}
