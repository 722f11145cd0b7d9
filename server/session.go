package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
)

// sessionOpenTimeout bounds the wait for the client's SessionOpened (it connects to the internal
// OFTP2 server and consumes its SSRM meanwhile).
const sessionOpenTimeout = 30 * time.Second

// esidWriteTimeout bounds writing a final ESID to a partner that does not read.
const esidWriteTimeout = 5 * time.Second

// insideSession is the tunnel session that carries one partner connection inside.
type insideSession interface {
	// ReadBuffer returns the next exchange buffer from the inside. It returns io.EOF after the
	// inside half-closed, and an *insideClosed when the session was aborted.
	ReadBuffer(ctx context.Context) ([]byte, error)
	// WriteBuffer sends one exchange buffer inside; it blocks while the session's credit is
	// used up. The session does not keep b after WriteBuffer returns.
	WriteBuffer(ctx context.Context, b []byte) error
	// CloseWrite tells the inside that the partner will send nothing more.
	CloseWrite() error
	// Abort ends the session in both directions; the client sends ESID(esid) to the internal
	// server where the protocol allows.
	Abort(reason tunnelv1.AbortReason, esid oftp2.ESIDReason, text string)
}

// insideClosed is why the inside ended a session: the abort reason, the ESID reason for the
// partner and an explanation.
type insideClosed struct {
	Reason tunnelv1.AbortReason
	ESID   oftp2.ESIDReason
	Text   string
}

func (e *insideClosed) Error() string {
	return fmt.Sprintf("session closed inside: %s (ESID %s): %s", e.Reason, e.ESID, e.Text)
}

// partnerSession is one partner connection, from accept to close. Fields marked immutable are
// set before the session is registered; the rest are safe for concurrent use.
type partnerSession struct {
	id      uint64          // process-wide session id; immutable
	remote  string          // partner address "ip:port"; immutable
	started time.Time       // immutable
	ctx     context.Context // ends when the session is stopped; immutable
	cancel  context.CancelCauseFunc

	mu        sync.Mutex
	odetteID  string
	tunnel    *tunnelConn
	tunnelSID uint64
	state     string

	fromPartner, toPartner atomic.Uint64
}

func (ps *partnerSession) set(f func(ps *partnerSession)) {
	ps.mu.Lock()
	f(ps)
	ps.mu.Unlock()
}

// stopCause is why a session was stopped from outside its own goroutines.
type stopCause struct {
	reason tunnelv1.AbortReason
	esid   oftp2.ESIDReason
	text   string
}

func (c *stopCause) Error() string { return c.text }

// stop ends the session from outside (admin kill, shutdown). It is idempotent: the first cause
// wins.
func (ps *partnerSession) stop(c *stopCause) { ps.cancel(c) }

// servePartner runs one partner connection: TLS, SSRM, SSID checks, the inside session and
// the relay. It owns conn and closes it.
func (s *Server) servePartner(raw net.Conn, pol *Policy, remote netip.AddrPort, slot *preSlot) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ps := &partnerSession{
		id:      s.nextID.Add(1),
		remote:  remote.String(),
		started: s.now(),
		ctx:     ctx,
		cancel:  cancel,
		state:   "tls handshake",
	}
	s.addSession(ps)
	defer s.removeSession(ps)
	defer raw.Close()

	logID := strconv.FormatUint(ps.id, 10)
	slog := s.levels.Session(logID)
	defer s.levels.Release(logID)
	log := slog.WithFields(logrus.Fields{"session_id": ps.id, "remote_addr": ps.remote, "direction": "incoming"})

	defer slot.release()

	// A stop (admin kill, shutdown) during admission unblocks every read and write.
	stopAdmission := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stopAdmission()

	info := &peerInfo{}
	conn := tls.Server(raw, partnerTLSConfig(pol, s.now, info))
	if err := conn.HandshakeContext(ctx); err != nil {
		s.refuse(ps, nil, classifyHandshakeError(err))
		return
	}
	info.tlsState = conn.ConnectionState()
	log.WithFields(logrus.Fields{"tls_version": tls.VersionName(info.tlsState.Version), "cert_subject": info.leaf.Subject.String()}).
		Debug("partner TLS handshake done")
	if info.noCRL {
		s.emit(security(EventPartnerCRLMissing, ps.remote, "", "no_crl",
			fmt.Sprintf("no configured CRL covers certificate %q; accepted without revocation check", info.leaf.Subject.String())).
			with("cert_subject", info.leaf.Subject.String()).with("cert_serial", serialHex(info.leaf)))
		s.reportCRLURLs(pol.Version, info.missing)
	}

	// RFC 5024 §4.2.1 / §9: once the connection is up, the Responder speaks first with SSRM.
	// The proxy is the partner's Responder; the internal server's own SSRM is consumed by the
	// client.
	ps.set(func(ps *partnerSession) { ps.state = "waiting for SSID" })
	slot.tlsDone()
	pw := &partnerWriter{w: oftp2.NewWriter(conn), raw: raw}
	ssrm, err := (&oftp2.SSRM{}).Append(nil)
	if err != nil {
		panic("server: SSRM does not encode: " + err.Error())
	}
	if err := pw.write(ssrm); err != nil {
		s.refuse(ps, nil, &refusal{event: EventPartnerTLSRejected, reason: "write_failed", msg: "sending SSRM: " + err.Error(), wrapped: err})
		return
	}
	reader := oftp2.NewReader(conn, 0)
	res, ref := readSSID(reader, pol, info, remote.Addr())
	if ref != nil {
		s.refuse(ps, pw, ref)
		return
	}
	partner := res.partner
	ps.set(func(ps *partnerSession) { ps.odetteID = partner.OdetteID })
	log = log.WithField("partner", partner.OdetteID)
	if err := s.license.Load().check(s.cfg.ProxyID, s.now()); err != nil {
		s.refuse(ps, pw, &refusal{event: EventLicenseInvalid, reason: "license_invalid", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: partner.OdetteID, msg: "partner session refused: the license is not valid: " + err.Error()})
		return
	}
	if ref := s.admitSession(slot, pol, partner.OdetteID); ref != nil {
		s.refuse(ps, pw, ref)
		return
	}

	// The SSID passed inside carries SSIDSDEB and SSIDCRED lowered to the partner's caps; the
	// validator sees exactly what the internal server sees.
	validator := oftp2.NewValidator(oftp2.ValidatorConfig{
		Parse:         oftp2.ParseOptions{Charset: partner.Charset},
		MaxBufferSize: partner.MaxBufferSize,
		MaxCredit:     partner.MaxCredit,
	})
	if _, err := validator.Check(oftp2.Responder, ssrm); err != nil {
		panic("server: the validator refuses the proxy's own SSRM: " + err.Error())
	}
	fwd := res.raw
	if _, err := oftp2.LimitSSID(fwd, partner.MaxBufferSize, partner.MaxCredit); err != nil {
		s.refuse(ps, pw, &refusal{event: EventPartnerSSIDInvalid, reason: "ssid_syntax", esid: oftp2.ReasonOf(err), ssrm: true,
			odette: partner.OdetteID, msg: err.Error(), wrapped: err})
		return
	}
	if _, err := validator.Check(oftp2.Initiator, fwd); err != nil {
		s.refuse(ps, pw, violationRefusal(partner.OdetteID, err))
		return
	}
	fwdSSID, _ := validator.SSID(oftp2.Initiator)

	tc := s.pickTunnel()
	if tc == nil {
		s.refuse(ps, pw, &refusal{event: EventSessionRefused, reason: "no_tunnel", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: partner.OdetteID, msg: "no client tunnel is connected"})
		return
	}
	ps.set(func(ps *partnerSession) { ps.state = "opening inside"; ps.tunnel = tc })
	openCtx, cancelOpen := context.WithTimeout(ctx, sessionOpenTimeout)
	sess, sid, err := tc.open(openCtx, &tunnelv1.SessionOpen{
		Direction:       tunnelv1.Direction_DIRECTION_INCOMING,
		PartnerOdetteId: partner.OdetteID,
		RemoteAddr:      ps.remote,
		Tls:             tlsInfo(info),
		Ssid:            fwd,
	})
	cancelOpen()
	if err != nil {
		ref := &refusal{event: EventSessionRefused, reason: "open_failed", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: partner.OdetteID, msg: "the inside refused the session: " + err.Error(), wrapped: err}
		var ic *insideClosed
		if errors.As(err, &ic) {
			ref.reason = ic.Reason.String()
			if ic.ESID.Valid() && ic.ESID != oftp2.ESIDNormal {
				ref.esid = ic.ESID
			}
		}
		if c := context.Cause(ctx); c != nil {
			ref.msg = "stopped: " + c.Error()
		}
		s.refuse(ps, pw, ref)
		return
	}
	stopAdmission()
	raw.SetDeadline(time.Time{})
	s.metrics.admissions.WithLabelValues("accepted").Inc()
	ps.set(func(ps *partnerSession) { ps.state = "open"; ps.tunnelSID = sid })
	log = log.WithField("tunnel_session_id", sid)
	s.emitOn(tc, event{name: EventSessionStarted, severity: infoSeverity, sessionID: sid, odetteID: partner.OdetteID, remoteAddr: ps.remote,
		msg: "partner session admitted and opened inside"}.
		with("local_session_id", strconv.FormatUint(ps.id, 10)).
		with("tls_version", tls.VersionName(info.tlsState.Version)).
		with("ssid_buffer_size", strconv.Itoa(fwdSSID.BufferSize)).
		with("ssid_credit", strconv.Itoa(fwdSSID.Credit)))

	r := &relay{
		s: s, ps: ps, log: log, ctx: ctx, conn: conn, raw: raw, reader: reader, pw: pw, inside: sess,
		v: validator, tunnel: tc, tunnelSID: sid, partner: partner, idle: pol.Limits.IdleTimeout,
		fwdBuffer: fwdSSID.BufferSize, fwdCredit: fwdSSID.Credit,
	}
	r.run()
}

// violationRefusal turns a validator error on the partner's SSID into a refusal.
func violationRefusal(odetteID string, err error) *refusal {
	ref := &refusal{event: EventPartnerSSIDInvalid, reason: "ssid_syntax", esid: oftp2.ReasonOf(err), ssrm: true, odette: odetteID, msg: err.Error(), wrapped: err}
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		ref.text = pe.ESID().Text
		if pe.Field != "" {
			ref.fields = map[string]string{"field": pe.Field}
		}
	}
	return ref
}

// refuse ends a connection that was not admitted: ESID to the partner when SSRM was sent (pw
// not nil and ref.ssrm), one security event, metrics.
func (s *Server) refuse(ps *partnerSession, pw *partnerWriter, ref *refusal) {
	if c, ok := s.stopCauseOf(ps); ok {
		// Stopped by an operator or the shutdown while being admitted: not the partner's fault.
		if pw != nil && ref.ssrm {
			pw.esid(c.esid, c.text)
		}
		s.log.WithFields(logrus.Fields{"session_id": ps.id, "remote_addr": ps.remote, "reason": c.reason.String()}).
			Info("partner connection ended during admission: " + c.text)
		return
	}
	s.metrics.admissions.WithLabelValues(ref.event).Inc()
	ev := security(ref.event, ps.remote, ref.odette, ref.reason, ref.msg)
	ev.fields = ref.fields
	if pw != nil && ref.ssrm {
		ev = ev.with("esid_reason", fmt.Sprintf("%02d", uint8(ref.esid)))
	}
	ev = ev.with("local_session_id", strconv.FormatUint(ps.id, 10))
	// The event is queued for the tunnel before the partner learns of the refusal, so that it
	// is on its way inside before anything the partner does next.
	s.emit(ev)
	if pw != nil && ref.ssrm {
		pw.esid(ref.esid, esidText(ref))
	}
}

// esidText is the reason text the partner sees. For identity refusals it is deliberately
// vague; the details are for the operator's log, not for a possibly hostile peer.
func esidText(ref *refusal) string {
	if ref.text != "" {
		return ref.text
	}
	switch ref.event {
	case EventPartnerUnknown, EventPartnerDisabled, EventPartnerCertMismatch, EventPartnerNetworkDenied, EventPartnerDirectionDenied:
		// One text for all of them, so that a prober cannot tell a known partner from an
		// unknown one.
		return "user code not known"
	case EventPartnerPassword:
		return "invalid password"
	case EventLicenseInvalid, EventSessionRefused:
		return "resources not available, retry later"
	case EventPartnerSSIDTimeout:
		return "time out waiting for SSID"
	case EventPartnerLevel:
		return "OFTP 2.0 (SSIDLEV 5) required"
	}
	return reasonName(ref.esid)
}

// reasonName returns the RFC 5024 description of an ESID reason, e.g. "protocol violation".
func reasonName(r oftp2.ESIDReason) string {
	s := r.String() // "02 (protocol violation)"
	if _, rest, ok := strings.Cut(s, "("); ok {
		return strings.TrimSuffix(rest, ")")
	}
	return s
}

// stopCauseOf returns the cause of an external stop of ps, if there was one.
func (s *Server) stopCauseOf(ps *partnerSession) (*stopCause, bool) {
	var c *stopCause
	if errors.As(context.Cause(ps.ctx), &c) {
		return c, true
	}
	return nil, false
}

// partnerWriter serialises writes to a partner connection: relayed buffers and final ESIDs
// come from different goroutines.
type partnerWriter struct {
	mu     sync.Mutex
	w      *oftp2.Writer
	raw    net.Conn
	closed bool // an ESID was sent or the write side is closed; nothing more is written
}

// write sends one exchange buffer.
func (pw *partnerWriter) write(b []byte) error {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.closed {
		return net.ErrClosed
	}
	return pw.w.WriteBuffer(b)
}

// esid sends a final ESID under a short write deadline and closes the writer. It reports
// whether the ESID was written.
func (pw *partnerWriter) esid(reason oftp2.ESIDReason, text string) bool {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.closed {
		return false
	}
	pw.closed = true
	pw.raw.SetWriteDeadline(time.Now().Add(esidWriteTimeout))
	err := pw.w.WriteCommand(&oftp2.ESID{Reason: reason, Text: text})
	return err == nil
}

// shut marks the writer closed without sending anything (the session ended by ESID already).
func (pw *partnerWriter) shut() {
	pw.mu.Lock()
	pw.closed = true
	pw.mu.Unlock()
}
