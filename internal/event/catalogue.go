package event

import (
	"sort"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Def is one catalogued event name.
type Def struct {
	// Name is the stable name, the event field of the log line.
	Name string
	// Severity is the event's default severity (tunnel, backend, event script).
	Severity tunnelv1.Severity
	// Security marks a security event: logged at WARN at least and documented in
	// docs/security-events.md.
	Security bool
	// Refusal marks an event that says a connection, session or request was refused or ended
	// for what its peer did or is: the only events a fail2ban filter may ban on.
	Refusal bool
	// Daemons names the daemons that raise it: server, client, api.
	Daemons string
	// Doc says what happened, in one sentence.
	Doc string
}

const (
	debug    = tunnelv1.Severity_SEVERITY_DEBUG
	info     = tunnelv1.Severity_SEVERITY_INFO
	warning  = tunnelv1.Severity_SEVERITY_WARNING
	errorSev = tunnelv1.Severity_SEVERITY_ERROR
	critical = tunnelv1.Severity_SEVERITY_CRITICAL
)

// refusal, security and op build the catalogue's entries.
func refusal(name string, sev tunnelv1.Severity, daemons, doc string) Def {
	return Def{Name: name, Severity: sev, Security: true, Refusal: true, Daemons: daemons, Doc: doc}
}

func security(name string, sev tunnelv1.Severity, daemons, doc string) Def {
	return Def{Name: name, Severity: sev, Security: true, Daemons: daemons, Doc: doc}
}

func op(name string, sev tunnelv1.Severity, daemons, doc string) Def {
	return Def{Name: name, Severity: sev, Daemons: daemons, Doc: doc}
}

// defs is the catalogue. Add a name here before a daemon logs it; never rename one.
var defs = []Def{
	// Partner admission (smartproxy-server), in the order of the checks.
	refusal("partner_connection_limit", warning, "server", "the concurrent session limit is reached; closed before TLS or ESID 08"),
	refusal("partner_rate_limited", warning, "server", "a source exceeded its connection rate; closed before TLS"),
	refusal("partner_source_limit", warning, "server", "the source or its network prefix has its maximum of connections in admission; closed before TLS"),
	refusal("partner_preadmission_evicted", warning, "server", "a connection in admission was closed to make room, being the longest silent while the pool was full"),
	refusal("partner_refusals_suppressed", warning, "server", "more refusals of one source in one interval than are logged one by one; the line carries their count"),
	refusal("partner_tls_rejected", warning, "server", "the partner's TLS handshake failed"),
	refusal("partner_cert_expired", critical, "server", "the partner's certificate is outside its validity period"),
	refusal("partner_revoked", critical, "server", "a configured CRL lists the partner's certificate"),
	security("partner_crl_missing", warning, "server", "no configured CRL covers the partner's certificate; the connection is accepted"),
	refusal("partner_revocation_unknown", critical, "server", "under the hard revocation policy no current CRL covers the partner's certificate"),
	refusal("partner_ssid_timeout", warning, "server", "no SSID within the SSID deadline after SSRM"),
	refusal("partner_ssid_invalid", critical, "server", "the first command was not a valid SSID"),
	refusal("partner_level_unsupported", critical, "server", "the SSID asks for a protocol level other than OFTP 2.0"),
	refusal("partner_unknown", critical, "server", "the SSID's Odette ID is not a configured partner"),
	refusal("partner_disabled", critical, "server", "the Odette ID belongs to a disabled partner"),
	refusal("partner_password_invalid", critical, "server", "the SSID password is wrong"),
	refusal("partner_cert_mismatch", critical, "server", "the certificate is not bound to the SSID's Odette ID"),
	refusal("partner_network_denied", critical, "server", "the partner connected from a network its entry does not allow"),
	refusal("partner_direction_denied", critical, "server", "the partner may not start sessions"),
	refusal("license_invalid", errorSev, "server", "a partner session was refused because the license is not valid"),
	refusal("session_refused", critical, "server", "the client refused the session (internal server unreachable, no tunnel)"),
	refusal("protocol_violation", critical, "server", "a command in an established session broke RFC 5024; the session was ended"),
	refusal("tunnel_client_rejected", warning, "server", "a tunnel client's certificate is not allowed"),
	refusal("partner_proxy_refused", critical, "server", "a source that is not an allowed load balancer sent a PROXY protocol header; closed before TLS"),
	security("partner_proxy_invalid", errorSev, "server", "an allowed load balancer's connection did not start with a valid PROXY protocol v2 header; closed before TLS (the balancer's fault: not for fail2ban)"),

	// Outgoing sessions (smartproxy-server).
	security("outgoing_connect_failed", errorSev, "server", "the TCP connect to a partner of an outgoing session failed"),
	refusal("outgoing_tls_failed", critical, "server", "the TLS handshake with a dialed partner failed or its certificate is untrusted"),
	refusal("outgoing_cert_expired", critical, "server", "a dialed partner's certificate is outside its validity period"),
	refusal("outgoing_revoked", critical, "server", "a configured CRL lists a dialed partner's certificate"),
	refusal("outgoing_revocation_unknown", critical, "server", "under the hard revocation policy no current CRL covers a dialed partner's certificate"),
	refusal("outgoing_cert_mismatch", critical, "server", "a dialed partner's certificate is not bound to the route's Odette ID"),
	security("outgoing_crl_missing", warning, "server", "no configured CRL covers a dialed partner's certificate; accepted"),
	security("outgoing_source_ip_unavailable", critical, "server", "the configured outgoing source address is not an address of this host"),
	refusal("outgoing_partner_id_mismatch", critical, "server", "the called partner answered with another Odette ID"),

	// Sessions (both daemons: one name for one fact).
	op("session_started", info, "server client", "a verified session was opened on a tunnel"),
	op("session_ended", info, "server client", "a session ended"),
	op("session_killed", warning, "server client", "an operator ended a session through the admin service"),
	op("session_refused_by_client", warning, "client", "the client refused a session the server admitted"),
	op("internal_connect_failed", warning, "client", "the internal OFTP2 server could not be reached"),
	op("internal_protocol_error", warning, "client", "the internal OFTP2 server broke the protocol before the session began"),
	op("internal_protocol_violation", errorSev, "client", "the internal OFTP2 server broke the stream framing"),
	op("outgoing_refused", warning, "client", "an outgoing session from a route was refused"),

	// Configuration.
	op("config_applied", info, "server client", "a configuration version is in force"),
	op("config_rejected", errorSev, "server client", "a configuration version was refused"),
	op("config_origin_changed", warning, "server", "a configuration of another origin replaced the one in force"),
	op("config_warning", warning, "server client", "a configuration was applied with a warning"),
	op("config_pushed", info, "client", "the client pushed a configuration version to a server"),
	op("config_reloaded", info, "client", "SIGHUP loaded a changed configuration file"),
	op("config_reload_refused", errorSev, "client", "SIGHUP found a configuration file that does not load; the one in force stays"),
	op("config_cached", warning, "client", "the client started with the last configuration it got from the backend"),
	op("config_received", info, "client", "a configuration revision arrived from the backend"),
	op("config_invalid", errorSev, "client", "a configuration from the backend does not load"),

	// Listeners, tunnels, routes.
	op("partner_listener_opened", info, "server", "the partner listener accepts connections"),
	op("partner_listener_closed", info, "server", "the partner listener was closed"),
	op("partner_listener_failed", errorSev, "server", "the partner listener could not bind"),
	op("tunnel_connected", info, "server", "a client tunnel completed Hello/Welcome"),
	op("tunnel_disconnected", info, "server", "a client tunnel ended"),
	op("tunnel_up", info, "client", "a tunnel stream to a server is up"),
	op("tunnel_down", warning, "client", "a tunnel stream to a server ended"),
	op("tunnel_draining", warning, "client", "a server announced that it drains the tunnel"),
	op("route_listening", info, "client", "a route listener accepts connections from the internal server"),
	op("route_listen_failed", errorSev, "client", "a route listener could not bind"),
	op("route_closed", info, "client", "a route listener was closed"),

	// License and CRLs.
	op("license_updated", info, "server", "a pushed license was stored and loaded, or refused"),
	op("license_status", info, "server client", "the server's license state"),
	op("license_pushed", info, "client", "the client pushed a license file to a server"),
	op("license_received", info, "client", "a license file arrived from the backend"),
	op("crl_url_report", warning, "server client", "partner certificates name CRL distribution points the configuration has no CRL for"),

	// The backend connection of the client.
	op("backend_unreachable", warning, "client", "the backend does not answer; retried with backoff"),
	security("backend_unauthorized", critical, "client", "the backend refused the client's token (401/403); retried slowly"),
	security("backend_certificate_mismatch", critical, "client", "the backend's certificate does not match the pinned fingerprint"),
	security("backend_certificate_untrusted", critical, "client", "the backend's certificate does not chain to the configured CA"),
	op("backend_reachable", info, "client", "the backend answers again"),
	op("events_dropped", errorSev, "client", "events were dropped before reaching the spool"),
	op("spool_overflow", errorSev, "client", "the event spool was full; the oldest events were dropped"),
	op("spool_event_rejected", warning, "client", "the backend refused a spooled event; it was dropped"),
	op("api_retry", debug, "client", "a request to the backend is retried"),

	// Every daemon.
	op("log_level_changed", warning, "server client api", "a log level was changed (signal or admin service)"),
	op("health_changed", info, "server client", "a health status of the admin service changed"),

	// smartproxy-api.
	refusal("api_auth_failed", warning, "api", "an API request without a valid bearer token was refused"),
	op("crl_fetch_failed", warning, "api", "a CRL download failed; the stored CRL is kept"),
	op("event_script_done", info, "api", "the event script ran for an event"),
	op("event_script_failed", errorSev, "api", "the event script failed"),
	op("event_script_timeout", errorSev, "api", "the event script was killed after its timeout"),
	op("ignore_rule_expired", info, "api", "an expired log-ignore rule was removed"),
	op("admin_login", info, "api", "a user logged in to the web admin"),
	refusal("admin_login_failed", warning, "api", "a web admin login with a wrong user name or password"),
	refusal("admin_login_refused", warning, "api", "a web admin login was refused (too many failures)"),
	op("admin_logout", info, "api", "a user logged out of the web admin"),
	op("admin_session_expired", info, "api", "a web admin session expired"),
	refusal("admin_cross_origin_refused", warning, "api", "a web admin request from another origin was refused"),

	// oftp2, the test and demo endpoint.
	op("tls_handshake_failed", warning, "oftp2", "a TLS handshake with the oftp2 endpoint failed"),
}

var catalogue = func() map[string]Def {
	m := make(map[string]Def, len(defs))
	for _, d := range defs {
		m[d.Name] = d // TestCatalogue checks that no name comes twice
	}
	return m
}()

// Lookup returns the catalogued definition of name.
func Lookup(name string) (Def, bool) {
	d, ok := catalogue[name]
	return d, ok
}

// All returns the catalogue sorted by name.
func All() []Def {
	out := append([]Def(nil), defs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
