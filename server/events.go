package server

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/event"
)

// Stable names of the server's events: the `event` field of the log line and Event.name on the
// tunnel. Each is catalogued in internal/event with its severity and class, and
// docs/security-events.md describes each one with its fields. Never rename one: intrusion
// detection rules and fail2ban filters match on them.
const (
	// EventPartnerRateLimited: a source exceeded its connection rate; closed before TLS.
	EventPartnerRateLimited = "partner_rate_limited"
	// EventPartnerOverloaded: the session or handshake limit was reached; closed before TLS.
	EventPartnerOverloaded = "partner_connection_limit"
	// EventPartnerSourceLimit: the source address or its network prefix has its maximum of
	// connections in admission; closed before TLS.
	EventPartnerSourceLimit = "partner_source_limit"
	// EventPartnerEvicted: a connection in admission (TLS or SSID) was closed to make room for
	// a new one, being the longest silent while the pre-admission pool was full.
	EventPartnerEvicted = "partner_preadmission_evicted"
	// EventPartnerRefusalsSuppressed: more refusals of one source in one interval than are
	// logged one by one; the line carries their count.
	EventPartnerRefusalsSuppressed = "partner_refusals_suppressed"
	// EventPartnerProxyRefused: a source that is not an allowed load balancer started its
	// connection with a PROXY protocol header (it would claim another address); closed before
	// TLS.
	EventPartnerProxyRefused = "partner_proxy_refused"
	// EventPartnerProxyInvalid: a connection from an allowed load balancer did not start with
	// a valid PROXY protocol v2 header (missing, malformed, not TCP, too slow); closed before
	// TLS. The source is the balancer: not for fail2ban.
	EventPartnerProxyInvalid = "partner_proxy_invalid"
	// EventPartnerTLSRejected: the TLS handshake failed (no client certificate, untrusted CA,
	// old protocol version, timeout, garbage).
	EventPartnerTLSRejected = "partner_tls_rejected"
	// EventPartnerCertExpired: the client certificate is outside its validity period.
	EventPartnerCertExpired = "partner_cert_expired"
	// EventPartnerRevoked: a configured CRL lists the client certificate.
	EventPartnerRevoked = "partner_revoked"
	// EventPartnerCRLMissing: no configured CRL covers the client certificate (accepted).
	EventPartnerCRLMissing = "partner_crl_missing"
	// EventPartnerRevocationUnknown: under the hard revocation policy, no configured CRL covers
	// the client certificate or the covering CRL is past its nextUpdate; refused in TLS.
	EventPartnerRevocationUnknown = "partner_revocation_unknown"
	// EventPartnerSSIDTimeout: no SSID within the SSID deadline after SSRM.
	EventPartnerSSIDTimeout = "partner_ssid_timeout"
	// EventPartnerSSIDInvalid: the first command was not a valid SSID.
	EventPartnerSSIDInvalid = "partner_ssid_invalid"
	// EventPartnerLevel: the SSID asks for a protocol level other than OFTP 2.0 (5).
	EventPartnerLevel = "partner_level_unsupported"
	// EventPartnerUnknown: the SSID's Odette ID is not a configured partner.
	EventPartnerUnknown = "partner_unknown"
	// EventPartnerDisabled: the Odette ID belongs to a disabled partner.
	EventPartnerDisabled = "partner_disabled"
	// EventPartnerPassword: the SSID password is wrong.
	EventPartnerPassword = "partner_password_invalid"
	// EventPartnerCertMismatch: the certificate is not bound to the SSID's Odette ID.
	EventPartnerCertMismatch = "partner_cert_mismatch"
	// EventPartnerNetworkDenied: the partner connected from a network its entry does not allow.
	EventPartnerNetworkDenied = "partner_network_denied"
	// EventPartnerDirectionDenied: the partner may not start sessions (outgoing only).
	EventPartnerDirectionDenied = "partner_direction_denied"
	// EventLicenseInvalid: a partner session was refused because the license is not valid.
	EventLicenseInvalid = "license_invalid"
	// EventSessionRefused: the client refused the session (internal server unreachable, ...).
	EventSessionRefused = "session_refused"
	// EventProtocolViolation: a command in an established session broke RFC 5024.
	EventProtocolViolation = "protocol_violation"

	// EventOutgoingConnectFailed: the TCP connect to a partner of an outgoing session failed
	// (refused, timeout, unreachable).
	EventOutgoingConnectFailed = "outgoing_connect_failed"
	// EventOutgoingTLSFailed: the TLS handshake with a dialed partner failed, or its server
	// certificate is untrusted, unusable or not issued for the route's server name.
	EventOutgoingTLSFailed = "outgoing_tls_failed"
	// EventOutgoingCertExpired: a dialed partner's server certificate is outside its validity.
	EventOutgoingCertExpired = "outgoing_cert_expired"
	// EventOutgoingRevoked: a configured CRL lists a dialed partner's server certificate.
	EventOutgoingRevoked = "outgoing_revoked"
	// EventOutgoingRevocationUnknown: under the hard revocation policy, no configured CRL
	// covers a dialed partner's server certificate, or its CRL is stale.
	EventOutgoingRevocationUnknown = "outgoing_revocation_unknown"
	// EventOutgoingCertMismatch: a dialed partner's server certificate is not bound to the
	// route's Odette ID.
	EventOutgoingCertMismatch = "outgoing_cert_mismatch"
	// EventOutgoingCRLMissing: no configured CRL covers a dialed partner's certificate
	// (accepted).
	EventOutgoingCRLMissing = "outgoing_crl_missing"
	// EventOutgoingSourceIPUnavailable: the configured outgoing_source_ip is not an address of
	// this host; the configuration version is refused, or an outgoing dial fails.
	EventOutgoingSourceIPUnavailable = "outgoing_source_ip_unavailable"

	// EventSessionStarted: a verified session was opened on a tunnel (INFO).
	EventSessionStarted = "session_started"
	// EventSessionEnded: a session ended (INFO).
	EventSessionEnded = "session_ended"
	// EventConfigApplied: a configuration version is in force (INFO).
	EventConfigApplied = "config_applied"
	// EventConfigRejected: a configuration version was refused (ERROR).
	EventConfigRejected = "config_rejected"
	// EventConfigOriginChanged: a configuration of another origin (file, backend) replaced the
	// one in force whatever its version: a client was switched to another source (WARNING).
	EventConfigOriginChanged = "config_origin_changed"
	// EventConfigWarning: a configuration was applied with a warning (WARN).
	EventConfigWarning = "config_warning"
	// EventListenerOpened: the partner listener accepts connections (INFO).
	EventListenerOpened = "partner_listener_opened"
	// EventListenerClosed: the partner listener was closed (INFO).
	EventListenerClosed = "partner_listener_closed"
	// EventListenerFailed: the partner listener could not bind (ERROR).
	EventListenerFailed = "partner_listener_failed"
	// EventTunnelConnected: a client tunnel completed Hello/Welcome (INFO).
	EventTunnelConnected = "tunnel_connected"
	// EventTunnelDisconnected: a client tunnel ended (INFO).
	EventTunnelDisconnected = "tunnel_disconnected"
	// EventLicenseUpdated: a pushed license was stored and loaded (INFO), or refused (ERROR).
	EventLicenseUpdated = "license_updated"
)

// Severities of non-security events.
const (
	infoSeverity  = tunnelv1.Severity_SEVERITY_INFO
	warnSeverity  = tunnelv1.Severity_SEVERITY_WARNING
	errorSeverity = tunnelv1.Severity_SEVERITY_ERROR
)

// queuedEvent is an Event frame waiting for a tunnel.
type queuedEvent struct {
	tunnel *tunnelConn // preferred tunnel (the session's); nil means any
	frame  *tunnelv1.Frame
}

// emit logs e and queues it for a tunnel.
func (s *Server) emit(e event.Event) { s.emitOn(nil, e) }

// emitOn logs e as one line through the event emitter and queues it as an Event frame,
// preferably on tc. A log-ignore
// rule of the configuration that matches the line lowers a warning or worse to INFO, on the
// log line and in the frame. A security event about a source past its threshold of the
// interval is only counted, for the source's partner_refusals_suppressed summary (see
// refusals.go). When the queue is full the frame is dropped and counted; the log line is
// always written.
func (s *Server) emitOn(tc *tunnelConn, e event.Event) {
	now := s.now()
	level := e.Level()
	if e.Severity >= tunnelv1.Severity_SEVERITY_WARNING {
		if rule, ok := s.policy.Load().matchIgnore(e.Line(), now); ok {
			level = logrus.InfoLevel
			e.Severity = tunnelv1.Severity_SEVERITY_INFO
			e = e.With("ignored_by", rule.Description).With("ignore_rule", rule.Substring)
		}
	}
	if e.Security && level == logrus.WarnLevel && e.RemoteAddr != "" && summarised(e.Name) &&
		!s.refusals.admit(e.RemoteAddr, e.Name) {
		s.metrics.eventsSuppressed.Inc()
		return
	}
	s.emitter.EmitAt(s.log, e, level)
	select {
	case s.events <- queuedEvent{tunnel: tc, frame: e.Proto(now)}:
	default:
		s.metrics.eventsDropped.Inc()
	}
}

// flushRefusals ends a refusal log interval: it emits the partner_refusals_suppressed
// summaries of the sources over their threshold.
func (s *Server) flushRefusals() {
	for _, e := range s.refusals.flush(s.cfg.RefusalLogInterval) {
		s.emit(e)
	}
}

// eventLoop sends queued Event frames until ctx ends: on the preferred tunnel while it is
// connected, else on any connected tunnel, else nowhere (the event was logged). At the end of
// each refusal log interval it emits the summaries.
func (s *Server) eventLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.RefusalLogInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.flushRefusals()
		case q := <-s.events:
			tc := q.tunnel
			if tc == nil || !s.tunnelConnected(tc) {
				tc = s.anyTunnel()
			}
			if tc == nil {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := tc.sendControl(sctx, q.frame); err != nil {
				s.metrics.eventsDropped.Inc()
			}
			cancel()
		}
	}
}
