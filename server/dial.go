package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"smartproxy/internal/event"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
)

// Reasons of the outgoing dial's events beyond those the certificate check shares with incoming
// partners (reasonUntrusted, reasonExpired, reasonRevoked, ...).
const (
	reasonConnRefused     = "connection_refused"
	reasonConnectTimeout  = "connect_timeout"
	reasonConnectFailed   = "connect_failed"
	reasonSourceIP        = "source_address_unavailable"
	reasonDialCanceled    = "canceled"
	reasonServerName      = "server_name_mismatch"
	reasonOutgoingBinding = "partner_cert_mismatch"
)

// dialAnswer is what the internal initiator of an outgoing session receives when the partner
// cannot be reached: the ESID reason and a few words naming the cause. The initiator is our own
// OFTP2 server, so the text may be precise (an incoming partner gets a vague one instead).
type dialAnswer struct {
	esid oftp2.ESIDReason
	text string
}

// dialAnswers maps the reason of every refused dial to its answer. ESID 08 (resources not
// available, "retry later") where the partner or the network may recover by itself, 09 for
// timeouts, 12 (secure authentication requirements incompatible) where TLS or the partner's
// certificate failed, 03 (user code not known) where the certificate names another partner.
var dialAnswers = map[string]dialAnswer{
	reasonConnRefused:    {oftp2.ESIDResourcesNotAvailable, "partner refused the connection"},
	reasonConnectTimeout: {oftp2.ESIDTimeout, "partner did not answer (connect timeout)"},
	reasonConnectFailed:  {oftp2.ESIDResourcesNotAvailable, "partner unreachable"},
	reasonSourceIP:       {oftp2.ESIDResourcesNotAvailable, "outgoing source address not available in the DMZ"},
	reasonDialCanceled:   {oftp2.ESIDResourcesNotAvailable, "session stopped while connecting to the partner"},
	reasonHandshakeTime:  {oftp2.ESIDTimeout, "TLS handshake with the partner timed out"},
	reasonHandshake:      {oftp2.ESIDSecureAuthIncompatible, "TLS handshake with the partner failed"},
	reasonNoServerCert:   {oftp2.ESIDSecureAuthIncompatible, "partner presented no certificate"},
	reasonUntrusted:      {oftp2.ESIDSecureAuthIncompatible, "partner certificate not from a trusted CA"},
	reasonBadCert:        {oftp2.ESIDSecureAuthIncompatible, "partner certificate not usable for a TLS server"},
	reasonNotYetValid:    {oftp2.ESIDSecureAuthIncompatible, "partner certificate not yet valid"},
	reasonExpired:        {oftp2.ESIDSecureAuthIncompatible, "partner certificate expired"},
	reasonRevoked:        {oftp2.ESIDSecureAuthIncompatible, "partner certificate revoked"},
	reasonRevocationFail: {oftp2.ESIDSecureAuthIncompatible, "partner certificate revocation check failed"},
	reasonServerName:     {oftp2.ESIDSecureAuthIncompatible, "partner certificate not issued for the partner's name"},
	reasonOutgoingBinding: {oftp2.ESIDUserCodeNotKnown,
		"partner certificate belongs to another Odette ID"},
}

// dialPartner opens the TLS connection of an outgoing session on route under pol:
//
//  1. TCP connect to route.PartnerAddress, from pol.OutgoingSourceIP when it is set, within
//     pol.Limits.ConnectTimeout;
//  2. TLS handshake as client within pol.Limits.HandshakeTimeout, presenting the company
//     certificate;
//  3. the partner's server certificate judged like an incoming partner's client certificate
//     (verifyPartnerCert: validity, trusted CAs with the serverAuth usage, CRLs), then issued
//     for route.ServerName, then bound to the route's partner (subject serialNumber or the
//     partner's certificate bindings). All of this happens inside the handshake, so a refused
//     partner receives a TLS alert and not one byte of OFTP2.
//
// On success it returns the established connection; a certificate no configured CRL covers is
// accepted with an outgoing_crl_missing event and its distribution points are reported
// (CrlUrlReport) as for incoming partners. On failure it returns a refusal that names the
// event, the reason, the ESID and text for the internal initiator (esid, text) and the
// partner's address (remote); the caller emits refusal.outgoingEvent and answers the
// initiator. The caller owns the returned connection.
func (s *Server) dialPartner(ctx context.Context, pol *Policy, route *Route, log logrus.FieldLogger) (*tls.Conn, *refusal) {
	d := net.Dialer{Timeout: pol.Limits.ConnectTimeout}
	if pol.OutgoingSourceIP.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: pol.OutgoingSourceIP.AsSlice()}
	}
	log = log.WithFields(logrus.Fields{"partner_address": route.PartnerAddress, "route": route.Name})
	log.WithField("source_ip", sourceIPText(pol.OutgoingSourceIP)).Debug("dialing partner")
	raw, err := d.DialContext(ctx, "tcp", route.PartnerAddress)
	if err != nil {
		return nil, finishDialRefusal(connectRefusal(ctx, pol, err), pol, route, route.PartnerAddress)
	}
	remote := raw.RemoteAddr().String()
	info := &peerInfo{}
	conn := tls.Client(raw, outgoingTLSConfig(pol, route, s.now, info))
	hctx, cancel := context.WithTimeout(ctx, pol.Limits.HandshakeTimeout)
	err = conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		raw.Close()
		ref := partnerAsServer.handshakeRefusal(err)
		if ctx.Err() != nil {
			ref = &refusal{event: EventOutgoingConnectFailed, reason: reasonDialCanceled, msg: "stopped during the TLS handshake", wrapped: err}
		}
		return nil, finishDialRefusal(ref, pol, route, remote)
	}
	info.tlsState = conn.ConnectionState()
	log.WithFields(logrus.Fields{"remote_addr": remote, "tls_version": tls.VersionName(info.tlsState.Version),
		"cert_subject": info.leaf.Subject.String()}).Debug("partner TLS handshake done")
	if info.noCRL {
		s.emit(event.Security(EventOutgoingCRLMissing, remote, route.Partner.OdetteID, "no_crl",
			fmt.Sprintf("no configured CRL covers certificate %q of the partner dialed on route %q; accepted without revocation check",
				info.leaf.Subject.String(), route.Name)).
			With("cert_subject", info.leaf.Subject.String()).With("cert_serial", serialHex(info.leaf)).
			With("route", route.Name).With("partner_address", route.PartnerAddress))
		s.reportCRLURLs(pol.Version, info.missing)
	}
	return conn, nil
}

// outgoingTLSConfig returns the TLS client configuration of one outgoing connection under pol.
// The standard verification is replaced by VerifyConnection against the policy, so that trust,
// expiry, revocation, server name and the Odette ID binding each give their own event.
func outgoingTLSConfig(pol *Policy, route *Route, now func() time.Time, info *peerInfo) *tls.Config {
	return &tls.Config{
		// RFC 8996: TLS 1.0 and 1.1 are deprecated; OFTP2 partners use 1.2 or 1.3.
		MinVersion: tls.VersionTLS12,
		ServerName: route.ServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pol.Certificate, nil
		},
		// Verified in VerifyConnection with the policy's CAs and CRLs; no session resumption
		// (no ClientSessionCache), so every connection is judged against the policy in force.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPartnerServer(pol, route, now(), cs, info)
		},
	}
}

// verifyPartnerServer judges a dialed partner's certificate: the checks every partner
// certificate gets (verifyPartnerCert), then the route's server name, then the binding to the
// route's partner.
func verifyPartnerServer(pol *Policy, route *Route, now time.Time, cs tls.ConnectionState, info *peerInfo) error {
	if err := verifyPartnerCert(pol, now, cs, info, partnerAsServer); err != nil {
		return err
	}
	leaf := info.leaf
	fields := map[string]string{"cert_subject": leaf.Subject.String(), "cert_serial": serialHex(leaf)}
	if err := leaf.VerifyHostname(route.ServerName); err != nil {
		return &refusal{event: EventOutgoingTLSFailed, reason: reasonServerName, fields: fields, wrapped: err,
			msg: fmt.Sprintf("certificate %q is not issued for %q: %v", leaf.Subject.String(), route.ServerName, err)}
	}
	if !route.Partner.certMatches(leaf) {
		return &refusal{event: EventOutgoingCertMismatch, reason: reasonOutgoingBinding, fields: fields,
			msg: fmt.Sprintf("certificate %q is not bound to partner %q of route %q", leaf.Subject.String(), route.Partner.OdetteID, route.Name)}
	}
	return nil
}

// connectRefusal classifies a failed TCP connect.
func connectRefusal(ctx context.Context, pol *Policy, err error) *refusal {
	ref := &refusal{event: EventOutgoingConnectFailed, reason: reasonConnectFailed, msg: err.Error(), wrapped: err}
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		ref.reason, ref.msg = reasonDialCanceled, "stopped while connecting: "+err.Error()
	case errors.Is(err, syscall.EADDRNOTAVAIL) && pol.OutgoingSourceIP.IsValid():
		// The configured source address was checked when the configuration was applied; it
		// has gone from the host since.
		ref.event, ref.reason = EventOutgoingSourceIPUnavailable, reasonSourceIP
		ref.msg = fmt.Sprintf("outgoing_source_ip %s is not an address of this host: %v", pol.OutgoingSourceIP, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		ref.reason = reasonConnRefused
	case errors.As(err, &ne) && ne.Timeout():
		ref.reason = reasonConnectTimeout
		ref.msg = fmt.Sprintf("no connection within the connect timeout %s: %v", pol.Limits.ConnectTimeout, err)
	}
	return ref
}

// finishDialRefusal completes a refusal of an outgoing dial with the answer for the internal
// initiator and the fields every outgoing event carries.
func finishDialRefusal(ref *refusal, pol *Policy, route *Route, remote string) *refusal {
	a, ok := dialAnswers[ref.reason]
	if !ok {
		a = dialAnswer{oftp2.ESIDUnspecified, "cannot reach the partner"}
	}
	ref.esid, ref.text = a.esid, a.text
	if ref.reason == reasonConnectFailed {
		// "partner unreachable: connect: no route to host" names the cause in a few words.
		var se syscall.Errno
		if errors.As(ref.wrapped, &se) {
			ref.text += ": " + se.Error()
		}
	}
	ref.odette = route.Partner.OdetteID
	ref.remote = remote
	f := make(map[string]string, len(ref.fields)+3)
	for k, v := range ref.fields {
		f[k] = v
	}
	f["route"] = route.Name
	f["partner_address"] = route.PartnerAddress
	if pol.OutgoingSourceIP.IsValid() {
		f["source_ip"] = pol.OutgoingSourceIP.String()
	}
	ref.fields = f
	return ref
}

// outgoingEvent is the event of a refused outgoing dial: one line naming the partner, its
// address and the cause, and the same as an Event frame for the backend.
func (r *refusal) outgoingEvent() event.Event {
	ev := event.Security(r.event, r.remote, r.odette, r.reason, r.msg)
	ev.Fields = r.fields
	return ev.With("esid_reason", fmt.Sprintf("%02d", uint8(r.esid))).With("direction", "outgoing")
}

func sourceIPText(a netip.Addr) string {
	if !a.IsValid() {
		return "chosen by the system"
	}
	return a.String()
}
