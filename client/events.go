package client

import (
	"smartproxy/internal/event"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Event names of the client's own log lines (the event field).
const (
	EventTunnelUp          = "tunnel_up"
	EventTunnelDown        = "tunnel_down"
	EventTunnelDraining    = "tunnel_draining"
	EventConfigPushed      = "config_pushed"
	EventConfigApplied     = "config_applied"
	EventConfigRejected    = "config_rejected"
	EventCRLURLReport      = "crl_url_report"
	EventLicenseStatus     = "license_status"
	EventLicensePushed     = "license_pushed"
	EventSessionStarted    = "session_started"
	EventSessionEnded      = "session_ended"
	EventSessionKilled     = "session_killed"
	EventProtocolViolation = "internal_protocol_violation"
)

// Events returns the client's emitter: an event emitted through it is logged and, when it is a
// warning or worse, handed to the Observer (the backend relay). The daemon's own events (a
// refused configuration file) go through it too.
func (c *Client) Events() *event.Emitter { return c.events }

// event returns the catalogued event name about session s.
func (s *session) event(name, msg string) event.Event {
	e := event.New(name, msg)
	e.SessionID, e.OdetteID, e.RemoteAddr = s.id, s.partner, s.remote
	return e
}

// reservedEventKeys are log fields the client sets itself; an event field of the same name is
// logged with the prefix "server_" so that neither is lost.
var reservedEventKeys = map[string]bool{
	"event": true, "source": true, "severity": true, "server_time": true, "tunnel": true,
	"session_id": true, "odette_id": true, "remote_addr": true, "msg": true, "level": true, "time": true,
}

// logEvent writes one server Event as one log line that keeps the event's name in the event
// field, so that the same fail2ban and IDS rules match the server's and the client's log.
func logEvent(log logrus.FieldLogger, ev *tunnelv1.Event) {
	f := logrus.Fields{
		"event":    ev.GetName(),
		"source":   "server",
		"severity": strings.ToLower(strings.TrimPrefix(ev.GetSeverity().String(), "SEVERITY_")),
	}
	if ts := ev.GetTime(); ts != nil {
		f["server_time"] = ts.AsTime().UTC().Format(time.RFC3339Nano)
	}
	if id := ev.GetSessionId(); id != 0 {
		f["server_session_id"] = id
	}
	if v := ev.GetOdetteId(); v != "" {
		f["odette_id"] = v
	}
	if v := ev.GetRemoteAddr(); v != "" {
		f["remote_addr"] = v
	}
	for k, v := range ev.GetFields() {
		if reservedEventKeys[k] || f[k] != nil {
			k = "server_" + k
		}
		f[k] = event.Value(k, v) // in the field's declared type, as the server logged it
	}
	entry := log.WithFields(f)
	msg := ev.GetMessage()
	if msg == "" {
		msg = ev.GetName()
	}
	switch ev.GetSeverity() {
	case tunnelv1.Severity_SEVERITY_CRITICAL, tunnelv1.Severity_SEVERITY_ERROR:
		entry.Error(msg)
	case tunnelv1.Severity_SEVERITY_WARNING:
		entry.Warn(msg)
	case tunnelv1.Severity_SEVERITY_DEBUG:
		entry.Debug(msg)
	default:
		entry.Info(msg)
	}
}

// logCRLURLReport logs the CRL distribution points the server saw and the configuration lacks.
func logCRLURLReport(log logrus.FieldLogger, r *tunnelv1.CrlUrlReport) {
	log.WithFields(logrus.Fields{"event": EventCRLURLReport, "source": "server", "urls": strings.Join(r.GetUrls(), " ")}).
		Warn("partner certificates name CRL distribution points the configuration has no CRL for; add them to crls")
}

// logLicense logs the server's license state.
func logLicense(log logrus.FieldLogger, l *tunnelv1.LicenseStatus) {
	f := logrus.Fields{"event": EventLicenseStatus, "source": "server", "proxy_id": l.GetProxyId(), "license_valid": l.GetValid()}
	if ts := l.GetExpiresAt(); ts != nil {
		f["expires_at"] = ts.AsTime().UTC().Format(time.RFC3339)
	}
	if l.GetValid() {
		log.WithFields(f).Info("server license is valid")
		return
	}
	f["reason"] = l.GetReason()
	log.WithFields(f).Error("server license is not valid: the server refuses partner sessions")
}
