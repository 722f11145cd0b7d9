package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"smartproxy/admin"
	"smartproxy/internal/event"
	"smartproxy/oftp2"
)

// The partner listener is open exactly while all of these hold: a valid configuration has been
// applied, at least one client tunnel is connected, and the server is not draining. While no
// client is connected, no partner session could reach the inside, so the port is closed rather
// than accepting connections only to refuse them: a partner's connection attempt fails at once
// (connection refused) and its OFTP2 software retries later, and nothing in the DMZ spends TLS
// handshakes on sessions that cannot be served. A change of the configured address closes the
// listener and binds the new address. A failed bind is reported (event partner_listener_failed)
// and retried after Config.ListenRetry.

// wantListener returns the address the partner listener should be bound to, or "" when it
// should be closed: Config.PartnerListenAddress if set, else the configuration's.
func (s *Server) wantListener() string {
	if s.draining.Load() {
		return ""
	}
	pol := s.policy.Load()
	if pol == nil || s.tunnelCount() == 0 {
		return ""
	}
	if s.cfg.PartnerListenAddress != "" {
		return s.cfg.PartnerListenAddress
	}
	return pol.ListenAddress
}

// listenerLoop owns the partner listener: it opens, rebinds and closes it as wantListener
// says whenever it is kicked, until ctx ends.
func (s *Server) listenerLoop(ctx context.Context) {
	var (
		ln         net.Listener
		boundTo    string // configured address ln was opened for
		acceptWG   sync.WaitGroup
		retry      <-chan time.Time
		retryTimer *time.Timer
	)
	defer func() {
		if retryTimer != nil {
			retryTimer.Stop()
		}
	}()
	closeLn := func(why string) {
		if ln == nil {
			return
		}
		addr := ln.Addr().String()
		ln.Close()
		acceptWG.Wait()
		ln, boundTo = nil, ""
		s.setListenerAddr("")
		s.metrics.listenerOpen.Set(0)
		s.emit(event.Event{Name: EventListenerClosed, Severity: infoSeverity, Reason: why,
			Message: "partner listener closed"}.With("listen_addr", addr))
	}
	defer closeLn("shutdown")
	for {
		want := s.wantListener()
		if ln != nil && want != boundTo {
			why := "no client tunnel connected"
			switch {
			case s.draining.Load():
				why = "draining"
			case want != "":
				why = "address changed"
			}
			closeLn(why)
		}
		if ln == nil && want != "" && retry == nil {
			l, err := net.Listen("tcp", want)
			if err != nil {
				s.emit(event.Event{Name: EventListenerFailed, Severity: errorSeverity, Reason: "bind_failed",
					Message: "partner listener could not bind: " + err.Error()}.With("listen_addr", want))
				retryTimer = time.NewTimer(s.cfg.ListenRetry)
				retry = retryTimer.C
			} else {
				ln, boundTo = l, want
				s.setListenerAddr(l.Addr().String())
				s.metrics.listenerOpen.Set(1)
				acceptWG.Add(1)
				go func() { defer acceptWG.Done(); s.acceptLoop(l) }()
				s.emit(event.Event{Name: EventListenerOpened, Severity: infoSeverity,
					Message: "partner listener open"}.With("listen_addr", l.Addr().String()))
			}
		}
		s.updateHealth()
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry:
			retry = nil
		}
	}
}

// Health returns the server's gRPC health service: overall SERVING only while at least one
// client tunnel is up, a valid license is installed and the partner listener is open, with the
// named parts admin.HealthServerTunnel and admin.HealthServerPartners. It is served on the
// tunnel port; give it to the admin listener too (admin.Config.Health).
func (s *Server) Health() *admin.Health { return s.health }

// updateHealth reports the tunnels, the partner listener and the license to the health
// service. Every change of one of them calls it (the listener manager runs after each tunnel
// change).
func (s *Server) updateHealth() {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	tunnels := s.tunnelCount()
	s.health.Set(admin.HealthServerTunnel, tunnels > 0, "no client tunnel connected")
	var why string
	switch {
	case s.PartnerAddr() != "":
		if err := s.license.Load().check(s.cfg.ProxyID, s.now()); err != nil {
			why = "license not valid: " + err.Error()
		}
	case s.draining.Load():
		why = "draining"
	case s.policy.Load() == nil:
		why = "no configuration received yet"
	case tunnels == 0:
		why = "no client tunnel connected"
	default:
		why = "partner listener not bound"
	}
	s.health.Set(admin.HealthServerPartners, why == "", why)
}

func (s *Server) setListenerAddr(a string) {
	s.listenerMu.Lock()
	s.listenerAddr = a
	s.listenerMu.Unlock()
}

// PartnerAddr returns the address the partner listener is bound to, or "" while it is closed.
func (s *Server) PartnerAddr() string {
	s.listenerMu.Lock()
	defer s.listenerMu.Unlock()
	return s.listenerAddr
}

// acceptLoop accepts partner connections on ln until it is closed. Limits that apply before
// TLS are checked here, in this order: concurrent sessions, per-source rate, then the
// pre-admission pool (per-source and per-prefix caps; a full pool evicts its longest-silent
// connection, see preadmit.go). A connection over a limit is closed at once, before any TLS
// byte.
func (s *Server) acceptLoop(ln net.Listener) {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and similar: back off instead of spinning.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			s.log.WithError(err).Warn("partner listener: accept failed")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.admitConn(conn)
	}
}

// admitConn applies the pre-TLS limits and starts the connection's goroutine. A connection
// from a load balancer allowed to send a PROXY header is exempt from the per-address rate and
// caps here: they apply to the partner's address once its header is read (proxyproto.go).
func (s *Server) admitConn(conn net.Conn) {
	pol := s.policy.Load()
	remote := remoteAddrPort(conn)
	refuse := func(name, reason, msg string) {
		conn.Close()
		s.refuseConn(event.Security(name, remote.String(), "", reason, msg))
	}
	if pol == nil {
		conn.Close()
		return
	}
	// Checked here to spare the TLS work when the server is full; the session slot itself is
	// taken on admission (admitSession), so that connections in admission, bounded by the
	// pool, can never hold the slots of verified sessions.
	if s.sessionGate.held() >= int64(s.maxSessions(pol)) {
		refuse(EventPartnerOverloaded, "max_sessions", "concurrent session limit reached")
		return
	}
	source := remote.Addr()
	if pol.proxyAllowed(source) {
		source = netip.Addr{}
	} else if !s.rate.allow(source, pol.Limits.PerIPRate, pol.Limits.PerIPBurst) {
		refuse(EventPartnerRateLimited, "per_ip_rate", "connection rate of the source exceeded")
		return
	}
	slot, reason := s.preadmit.acquire(conn, source, pol.Limits)
	if slot == nil {
		refuse(EventPartnerSourceLimit, reason, "the source or its network has its maximum of connections in admission")
		return
	}
	s.metrics.sessions.Inc()
	s.partnerWG.Add(1)
	go func() {
		defer s.partnerWG.Done()
		defer s.metrics.sessions.Dec()
		defer func() {
			if slot.session {
				s.sessionGate.release()
			}
		}()
		s.servePartner(slot.conn, pol, remote, slot)
	}()
}

// maxSessions is the concurrent session limit of pol, lowered by the license's.
func (s *Server) maxSessions(pol *Policy) int {
	n := pol.Limits.MaxSessions
	if ls := s.license.Load(); ls.lic != nil && ls.lic.MaxSessions > 0 && ls.lic.MaxSessions < n {
		n = ls.lic.MaxSessions
	}
	return n
}

// admitSession moves a verified partner connection from the pre-admission pool to a session
// slot. When every slot is taken it returns the refusal (ESID 08, resources not available).
func (s *Server) admitSession(slot *preSlot, pol *Policy, odetteID string) *refusal {
	if !s.sessionGate.tryAcquire(s.maxSessions(pol)) {
		slot.release()
		return &refusal{event: EventPartnerOverloaded, reason: "max_sessions", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: odetteID, msg: "concurrent session limit reached"}
	}
	slot.session = true
	slot.admitted()
	return nil
}
