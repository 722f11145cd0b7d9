package server

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Stable names of the server's events: the `event` field of the log line and Event.name on the
// tunnel. docs/security-events.md describes each one with its fields. Never rename one: intrusion
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

// event is one event of the server.
type event struct {
	name       string
	severity   tunnelv1.Severity
	sessionID  uint64
	odetteID   string
	remoteAddr string
	reason     string // short machine-readable reason, the `reason` field
	msg        string // human-readable message
	fields     map[string]string
	security   bool // a security event: logged at WARN whatever its tunnel severity
}

// security returns a security event (WARN, CRITICAL on the tunnel unless background noise).
func security(name, remoteAddr, odetteID, reason, msg string) event {
	sev := tunnelv1.Severity_SEVERITY_CRITICAL
	switch name {
	case EventPartnerRateLimited, EventPartnerOverloaded, EventPartnerTLSRejected, EventPartnerSSIDTimeout, EventPartnerCRLMissing,
		EventPartnerSourceLimit, EventPartnerEvicted, EventPartnerRefusalsSuppressed:
		// Background noise of every internet-facing port: worth a line for fail2ban, not a
		// page to an operator.
		sev = tunnelv1.Severity_SEVERITY_WARNING
	case EventOutgoingCRLMissing:
		// A configuration gap, like partner_crl_missing.
		sev = tunnelv1.Severity_SEVERITY_WARNING
	case EventLicenseInvalid, EventOutgoingConnectFailed, EventPartnerProxyInvalid:
		// A partner that cannot be reached is an operator's problem, not an attack; so is a
		// load balancer that does not speak PROXY protocol as configured.
		sev = tunnelv1.Severity_SEVERITY_ERROR
	}
	return event{name: name, severity: sev, remoteAddr: remoteAddr, odetteID: odetteID, reason: reason, msg: msg, security: true}
}

// with returns e with one more field.
func (e event) with(k, v string) event {
	if v == "" {
		return e
	}
	m := make(map[string]string, len(e.fields)+1)
	for a, b := range e.fields {
		m[a] = b
	}
	m[k] = v
	e.fields = m
	return e
}

// logLevel is the level of the event's log line: every security event logs at WARN.
func (e event) logLevel() logrus.Level {
	if e.security {
		return logrus.WarnLevel
	}
	switch e.severity {
	case tunnelv1.Severity_SEVERITY_DEBUG:
		return logrus.DebugLevel
	case tunnelv1.Severity_SEVERITY_INFO:
		return logrus.InfoLevel
	case tunnelv1.Severity_SEVERITY_ERROR:
		return logrus.ErrorLevel
	}
	return logrus.WarnLevel
}

// line renders the event as the key=value text that log-ignore rules are matched against.
func (e event) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "event=%s", e.name)
	if e.remoteAddr != "" {
		fmt.Fprintf(&b, " remote_addr=%s", e.remoteAddr)
	}
	if e.odetteID != "" {
		fmt.Fprintf(&b, " odette_id=%q", e.odetteID)
	}
	if e.reason != "" {
		fmt.Fprintf(&b, " reason=%q", e.reason)
	}
	if e.sessionID != 0 {
		fmt.Fprintf(&b, " session_id=%d", e.sessionID)
	}
	keys := make([]string, 0, len(e.fields))
	for k := range e.fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, e.fields[k])
	}
	fmt.Fprintf(&b, " msg=%q", e.msg)
	return b.String()
}

// logFields returns the logrus fields of the event's line.
func (e event) logFields() logrus.Fields {
	f := logrus.Fields{"event": e.name}
	if e.remoteAddr != "" {
		f["remote_addr"] = e.remoteAddr
	}
	if e.odetteID != "" {
		f["odette_id"] = e.odetteID
	}
	if e.reason != "" {
		f["reason"] = e.reason
	}
	if e.sessionID != 0 {
		f["session_id"] = e.sessionID
	}
	for k, v := range e.fields {
		f[k] = v
	}
	return f
}

// proto returns the event as a tunnel Event frame.
func (e event) proto(now time.Time) *tunnelv1.Frame {
	fields := make(map[string]string, len(e.fields)+1)
	for k, v := range e.fields {
		fields[k] = v
	}
	if e.reason != "" {
		fields["reason"] = e.reason
	}
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_Event{Event: &tunnelv1.Event{
		Time:       timestamppb.New(now),
		Severity:   e.severity,
		Name:       e.name,
		SessionId:  e.sessionID,
		OdetteId:   e.odetteID,
		RemoteAddr: e.remoteAddr,
		Message:    e.msg,
		Fields:     fields,
	}}}
}

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
func (s *Server) emit(e event) { s.emitOn(nil, e) }

// emitOn logs e as one line and queues it as an Event frame, preferably on tc. A log-ignore
// rule of the configuration that matches the line lowers a warning or worse to INFO, on the
// log line and in the frame. A security event about a source past its threshold of the
// interval is only counted, for the source's partner_refusals_suppressed summary (see
// refusals.go). When the queue is full the frame is dropped and counted; the log line is
// always written.
func (s *Server) emitOn(tc *tunnelConn, e event) {
	now := s.now()
	level := e.logLevel()
	if e.severity >= tunnelv1.Severity_SEVERITY_WARNING {
		if rule, ok := s.policy.Load().matchIgnore(e.line(), now); ok {
			level = logrus.InfoLevel
			e.severity = tunnelv1.Severity_SEVERITY_INFO
			e = e.with("ignored_by", rule.Description).with("ignore_rule", rule.Substring)
		}
	}
	if e.security && level == logrus.WarnLevel && e.remoteAddr != "" && summarised(e.name) &&
		!s.refusals.admit(e.remoteAddr, e.name) {
		s.metrics.eventsSuppressed.Inc()
		return
	}
	fields := e.logFields()
	if e.remoteAddr != "" {
		if host, _, err := net.SplitHostPort(e.remoteAddr); err == nil {
			fields["remote_ip"] = host
		}
	}
	s.log.WithFields(fields).Log(level, e.msg)
	select {
	case s.events <- queuedEvent{tunnel: tc, frame: e.proto(now)}:
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
