package server

import (
	"crypto/tls"
	"fmt"
	"smartproxy/internal/event"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// EventOutgoingIDMismatch: a called partner answered with an SSID whose Odette ID is not the
// route's; ESID 03 to both sides.
const EventOutgoingIDMismatch = "outgoing_partner_id_mismatch"

// acceptOutgoing is the multiplexer's Accept callback: a SessionOpen from the client is an
// outgoing session (the internal OFTP2 server called a route's listener). It runs on the
// stream's reading goroutine and must not block.
func (s *Server) acceptOutgoing(tc *tunnelConn, sess *tunnel.Session) {
	s.partnerWG.Add(1)
	go func() {
		defer s.partnerWG.Done()
		s.serveOutgoing(tc, sess)
	}()
}

// serveOutgoing runs one outgoing session: checks of the route, the partner, the limits and
// the license; the dial (TCP from the outgoing source address, TLS with the company
// certificate, the partner's server certificate verified and bound to the route's Odette ID);
// then the bridge, in which the partner's SSRM goes inside, the internal initiator's SSID goes
// out, and the partner's SSID answer must carry the route's Odette ID. Nothing of the internal
// initiator reaches the partner before its certificate was accepted: the session is accepted
// only after the dial.
func (s *Server) serveOutgoing(tc *tunnelConn, sess *tunnel.Session) {
	open := sess.Open()
	pol := s.policy.Load()
	var route *Route
	if pol != nil {
		route = pol.Routes[open.GetRouteName()]
	}
	remote := ""
	if route != nil {
		remote = route.PartnerAddress
	}
	ps, log, done := s.newPartnerSession(remote, "outgoing", "checking route")
	defer done()
	ps.set(func(ps *partnerSession) { ps.tunnel = tc; ps.tunnelSID = sess.ID() })
	log = log.WithFields(logrus.Fields{"route": open.GetRouteName(), "tunnel_session_id": sess.ID(), "internal_addr": open.GetRemoteAddr()})

	refuse := func(ref *refusal, reason tunnelv1.AbortReason) {
		s.metrics.admissions.WithLabelValues(ref.event).Inc()
		if ref.remote == "" {
			ref.remote = remote
		}
		ev := ref.outgoingEvent().With("route", open.GetRouteName()).With("local_session_id", strconv.FormatUint(ps.id, 10))
		ev.SessionID = sess.ID()
		s.emitOn(tc, ev)
		text := ref.text
		if text == "" {
			text = esidText(ref)
		}
		if err := sess.Reject(reason, uint32(ref.esid), text); err != nil {
			log.WithError(err).Debug("refusal of the outgoing session not sent")
		}
	}
	notKnown := func(event, reason, msg string) *refusal {
		odette := ""
		if route != nil {
			odette = route.Partner.OdetteID
		}
		return &refusal{event: event, reason: reason, esid: oftp2.ESIDUserCodeNotKnown, odette: odette, msg: msg}
	}
	if open.GetDirection() != tunnelv1.Direction_DIRECTION_OUTGOING {
		refuse(&refusal{event: EventSessionRefused, reason: "wrong_direction", esid: oftp2.ESIDResourcesNotAvailable,
			msg: fmt.Sprintf("the client opened a session of direction %s", open.GetDirection()), text: "resources not available"},
			tunnelv1.AbortReason_ABORT_REASON_REFUSED)
		return
	}
	if route == nil {
		refuse(notKnown(EventSessionRefused, "unknown_route", fmt.Sprintf("no route %q in the configuration in force", open.GetRouteName())),
			tunnelv1.AbortReason_ABORT_REASON_REFUSED)
		return
	}
	partner := route.Partner
	switch {
	case !partner.Enabled:
		refuse(notKnown(EventPartnerDisabled, "partner_disabled", "the route's partner is disabled"), tunnelv1.AbortReason_ABORT_REASON_REFUSED)
		return
	case partner.Direction == tunnelv1.DirectionPolicy_DIRECTION_POLICY_INCOMING_ONLY:
		refuse(notKnown(EventPartnerDirectionDenied, "incoming_only", "the route's partner takes part in incoming sessions only"),
			tunnelv1.AbortReason_ABORT_REASON_REFUSED)
		return
	}
	ps.set(func(ps *partnerSession) { ps.odetteID = partner.OdetteID })
	log = log.WithField("partner", partner.OdetteID)
	busy := func(event, reason, msg string) *refusal {
		return &refusal{event: event, reason: reason, esid: oftp2.ESIDResourcesNotAvailable, odette: partner.OdetteID, msg: msg,
			text: "resources not available, retry later"}
	}
	if s.draining.Load() {
		refuse(busy(EventSessionRefused, "draining", "the server is shutting down"), tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN)
		return
	}
	maxSessions := pol.Limits.MaxSessions
	if ls := s.license.Load(); ls.lic != nil && ls.lic.MaxSessions > 0 && ls.lic.MaxSessions < maxSessions {
		maxSessions = ls.lic.MaxSessions
	}
	if !s.sessionGate.tryAcquire(maxSessions) {
		refuse(busy(EventPartnerOverloaded, "max_sessions", "concurrent session limit reached"), tunnelv1.AbortReason_ABORT_REASON_REFUSED)
		return
	}
	defer s.sessionGate.release()
	s.metrics.sessions.Inc()
	defer s.metrics.sessions.Dec()
	if err := s.license.Load().check(s.cfg.ProxyID, s.now()); err != nil {
		refuse(busy(EventLicenseInvalid, "license_invalid", "outgoing session refused: the license is not valid: "+err.Error()),
			tunnelv1.AbortReason_ABORT_REASON_REFUSED)
		return
	}

	ps.set(func(ps *partnerSession) { ps.state = "dialing partner" })
	conn, ref := s.dialPartner(ps.ctx, pol, route, log)
	if ref != nil {
		if c, stopped := s.stopCauseOf(ps); stopped {
			ref.msg = "stopped: " + c.Text
		}
		refuse(ref, tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED)
		return
	}
	if err := sess.Accept(&tunnelv1.SessionOpened{RemoteAddr: conn.RemoteAddr().String()}); err != nil {
		log.WithError(err).Info("the outgoing session ended inside while the partner was dialled")
		conn.Close()
		return
	}
	s.metrics.admissions.WithLabelValues("outgoing_accepted").Inc()
	state := conn.ConnectionState()
	ps.set(func(ps *partnerSession) { ps.state = "open" })
	s.emitOn(tc, event.Event{Name: EventSessionStarted, Severity: infoSeverity, SessionID: sess.ID(), OdetteID: partner.OdetteID, RemoteAddr: remote,
		Message: "outgoing session: partner dialled and verified"}.
		With("direction", "outgoing").With("route", route.Name).
		With("local_session_id", strconv.FormatUint(ps.id, 10)).
		With("local_addr", conn.LocalAddr().String()).
		With("tls_version", tls.VersionName(state.Version)))

	validator := newValidator(partner)
	s.bridgePartner(ps, bridged{
		conn: conn, sess: sess, validator: validator, partnerSide: oftp2.Responder, partner: partner,
		bufferSize: partner.MaxBufferSize, credit: partner.MaxCredit, idle: pol.Limits.IdleTimeout, log: log,
		inspect: func(fromPartner bool, buf []byte) error {
			if !fromPartner || oftp2.CommandCode(buf[0]) != oftp2.CodeSSID {
				return nil
			}
			ssid, _ := validator.SSID(oftp2.Responder)
			if got := strings.TrimRight(ssid.ID, " "); got != partner.OdetteID {
				msg := fmt.Sprintf("the partner at %s answered with Odette ID %q, the route %q names %q", route.PartnerAddress, got, route.Name, partner.OdetteID)
				s.emitOn(tc, event.Security(EventOutgoingIDMismatch, remote, partner.OdetteID, "ssid_id_mismatch", msg).
					With("direction", "outgoing").With("route", route.Name).With("ssid_id", got).With("esid_reason", "03").
					With("local_session_id", strconv.FormatUint(ps.id, 10)))
				return &oftp2.ProtocolError{Reason: oftp2.ESIDUserCodeNotKnown, Command: oftp2.CodeSSID, Field: "SSIDCODE", Msg: "user code not known"}
			}
			return nil
		},
	})
}
