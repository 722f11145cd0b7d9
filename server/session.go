package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"smartproxy/internal/event"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/bridge"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// sessionOpenTimeout bounds the wait for the client's SessionOpened (it connects to the internal
// OFTP2 server and consumes its SSRM meanwhile).
const sessionOpenTimeout = 30 * time.Second

// esidWriteTimeout bounds writing a final ESID to a partner that does not read.
const esidWriteTimeout = 5 * time.Second

// partnerSession is one partner connection, from accept to close. Fields marked immutable are
// set before the session is registered; the rest are safe for concurrent use.
type partnerSession struct {
	id        uint64          // process-wide session id; immutable
	remote    string          // partner address "ip:port"; immutable
	via       string          // the load balancer's address when PROXY protocol named remote; set before admission
	direction string          // "incoming" or "outgoing"; immutable
	started   time.Time       // immutable
	ctx       context.Context // ends when the session is stopped; immutable
	cancel    context.CancelCauseFunc

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

// stop ends the session from outside (admin kill, shutdown). It is idempotent: the first cause
// wins.
func (ps *partnerSession) stop(c *bridge.Stop) { ps.cancel(c) }

// servePartner runs one partner connection: admission (TLS, SSRM, SSID checks), the inside
// session, and the bridge between the two. It owns raw and closes it.
func (s *Server) servePartner(raw net.Conn, pol *Policy, remote netip.AddrPort, slot *preSlot) {
	defer raw.Close()
	defer slot.release()
	var via netip.AddrPort
	if pol.ProxySources != nil {
		var ok bool
		if raw, remote, via, ok = s.proxyHeader(raw, pol, remote, slot); !ok {
			return
		}
	}
	ps, log, done := s.newPartnerSession(remote.String(), "incoming", "tls handshake")
	defer done()
	if via.IsValid() {
		ps.via = via.String()
		log = log.WithField("proxy_addr", ps.via)
	}
	a := s.admitPartner(ps, raw, pol, remote, slot, log)
	if a == nil {
		return
	}
	defer a.end()
	sess := s.openInside(ps, a)
	if sess == nil {
		return
	}
	a.end()
	s.bridgePartner(ps, a.session(sess, pol))
}

// newPartnerSession registers a new partner session for the admin service and shutdown. done
// forgets it; call it when the session has ended.
func (s *Server) newPartnerSession(remote, direction, state string) (*partnerSession, *logrus.Entry, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ps := &partnerSession{
		id:        s.nextID.Add(1),
		remote:    remote,
		direction: direction,
		started:   s.now(),
		ctx:       ctx,
		cancel:    cancel,
		state:     state,
	}
	s.addSession(ps)
	logID := strconv.FormatUint(ps.id, 10)
	log := s.levels.Session(logID).WithFields(logrus.Fields{"session_id": ps.id, "remote_addr": remote, "direction": direction})
	return ps, log, func() {
		s.levels.Release(logID)
		s.removeSession(ps)
		cancel(nil)
	}
}

// admitted is a partner connection that passed admission: verified TLS peer, valid SSID of a
// known partner, and the validator that has seen SSRM and that SSID.
type admitted struct {
	conn      *tls.Conn
	raw       net.Conn
	pw        *partnerWriter
	info      *peerInfo
	partner   *Partner
	validator *oftp2.Validator
	fwd       []byte     // the partner's SSID as passed inside (SSIDSDEB and SSIDCRED lowered)
	fwdSSID   oftp2.SSID // fwd decoded
	log       *logrus.Entry
	end       func() // ends admission: deadlines cleared, handshake slot released; idempotent
}

// admitPartner runs the admission of one incoming partner connection: TLS handshake with the
// certificate checks, SSRM, the partner's SSID and its checks, the license. Nothing has gone
// inside yet. It returns nil when the connection was refused (the refusal is logged and, where
// the protocol allows, answered with ESID); otherwise the caller must call end.
// The pre-admission slot sets the TLS and SSID deadlines and may evict the connection while it
// is unverified (see preadmit.go).
func (s *Server) admitPartner(ps *partnerSession, raw net.Conn, pol *Policy, remote netip.AddrPort, slot *preSlot, log *logrus.Entry) *admitted {
	// A stop (admin kill, shutdown) during admission unblocks every read and write.
	stopAdmission := context.AfterFunc(ps.ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	end := func() {
		stopAdmission()
		raw.SetDeadline(time.Time{})
		slot.release()
	}
	ok := false
	defer func() {
		if !ok {
			end()
		}
	}()

	info := &peerInfo{}
	conn := tls.Server(raw, partnerTLSConfig(pol, s.now, info))
	if err := conn.HandshakeContext(ps.ctx); err != nil {
		s.refuse(ps, nil, classifyHandshakeError(err))
		// A certificate refused by the hard revocation policy still names the CRLs to fetch.
		s.reportCRLURLs(pol.Version, info.missing)
		return nil
	}
	info.tlsState = conn.ConnectionState()
	log.WithFields(logrus.Fields{"tls_version": tls.VersionName(info.tlsState.Version), "cert_subject": info.leaf.Subject.String()}).
		Debug("partner TLS handshake done")
	if info.noCRL {
		s.emit(event.Security(EventPartnerCRLMissing, ps.remote, "", "no_crl",
			fmt.Sprintf("no configured CRL covers certificate %q; accepted without revocation check", info.leaf.Subject.String())).
			With("cert_subject", info.leaf.Subject.String()).With("cert_serial", serialHex(info.leaf)))
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
		return nil
	}
	reader := oftp2.NewReader(conn, 0)
	res, ref := readSSID(reader, pol, info, remote.Addr())
	if ref != nil {
		s.refuse(ps, pw, ref)
		return nil
	}
	partner := res.partner
	ps.set(func(ps *partnerSession) { ps.odetteID = partner.OdetteID })
	log = log.WithField("partner", partner.OdetteID)
	if err := s.license.Load().check(s.cfg.ProxyID, s.now()); err != nil {
		s.refuse(ps, pw, &refusal{event: EventLicenseInvalid, reason: "license_invalid", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: partner.OdetteID, msg: "partner session refused: the license is not valid: " + err.Error()})
		return nil
	}
	if ref := s.admitSession(slot, pol, partner.OdetteID); ref != nil {
		s.refuse(ps, pw, ref)
		return nil
	}

	// The SSID passed inside carries SSIDSDEB and SSIDCRED lowered to the partner's caps; the
	// validator sees exactly what the internal server sees.
	validator := newValidator(partner)
	if _, err := validator.Check(oftp2.Responder, ssrm); err != nil {
		panic("server: the validator refuses the proxy's own SSRM: " + err.Error())
	}
	fwd := res.raw
	if _, err := oftp2.LimitSSID(fwd, partner.MaxBufferSize, partner.MaxCredit); err != nil {
		s.refuse(ps, pw, &refusal{event: EventPartnerSSIDInvalid, reason: "ssid_syntax", esid: oftp2.ReasonOf(err), ssrm: true,
			odette: partner.OdetteID, msg: err.Error(), wrapped: err})
		return nil
	}
	if _, err := validator.Check(oftp2.Initiator, fwd); err != nil {
		s.refuse(ps, pw, violationRefusal(partner.OdetteID, err))
		return nil
	}
	fwdSSID, _ := validator.SSID(oftp2.Initiator)
	ok = true
	return &admitted{conn: conn, raw: raw, pw: pw, info: info, partner: partner, validator: validator, fwd: fwd, fwdSSID: fwdSSID, log: log, end: end}
}

// newValidator returns the validator of a session with partner.
func newValidator(partner *Partner) *oftp2.Validator {
	return oftp2.NewValidator(oftp2.ValidatorConfig{
		Parse:         oftp2.ParseOptions{Charset: partner.Charset},
		MaxBufferSize: partner.MaxBufferSize,
		MaxCredit:     partner.MaxCredit,
	})
}

// openInside opens the incoming session on a client tunnel and waits for the client's
// SessionOpened (it connects to the internal OFTP2 server meanwhile). It returns nil when the
// session could not be opened; the partner was refused then.
func (s *Server) openInside(ps *partnerSession, a *admitted) *tunnel.Session {
	tc := s.pickTunnel()
	if tc == nil {
		s.refuse(ps, a.pw, &refusal{event: EventSessionRefused, reason: "no_tunnel", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: a.partner.OdetteID, msg: "no client tunnel is connected"})
		return nil
	}
	ps.set(func(ps *partnerSession) { ps.state = "opening inside"; ps.tunnel = tc })
	openCtx, cancelOpen := context.WithTimeout(ps.ctx, sessionOpenTimeout)
	sess, err := tc.mux.Open(openCtx, &tunnelv1.SessionOpen{
		Direction:       tunnelv1.Direction_DIRECTION_INCOMING,
		PartnerOdetteId: a.partner.OdetteID,
		RemoteAddr:      ps.remote,
		Tls:             tlsInfo(a.info),
		Ssid:            a.fwd,
	})
	cancelOpen()
	if err != nil {
		ref := &refusal{event: EventSessionRefused, reason: "open_failed", esid: oftp2.ESIDResourcesNotAvailable, ssrm: true,
			odette: a.partner.OdetteID, msg: "the inside refused the session: " + err.Error(), wrapped: err}
		var ce *tunnel.CloseError
		if errors.As(err, &ce) {
			ref.reason = ce.Reason.String()
			if r := oftp2.ESIDReason(ce.ESID); ce.ESID <= 99 && r.Valid() && r != oftp2.ESIDNormal {
				ref.esid = r
			}
		}
		if c := context.Cause(ps.ctx); c != nil {
			ref.msg = "stopped: " + c.Error()
		}
		s.refuse(ps, a.pw, ref)
		return nil
	}
	s.metrics.admissions.WithLabelValues("accepted").Inc()
	ps.set(func(ps *partnerSession) { ps.state = "open"; ps.tunnelSID = sess.ID() })
	s.emitOn(tc, event.Event{Name: EventSessionStarted, Severity: infoSeverity, SessionID: sess.ID(), OdetteID: a.partner.OdetteID, RemoteAddr: ps.remote,
		Message: "partner session admitted and opened inside"}.
		With("local_session_id", strconv.FormatUint(ps.id, 10)).With("proxy_addr", ps.via).
		With("tls_version", tls.VersionName(a.info.tlsState.Version)).
		With("ssid_buffer_size", strconv.Itoa(a.fwdSSID.BufferSize)).
		With("ssid_credit", strconv.Itoa(a.fwdSSID.Credit)))
	return sess
}

// session describes the admitted connection and its inside session for the bridge.
func (a *admitted) session(sess *tunnel.Session, pol *Policy) bridged {
	return bridged{
		conn: a.conn, sess: sess, validator: a.validator, partnerSide: oftp2.Initiator, partner: a.partner,
		bufferSize: a.fwdSSID.BufferSize, credit: a.fwdSSID.Credit, idle: pol.Limits.IdleTimeout, log: a.log.WithField("tunnel_session_id", sess.ID()),
	}
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
			pw.esid(c.ESID, c.Text)
		}
		s.log.WithFields(logrus.Fields{"session_id": ps.id, "remote_addr": ps.remote, "reason": c.Reason.String()}).
			Info("partner connection ended during admission: " + c.Text)
		return
	}
	s.metrics.admissions.WithLabelValues(ref.event).Inc()
	ev := event.Security(ref.event, ps.remote, ref.odette, ref.reason, ref.msg)
	ev.Fields = ref.fields
	if pw != nil && ref.ssrm {
		ev = ev.With("esid_reason", fmt.Sprintf("%02d", uint8(ref.esid)))
	}
	ev = ev.With("local_session_id", strconv.FormatUint(ps.id, 10)).With("proxy_addr", ps.via)
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
func (s *Server) stopCauseOf(ps *partnerSession) (*bridge.Stop, bool) {
	var c *bridge.Stop
	if errors.As(context.Cause(ps.ctx), &c) {
		return c, true
	}
	return nil, false
}

// partnerWriter writes to a partner connection during admission, on the session's goroutine;
// from the bridge on, the bridge writes.
type partnerWriter struct {
	w   *oftp2.Writer
	raw net.Conn
}

// write sends one exchange buffer.
func (pw *partnerWriter) write(b []byte) error { return pw.w.WriteBuffer(b) }

// esid sends a final ESID under a short write deadline.
func (pw *partnerWriter) esid(reason oftp2.ESIDReason, text string) {
	pw.raw.SetWriteDeadline(time.Now().Add(esidWriteTimeout))
	pw.w.WriteCommand(&oftp2.ESID{Reason: reason, Text: text})
}
