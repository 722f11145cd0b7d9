package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/revocation"
	"smartproxy/oftp2"
)

// refusal is why a partner connection was not admitted: the security event to log, and the
// ESID reason for the partner when the refusal happens after SSRM (before SSRM the only answer
// is a TLS alert or closing the connection).
type refusal struct {
	event   string            // stable event name
	reason  string            // short machine-readable reason
	msg     string            // for the operator
	esid    oftp2.ESIDReason  // ESID for the partner; used only when afterSSRM
	odette  string            // Odette ID when known
	fields  map[string]string // further event fields
	ssrm    bool              // true once SSRM was sent, so an ESID can be answered
	text    string            // ESID reason text for the partner; if empty, one is chosen by event
	remote  string            // the peer's address where it is not the session's (outgoing dials)
	wrapped error
}

func (r *refusal) Error() string { return r.event + ": " + r.msg }
func (r *refusal) Unwrap() error { return r.wrapped }

// Reasons of partner_tls_rejected and partner_cert_expired events.
const (
	reasonNoClientCert   = "no_client_certificate"
	reasonNoServerCert   = "no_server_certificate"
	reasonUntrusted      = "untrusted_certificate"
	reasonBadCert        = "bad_certificate"
	reasonNotYetValid    = "certificate_not_yet_valid"
	reasonExpired        = "certificate_expired"
	reasonHandshake      = "tls_handshake_failed"
	reasonHandshakeTime  = "tls_handshake_timeout"
	reasonRevoked        = "certificate_revoked"
	reasonRevocationFail = "revocation_check_failed"
	reasonNoCoveringCRL  = "no_covering_crl"
	reasonCRLStale       = "crl_stale"
)

// peerInfo is what the TLS verification learned about the partner's certificate.
type peerInfo struct {
	leaf     *x509.Certificate
	chain    []*x509.Certificate // verified chain, leaf first, root last
	noCRL    bool                // no configured CRL covered a certificate of the chain
	stale    *revocation.CRL     // a covering CRL past its nextUpdate, if any
	missing  []string            // CRL distribution points the configuration does not cover
	tlsState tls.ConnectionState
}

// partnerTLSConfig returns the TLS configuration of one partner connection under pol. Every
// connection gets its own configuration bound to the policy in force when it was accepted, so
// that a configuration change applies to the next handshake and one connection never mixes two
// policies. Session tickets are off: every connection shows its certificate again and is
// checked against the CRLs in force.
func partnerTLSConfig(pol *Policy, now func() time.Time, info *peerInfo) *tls.Config {
	return &tls.Config{
		// RFC 8996: TLS 1.0 and 1.1 are deprecated; OFTP2 partners use 1.2 or 1.3.
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return pol.Certificate, nil
		},
		// The chain is verified in VerifyConnection against this connection's policy, so that
		// expiry, trust and revocation each get their own event.
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPartnerCert(pol, now(), cs, info, partnerAsClient)
		},
	}
}

// certRole is the side of a TLS connection a partner's certificate authenticates, with the
// extended key usage that side needs and the events its refusals raise. Incoming and outgoing
// sessions judge a partner's certificate with the same checks; only these differ, so that an
// outgoing refusal never looks like a hostile source to fail2ban.
type certRole struct {
	name     string           // "client" or "server"
	usage    x509.ExtKeyUsage // required extended key usage
	noCert   string           // reason when the peer presented no certificate
	rejected string           // event of an unusable or untrusted certificate
	expired  string           // event of a certificate outside its validity period
	revoked  string           // event of a revoked certificate
	unknown  string           // event of a refusal by the hard revocation policy
}

var (
	// partnerAsClient judges the client certificate of a partner that connects to us.
	partnerAsClient = certRole{name: "client", usage: x509.ExtKeyUsageClientAuth, noCert: reasonNoClientCert,
		rejected: EventPartnerTLSRejected, expired: EventPartnerCertExpired, revoked: EventPartnerRevoked,
		unknown: EventPartnerRevocationUnknown}
	// partnerAsServer judges the server certificate of a partner we dial.
	partnerAsServer = certRole{name: "server", usage: x509.ExtKeyUsageServerAuth, noCert: reasonNoServerCert,
		rejected: EventOutgoingTLSFailed, expired: EventOutgoingCertExpired, revoked: EventOutgoingRevoked,
		unknown: EventOutgoingRevocationUnknown}
)

// verifyPartnerCert checks the partner's certificate chain: validity period, a chain to one of
// the policy's trusted CAs with the role's usage (clientAuth or serverAuth), and revocation of
// every certificate of the chain below the root by the policy's CRLs (a lookup, never a scan).
// A certificate no CRL covers, or whose covering CRL is past its nextUpdate, is accepted under
// the soft revocation policy (noted in info for a warning and a CrlUrlReport) and refused under
// the hard one. Refusals carry the role's event names.
func verifyPartnerCert(pol *Policy, now time.Time, cs tls.ConnectionState, info *peerInfo, role certRole) error {
	if len(cs.PeerCertificates) == 0 {
		return &refusal{event: role.rejected, reason: role.noCert, msg: "the partner presented no " + role.name + " certificate"}
	}
	leaf := cs.PeerCertificates[0]
	info.leaf = leaf
	subject := leaf.Subject.String()
	fields := map[string]string{"cert_subject": subject, "cert_serial": serialHex(leaf)}
	if now.Before(leaf.NotBefore) {
		return &refusal{event: role.expired, reason: reasonNotYetValid, fields: fields,
			msg: fmt.Sprintf("certificate %q is not valid before %s", subject, leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	if now.After(leaf.NotAfter) {
		return &refusal{event: role.expired, reason: reasonExpired, fields: fields,
			msg: fmt.Sprintf("certificate %q expired at %s", subject, leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pol.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{role.usage},
	})
	if err != nil {
		reason := reasonBadCert
		var ua x509.UnknownAuthorityError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			reason = reasonUntrusted
		case errors.As(err, &ci) && ci.Reason == x509.Expired:
			// An intermediate outside its validity period.
			return &refusal{event: role.expired, reason: reasonExpired, fields: fields, msg: err.Error(), wrapped: err}
		}
		return &refusal{event: role.rejected, reason: reason, fields: fields, msg: err.Error(), wrapped: err}
	}
	chain := chains[0]
	info.chain = chain
	for i := 0; i+1 < len(chain); i++ {
		res, err := pol.Revocation.Lookup(chain[i], chain[i+1])
		if err != nil {
			return &refusal{event: role.rejected, reason: reasonRevocationFail, fields: fields, msg: err.Error(), wrapped: err}
		}
		switch res.Status {
		case revocation.Revoked:
			f := map[string]string{"cert_subject": chain[i].Subject.String(), "cert_serial": serialHex(chain[i]), "crl_reason": res.Reason.String()}
			return &refusal{event: role.revoked, reason: reasonRevoked, fields: f,
				msg: fmt.Sprintf("certificate %q (serial %s) is revoked (%s)", chain[i].Subject.String(), serialHex(chain[i]), res.Reason)}
		case revocation.NoCRL:
			info.noCRL = true
			info.missing = appendMissing(info.missing, pol.Revocation.MissingDistributionPoints(chain[i]))
		case revocation.Good:
			if next := res.CRL.NextUpdate(); info.stale == nil && !next.IsZero() && next.Before(now) {
				info.stale = res.CRL
			}
		}
	}
	if (info.noCRL || info.stale != nil) && pol.revocationModeFor(leaf) == RevocationHard {
		if info.noCRL {
			return &refusal{event: role.unknown, reason: reasonNoCoveringCRL, fields: fields,
				msg: fmt.Sprintf("no configured CRL covers the chain of certificate %q; refused by the hard revocation policy", subject)}
		}
		f := map[string]string{"cert_subject": subject, "cert_serial": serialHex(leaf),
			"crl_issuer": info.stale.Issuer(), "crl_url": info.stale.URL(), "crl_next_update": info.stale.NextUpdate().UTC().Format(time.RFC3339)}
		return &refusal{event: role.unknown, reason: reasonCRLStale, fields: f,
			msg: fmt.Sprintf("the CRL covering certificate %q was due at %s; refused by the hard revocation policy",
				subject, info.stale.NextUpdate().UTC().Format(time.RFC3339))}
	}
	return nil
}

func appendMissing(dst, urls []string) []string {
	for _, u := range urls {
		dup := false
		for _, d := range dst {
			if d == u {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, u)
		}
	}
	return dst
}

// serialHex returns the certificate serial number in upper-case hexadecimal.
func serialHex(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	return strings.ToUpper(c.SerialNumber.Text(16))
}

// classifyHandshakeError turns a failed handshake of an incoming partner into a refusal.
func classifyHandshakeError(err error) *refusal { return partnerAsClient.handshakeRefusal(err) }

// handshakeRefusal turns a failed handshake into a refusal with the role's events: the
// refusal of the certificate check when there was one, else a timeout or TLS failure.
func (role certRole) handshakeRefusal(err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	if errors.Is(err, errEvicted) {
		return &refusal{event: EventPartnerEvicted, reason: reasonEvicted, msg: "TLS handshake ended: " + err.Error(), wrapped: err}
	}
	reason := reasonHandshake
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		reason = reasonHandshakeTime
	} else if strings.Contains(err.Error(), "client didn't provide a certificate") {
		reason = reasonNoClientCert
	}
	return &refusal{event: role.rejected, reason: reason, msg: err.Error(), wrapped: err}
}

// tlsInfo describes the established connection for SessionOpen.
func tlsInfo(info *peerInfo) *tunnelv1.TlsInfo {
	fp := sha256.Sum256(info.leaf.Raw)
	return &tunnelv1.TlsInfo{
		Version:                 tls.VersionName(info.tlsState.Version),
		CipherSuite:             tls.CipherSuiteName(info.tlsState.CipherSuite),
		PeerSubject:             info.leaf.Subject.String(),
		PeerSerial:              serialHex(info.leaf),
		PeerSha256Fingerprint:   fp[:],
		PeerSubjectSerialNumber: subjectSerialNumber(info.leaf),
	}
}

// ssidResult is a verified SSID.
type ssidResult struct {
	partner *Partner
	ssid    *oftp2.SSID
	raw     []byte // the SSID exchange buffer as received (a copy)
}

// readSSID reads the partner's first exchange buffer under the SSID deadline (set by the
// caller) and checks it against pol, in this order: a syntactically valid SSID (RFC 5024
// §5.3.2, under the partner's charset policy), protocol level 5 (OFTP 2.0; other levels are
// refused with ESID 10, "mode or capabilities incompatible", as a failed SSID negotiation is
// answered in the state table of §9.8.2), a configured partner (ESID 03), enabled (ESID 03),
// the password if the entry has one (ESID 04), the certificate bound to the partner (ESID 03),
// the source network (ESID 03) and the direction policy (ESID 03). The license is checked by
// the caller.
func readSSID(r *oftp2.Reader, pol *Policy, info *peerInfo, remote netip.Addr) (*ssidResult, *refusal) {
	buf, err := r.ReadBuffer()
	if err != nil {
		if errors.Is(err, errEvicted) {
			return nil, &refusal{event: EventPartnerEvicted, reason: reasonEvicted, msg: "no SSID yet: " + err.Error(), wrapped: err}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &refusal{event: EventPartnerSSIDTimeout, reason: "ssid_timeout", esid: oftp2.ESIDTimeout, ssrm: true,
				msg: "no SSID within the SSID deadline", wrapped: err}
		}
		var pe *oftp2.ProtocolError
		if errors.As(err, &pe) {
			return nil, &refusal{event: EventPartnerSSIDInvalid, reason: "bad_stream_header", esid: pe.Reason, ssrm: true,
				msg: pe.Error(), wrapped: err}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &refusal{event: EventPartnerSSIDInvalid, reason: "closed_before_ssid", esid: oftp2.ESIDProtocolViolation, ssrm: true,
				msg: "the partner closed the connection before its SSID", wrapped: err}
		}
		return nil, &refusal{event: EventPartnerSSIDInvalid, reason: "read_error", esid: oftp2.ESIDUnspecified, ssrm: true,
			msg: err.Error(), wrapped: err}
	}
	raw := append([]byte(nil), buf...)
	id := ssidCode(raw)
	partner := pol.Partners[id]
	cs := oftp2.CharsetStrict
	if partner != nil {
		cs = partner.Charset
	}
	cmd, err := oftp2.Parse(raw, &oftp2.ParseOptions{Charset: cs})
	if err != nil {
		var pe *oftp2.ProtocolError
		reason, field := oftp2.ESIDUnspecified, ""
		if errors.As(err, &pe) {
			reason, field = pe.Reason, pe.Field
		}
		r := &refusal{event: EventPartnerSSIDInvalid, reason: "ssid_syntax", esid: reason, ssrm: true, odette: id, msg: err.Error(), wrapped: err}
		if field != "" {
			r.fields = map[string]string{"field": field}
		}
		if pe != nil {
			r.text = pe.ESID().Text // the syntax problem helps the partner fix its software
		}
		return nil, r
	}
	ssid, ok := cmd.(*oftp2.SSID)
	if !ok {
		// §9.8: any command but SSID in the responder's state A_WF_SSID... is a protocol error.
		return nil, &refusal{event: EventPartnerSSIDInvalid, reason: "not_ssid", esid: oftp2.ESIDProtocolViolation, ssrm: true,
			msg: fmt.Sprintf("first command is %s, want SSID", cmd.Code()), fields: map[string]string{"command": cmd.Code().String()}}
	}
	id = ssid.ID
	if ssid.Level != 5 {
		return nil, &refusal{event: EventPartnerLevel, reason: "level_unsupported", esid: oftp2.ESIDModeIncompatible, ssrm: true, odette: id,
			msg: fmt.Sprintf("SSIDLEV %d; this proxy speaks OFTP 2.0 (level 5) only", ssid.Level)}
	}
	if partner == nil {
		return nil, &refusal{event: EventPartnerUnknown, reason: "partner_unknown", esid: oftp2.ESIDUserCodeNotKnown, ssrm: true, odette: id,
			msg: fmt.Sprintf("Odette ID %q is not a configured partner", id)}
	}
	if !partner.Enabled {
		return nil, &refusal{event: EventPartnerDisabled, reason: "partner_disabled", esid: oftp2.ESIDUserCodeNotKnown, ssrm: true, odette: id,
			msg: fmt.Sprintf("partner %q is disabled", id)}
	}
	if partner.Password != "" && !partner.Password.Equal(strings.TrimRight(string(ssid.Password), " ")) {
		return nil, &refusal{event: EventPartnerPassword, reason: "password_invalid", esid: oftp2.ESIDInvalidPassword, ssrm: true, odette: id,
			msg: fmt.Sprintf("wrong SSID password for partner %q", id)}
	}
	if !partner.certMatches(info.leaf) {
		return nil, &refusal{event: EventPartnerCertMismatch, reason: "partner_cert_mismatch", esid: oftp2.ESIDUserCodeNotKnown, ssrm: true, odette: id,
			fields: map[string]string{"cert_subject": info.leaf.Subject.String(), "cert_serial": serialHex(info.leaf)},
			msg:    fmt.Sprintf("certificate %q is not bound to partner %q", info.leaf.Subject.String(), id)}
	}
	if !partner.networkAllowed(remote) {
		return nil, &refusal{event: EventPartnerNetworkDenied, reason: "partner_network_denied", esid: oftp2.ESIDUserCodeNotKnown, ssrm: true, odette: id,
			msg: fmt.Sprintf("partner %q may not connect from %s", id, remote)}
	}
	if partner.Direction == tunnelv1.DirectionPolicy_DIRECTION_POLICY_OUTGOING_ONLY {
		return nil, &refusal{event: EventPartnerDirectionDenied, reason: "partner_direction_denied", esid: oftp2.ESIDUserCodeNotKnown, ssrm: true, odette: id,
			msg: fmt.Sprintf("partner %q takes part in outgoing sessions only", id)}
	}
	return &ssidResult{partner: partner, ssid: ssid, raw: raw}, nil
}

// remoteAddrPort returns the address of a connection's peer.
func remoteAddrPort(c net.Conn) netip.AddrPort {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap
}
