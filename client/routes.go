package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"smartproxy/internal/event"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/bridge"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// Event names of outgoing sessions, the event field of their log line.
const (
	// EventRouteListening: a route's listener was opened (or moved to a new address).
	EventRouteListening = "route_listening"
	// EventRouteListenFailed: a route's listen address could not be bound.
	EventRouteListenFailed = "route_listen_failed"
	// EventRouteClosed: a route's listener was closed (route removed or moved).
	EventRouteClosed = "route_closed"
	// EventOutgoingRefused: an outgoing session could not be opened: no tunnel, or the DMZ
	// server refused it (unknown route, partner not allowed, partner unreachable, partner
	// certificate refused, ...). The internal initiator received an ESID.
	EventOutgoingRefused = "outgoing_refused"
)

// outgoingOpenTimeout bounds the wait for the server's SessionOpened of an outgoing session
// (it dials the partner and verifies its certificate meanwhile).
const outgoingOpenTimeout = 90 * time.Second

// routeListener is the listener of one route.
type routeListener struct {
	name string
	addr string // the configured listen address
	ln   net.Listener
}

// runRoutes keeps one listener open on every route's listen address of the configuration in
// force, until ctx ends. A route whose address changed is moved (its old listener closed, a new
// one opened); listeners of unchanged routes stay, and no accepted session is touched by a
// configuration change.
func (c *Client) runRoutes(ctx context.Context) {
	open := make(map[string]*routeListener)
	defer func() {
		for _, rl := range open {
			c.closeRoute(rl, "shutdown")
		}
	}()
	for {
		snap, changed := c.configState()
		want := make(map[string]*tunnelv1.Route)
		for _, r := range snap.Security.GetOutgoingRoutes() {
			want[r.GetName()] = r
		}
		for name, rl := range open {
			if r := want[name]; r == nil || r.GetListenAddress() != rl.addr {
				c.closeRoute(rl, "configuration changed")
				delete(open, name)
			}
		}
		for name, r := range want {
			if open[name] != nil {
				continue
			}
			if rl := c.openRoute(ctx, r); rl != nil {
				open[name] = rl
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// openRoute listens on r's address and starts its accept loop.
func (c *Client) openRoute(ctx context.Context, r *tunnelv1.Route) *routeListener {
	log := c.log.WithFields(logrus.Fields{"route": r.GetName(), "listen_address": r.GetListenAddress()})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", r.GetListenAddress())
	if err != nil {
		c.events.Emit(log, event.New(EventRouteListenFailed, "cannot listen for the route; it stays closed until the next configuration change").
			With("error", err.Error()))
		return nil
	}
	rl := &routeListener{name: r.GetName(), addr: r.GetListenAddress(), ln: ln}
	log.WithFields(logrus.Fields{"event": EventRouteListening, "partner": r.GetPartnerOdetteId(), "partner_address": r.GetPartnerAddress()}).
		Info("listening for outgoing sessions of the route")
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed by closeRoute
			}
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.serveOutgoing(ctx, conn, rl.name)
			}()
		}
	}()
	return rl
}

func (c *Client) closeRoute(rl *routeListener, why string) {
	rl.ln.Close()
	c.log.WithFields(logrus.Fields{"event": EventRouteClosed, "route": rl.name, "listen_address": rl.addr}).Info("route listener closed: " + why)
}

// pickStream returns the established, not draining stream with the fewest sessions, or nil:
// among the streams of the server whose Proxy ID is preferred (Route.preferred_server) if one
// of them qualifies, else among all, whatever server they lead to. Ties go to the first in
// Config.Servers order.
func (c *Client) pickStream(preferred string) *stream {
	c.mu.Lock()
	list := c.streamList()
	shutdown := c.shutdown
	c.mu.Unlock()
	if shutdown {
		return nil
	}
	var best, bestPreferred *stream
	bestN, bestPreferredN := 0, 0
	for _, st := range list {
		st.mu.Lock()
		ok, n, proxyID := st.welcome != nil && !st.draining, st.sessions, st.welcome.GetProxyId()
		st.mu.Unlock()
		if !ok {
			continue
		}
		if best == nil || n < bestN {
			best, bestN = st, n
		}
		if preferred != "" && proxyID == preferred && (bestPreferred == nil || n < bestPreferredN) {
			bestPreferred, bestPreferredN = st, n
		}
	}
	if bestPreferred != nil {
		return bestPreferred
	}
	return best
}

// serveOutgoing runs one outgoing session: the internal OFTP2 server (the Initiator) called
// the route's listener. The session is opened on a tunnel at once, the DMZ server dials the
// partner, and the bridge carries the session from the partner's SSRM on. When the session
// cannot be opened the internal initiator receives an ESID with the reason and a short text.
func (c *Client) serveOutgoing(ctx context.Context, conn net.Conn, routeName string) {
	defer conn.Close()
	log := c.log.WithFields(logrus.Fields{"direction": "outgoing", "route": routeName, "remote_addr": conn.RemoteAddr().String()})
	var partner, preferred string
	for _, r := range c.Current().Security.GetOutgoingRoutes() {
		if r.GetName() == routeName {
			partner, preferred = r.GetPartnerOdetteId(), r.GetPreferredServer()
		}
	}
	st := c.pickStream(preferred)
	if st == nil {
		c.refuseOutgoing(conn, log, &tunnel.CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED,
			ESID: uint32(oftp2.ESIDResourcesNotAvailable), Text: "no tunnel to the DMZ server"})
		return
	}
	octx, cancel := context.WithTimeout(ctx, outgoingOpenTimeout)
	ts, err := st.mux.Open(octx, &tunnelv1.SessionOpen{
		Direction:       tunnelv1.Direction_DIRECTION_OUTGOING,
		RouteName:       routeName,
		PartnerOdetteId: partner,
		RemoteAddr:      conn.RemoteAddr().String(),
	})
	cancel()
	if err != nil {
		var ce *tunnel.CloseError
		if !errors.As(err, &ce) {
			ce = &tunnel.CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_INTERNAL, ESID: uint32(oftp2.ESIDResourcesNotAvailable), Text: err.Error()}
		}
		c.refuseOutgoing(conn, log, ce)
		return
	}
	s, log := c.addSession(st, ts)
	defer c.removeSession(s)
	st.mu.Lock()
	st.sessions++
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.sessions--
		st.mu.Unlock()
	}()
	c.metrics.opens.WithLabelValues("outgoing_accepted").Inc()
	s.setState("open")
	log.WithFields(logrus.Fields{"event": EventSessionStarted, "route": routeName, "partner_address": ts.Opened().GetRemoteAddr()}).
		Info("outgoing session opened to the partner")
	c.bridge(s, conn, log)
}

// refuseOutgoing answers an internal initiator whose session could not be opened with an ESID
// (RFC 5024 §5.3.11 allows the Responder to end a session at any time; the initiator is waiting
// for SSRM) and logs why.
func (c *Client) refuseOutgoing(conn net.Conn, log logrus.FieldLogger, ce *tunnel.CloseError) {
	c.metrics.opens.WithLabelValues(EventOutgoingRefused).Inc()
	reason := oftp2.ESIDReason(ce.ESID)
	if ce.ESID > 99 || !reason.Valid() || reason == oftp2.ESIDNormal {
		reason = oftp2.ESIDReason(tunnel.DefaultESID(ce.Reason))
	}
	e := event.New(EventOutgoingRefused, "outgoing session refused").With("esid_reason", fmt.Sprintf("%02d", uint8(reason))).With("text", ce.Text)
	e.Reason = tunnel.ReasonString(ce.Reason)
	c.events.Emit(log, e)
	if err := bridge.Refuse(conn, reason, ce.Text); err != nil {
		log.WithError(err).Debug("ESID to the internal initiator not written")
	}
}
