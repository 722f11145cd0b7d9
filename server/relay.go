package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"smartproxy/internal/event"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/bridge"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// esidLinger bounds how long the proxy waits, after an ESID of its own, for the partner to
// disconnect (RFC 5024 §9.3, WF_NDISC). Closing a socket that still has unread data in its
// receive buffer sends a TCP reset, and the reset can destroy the ESID before the partner has
// read it; draining for a moment lets the ESID arrive.
const esidLinger = 2 * time.Second

// bridged is a partner connection whose session is open inside, ready for the bridge.
type bridged struct {
	conn        *tls.Conn
	sess        *tunnel.Session
	validator   *oftp2.Validator
	partnerSide oftp2.Side // the partner's OFTP2 role: Initiator incoming, Responder outgoing
	partner     *Partner
	bufferSize  int // SSIDSDEB and SSIDCRED the proxy passed on; SSIDs crossing are lowered to them
	credit      int
	idle        time.Duration
	log         *logrus.Entry
	inspect     func(fromPartner bool, buf []byte) error // see bridge.Config.Inspect; may be nil
}

// bridgePartner carries one session between the partner connection and its tunnel session
// until it ends, then logs the end. The partner connection is closed when it returns.
func (s *Server) bridgePartner(ps *partnerSession, b bridged) {
	tc := ps.tunnelConn()
	res := bridge.Run(ps.ctx, bridge.Config{
		Conn:             b.conn,
		Session:          b.sess,
		Validator:        b.validator,
		ConnSide:         b.partnerSide,
		SSIDBufferSize:   b.bufferSize,
		SSIDCredit:       b.credit,
		IdleTimeout:      b.idle,
		Now:              s.now,
		Linger:           esidLinger,
		ESIDWriteTimeout: esidWriteTimeout,
		ConnName:         "partner",
		SessionName:      "inside",
		Logger:           b.log,
		OnBuffer: func(fromPartner bool, n int) {
			dir := "to_partner"
			if fromPartner {
				dir = "from_partner"
				ps.fromPartner.Add(uint64(n))
			} else {
				ps.toPartner.Add(uint64(n))
			}
			s.metrics.bytes.WithLabelValues(dir).Add(float64(n))
			s.metrics.buffers.WithLabelValues(dir).Inc()
		},
		Inspect:     b.inspect,
		OnViolation: func(v bridge.Violation) { s.violation(ps, tc, b.sess.ID(), b.partner, v) },
	})
	ev := event.Event{Name: EventSessionEnded, Severity: infoSeverity, SessionID: b.sess.ID(), OdetteID: b.partner.OdetteID, RemoteAddr: ps.remote,
		Reason: res.Cause, Message: "partner session ended"}.
		With("direction", ps.direction).
		With("esid_reason", fmt.Sprintf("%02d", uint8(res.ESID))).
		With("bytes_from_partner", strconv.FormatUint(res.FromConn, 10)).
		With("bytes_to_partner", strconv.FormatUint(res.ToConn, 10)).
		With("duration", s.now().Sub(ps.started).Round(time.Millisecond).String()).
		With("local_session_id", strconv.FormatUint(ps.id, 10))
	if res.Cause == "partner_connection_lost" {
		// The partner vanished without ESID: an abnormal end, logged as connection lost.
		ev.Severity = warnSeverity
		ev.Message = "partner connection lost"
	}
	if res.Text != "" {
		ev = ev.With("text", res.Text)
	}
	s.emitOn(tc, ev)
}

// violation reports a command that broke RFC 5024 as a protocol_violation security event; the
// bridge sends the ESIDs.
func (s *Server) violation(ps *partnerSession, tc *tunnelConn, tunnelSID uint64, partner *Partner, v bridge.Violation) {
	reason := oftp2.ReasonOf(v.Err)
	side := "inside"
	if v.FromConn {
		side = "partner"
	}
	cmd := "unknown"
	if v.Command != 0 {
		cmd = v.Command.String()
	}
	field := ""
	var pe *oftp2.ProtocolError
	if errors.As(v.Err, &pe) {
		field = pe.Field
		if pe.Command != 0 {
			cmd = pe.Command.String()
		}
	}
	s.metrics.violations.WithLabelValues(side, cmd).Inc()
	ev := event.Security(EventProtocolViolation, ps.remote, partner.OdetteID, "protocol_violation", v.Err.Error()).
		With("side", side).With("command", cmd).With("field", field).
		With("direction", ps.direction).
		With("esid_reason", fmt.Sprintf("%02d", uint8(reason))).
		With("local_session_id", strconv.FormatUint(ps.id, 10))
	ev.SessionID = tunnelSID
	s.emitOn(tc, ev)
}

// tunnelConn returns the tunnel the session lives on.
func (ps *partnerSession) tunnelConn() *tunnelConn {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.tunnel
}
