package apiv1

import (
	"fmt"
	"strconv"
	"time"
)

// Secret is a string that must not reach a log: a partner password or a PEM private key. Its
// String and GoString methods redact it; JSON carries the value itself.
type Secret string

// String returns "[redacted]", or "" for an empty Secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns the quoted String.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Duration is a time.Duration written in JSON as a Go duration string such as "30s" or "2m30s".
// The zero Duration means "the default" wherever it is used, and is omitted from documents.
type Duration time.Duration

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string; "" is zero. Negative durations are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"30s\", \"1m30s\" or \"2h\")", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	*d = Duration(v)
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ConfigDocument is the whole configuration of one proxy (the DMZ server and its internal
// client), answered by GET /v1/config. Its JSON keys match the client's local configuration file
// (docs/configuration.md) wherever the file has the same setting; where the file names a file,
// the document carries the content (PEM) instead.
type ConfigDocument struct {
	// Revision increases with every change of the document; the DMZ server applies a higher
	// revision over a lower one.
	Revision int64 `json:"revision"`
	// PartnerListenAddress is the "host:port" the DMZ server accepts partners on. If empty,
	// ":6619".
	PartnerListenAddress string `json:"partner_listen_address"`
	// CompanyIdentity is the company's certificate and key that partners see.
	CompanyIdentity CompanyIdentity `json:"company_identity"`
	// TrustedCACertificatesPEM are the CA certificates partner certificates must chain to, each
	// a PEM block (one or more certificates per entry).
	TrustedCACertificatesPEM []string `json:"trusted_ca_certificates_pem"`
	// CRLs describe the revocation lists of the trusted CAs; their bodies are fetched one by one
	// from CRLPath(id).
	CRLs []CRLInfo `json:"crls"`
	// Partners are the trading partners known to the proxy.
	Partners []Partner `json:"partners"`
	// Limits are the partner listener's resource limits.
	Limits Limits `json:"limits"`
	// InternalServer is the internal OFTP2 server incoming sessions are forwarded to; null when
	// not configured yet.
	InternalServer *InternalServer `json:"internal_server"`
	// OutgoingSourceIP is the IP address the DMZ server dials partners from. If empty, the
	// system chooses.
	OutgoingSourceIP string `json:"outgoing_source_ip"`
	// Routes are the outgoing routes: a listener per partner on the internal side.
	Routes []Route `json:"routes"`
	// LogLevel is the DMZ server's log level (trace, debug, info, warn, error). If empty, the
	// server keeps its own.
	LogLevel string `json:"log_level"`
	// LogIgnoreRules lower matching events to INFO.
	LogIgnoreRules []LogIgnoreRule `json:"log_ignore_rules"`
	// Revocation is the policy for partner certificates that no CRL covers or whose CRL is past
	// its nextUpdate: "soft" accepts them with a warning, "hard" refuses them. If empty, "soft".
	Revocation Revocation `json:"revocation,omitempty"`
	// ProxyProtocol turns on PROXY protocol v2 on the partner listener; nil (absent) means off.
	ProxyProtocol *ProxyProtocol `json:"proxy_protocol,omitempty"`
}

// ProxyProtocol is the PROXY protocol v2 setting of the partner listener, for a DMZ server
// behind a TCP load balancer.
type ProxyProtocol struct {
	// AllowedSources are the IP addresses or CIDR networks of the load balancers allowed to send
	// a header; their connections must start with one. At least one.
	AllowedSources []string `json:"allowed_sources"`
}

// CompanyIdentity is the company's TLS identity towards partners.
type CompanyIdentity struct {
	// CertificateChainPEM is the PEM certificate chain, leaf first.
	CertificateChainPEM string `json:"certificate_chain_pem"`
	// PrivateKeyPEM is the PEM private key of the leaf (PKCS #8, PKCS #1 or SEC 1).
	PrivateKeyPEM Secret `json:"private_key_pem"`
}

// CRLInfo is the metadata of one certificate revocation list. The body is not part of the
// configuration document; GET CRLPath(ID) answers it.
type CRLInfo struct {
	// ID identifies the CRL in CRLPath; see ValidateCRLID for its syntax.
	ID string `json:"id"`
	// URL is the distribution point the CRL is downloaded from.
	URL string `json:"url"`
	// ETag is the strong, quoted entity tag of the current body; the download answers with the
	// same ETag.
	ETag string `json:"etag"`
	// Size is the body's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the SHA-256 of the body, 64 lower-case hexadecimal digits.
	SHA256 string `json:"sha256"`
	// ThisUpdate is the CRL's thisUpdate.
	ThisUpdate time.Time `json:"this_update"`
	// NextUpdate is the CRL's nextUpdate; null when the CRL has none.
	NextUpdate *time.Time `json:"next_update"`
}

// Direction says which sessions a partner may have.
type Direction string

// Direction values.
const (
	// DirectionBoth allows incoming and outgoing sessions.
	DirectionBoth Direction = "both"
	// DirectionIncoming allows only sessions the partner starts.
	DirectionIncoming Direction = "incoming"
	// DirectionOutgoing allows only sessions the company starts.
	DirectionOutgoing Direction = "outgoing"
)

// Valid reports whether d is one of the Direction values.
func (d Direction) Valid() bool {
	return d == DirectionBoth || d == DirectionIncoming || d == DirectionOutgoing
}

// Charset is the character-set policy for a partner's OFTP2 identification fields.
type Charset string

// Charset values.
const (
	// CharsetStrict accepts only the RFC 5024 §5.3 character set.
	CharsetStrict Charset = "strict"
	// CharsetLenient accepts every printable ASCII character.
	CharsetLenient Charset = "lenient"
)

// Valid reports whether c is one of the Charset values.
func (c Charset) Valid() bool { return c == CharsetStrict || c == CharsetLenient }

// Revocation is the policy for partner certificates whose revocation state is unknown.
type Revocation string

// Revocation values.
const (
	// RevocationSoft accepts such a certificate with a warning event.
	RevocationSoft Revocation = "soft"
	// RevocationHard refuses such a certificate in the TLS handshake.
	RevocationHard Revocation = "hard"
)

// Valid reports whether r is one of the Revocation values.
func (r Revocation) Valid() bool { return r == RevocationSoft || r == RevocationHard }

// Partner is one trading partner.
type Partner struct {
	// OdetteID is the partner's Odette ID (SSIDCODE), 1–25 characters; unique.
	OdetteID string `json:"odette_id"`
	// Name is a human-readable name for logs.
	Name string `json:"name"`
	// Enabled says whether the partner may connect.
	Enabled bool `json:"enabled"`
	// Password is the SSID password (SSIDPSWD) the partner must send, up to 8 characters. If
	// empty, the proxy does not check it.
	Password Secret `json:"password,omitempty"`
	// CertificateBindings are the certificates the partner may present; one must match. If
	// empty, the certificate subject's serialNumber must equal the Odette ID.
	CertificateBindings []CertificateBinding `json:"certificate_bindings"`
	// AllowedNetworks are the networks (CIDR) the partner may connect from. If empty, any.
	AllowedNetworks []string `json:"allowed_networks"`
	// Direction is "both", "incoming" or "outgoing". If empty, "both".
	Direction Direction `json:"direction"`
	// Charset is "strict" or "lenient". If empty, "strict".
	Charset Charset `json:"charset"`
	// MaxCredit caps the SSID credit (1–999) passed on for this partner. If zero, no own cap.
	MaxCredit uint32 `json:"max_credit"`
	// MaxBufferSize caps the SSID exchange buffer size (128–99999) passed on for this partner. If
	// zero, no own cap.
	MaxBufferSize uint32 `json:"max_buffer_size"`
	// Revocation overrides the document's Revocation for certificates bound to this partner. If
	// empty, the document's applies.
	Revocation Revocation `json:"revocation,omitempty"`
}

// CertificateBinding ties a certificate to a partner; every non-empty field must match.
type CertificateBinding struct {
	// SubjectSerialNumber is the expected subject serialNumber attribute.
	SubjectSerialNumber string `json:"subject_serial_number,omitempty"`
	// SHA256Fingerprint is the expected SHA-256 of the DER certificate, 64 hexadecimal digits.
	SHA256Fingerprint string `json:"sha256_fingerprint,omitempty"`
	// Subject is the expected subject distinguished name in RFC 4514 form.
	Subject string `json:"subject,omitempty"`
}

// Limits are the partner listener's resource limits. Zero values mean the server's defaults.
type Limits struct {
	// MaxSessions is the maximum of concurrent partner sessions.
	MaxSessions uint32 `json:"max_sessions"`
	// MaxHandshakes is the maximum of concurrent TLS handshakes and SSID exchanges.
	MaxHandshakes uint32 `json:"max_handshakes"`
	// PerIPRate is the number of new connections per second allowed from one IP address.
	PerIPRate float64 `json:"per_ip_rate"`
	// PerIPBurst is the burst size of the per-IP rate limit.
	PerIPBurst uint32 `json:"per_ip_burst"`
	// HandshakeTimeout is the time allowed for a partner's TLS handshake.
	HandshakeTimeout Duration `json:"handshake_timeout,omitempty"`
	// SSIDTimeout is the time allowed for a partner's SSID after SSRM.
	SSIDTimeout Duration `json:"ssid_timeout,omitempty"`
	// IdleTimeout ends a session without any command for this long.
	IdleTimeout Duration `json:"idle_timeout,omitempty"`
	// MaxCredit caps the SSID credit (1–999) for partners without their own cap.
	MaxCredit uint32 `json:"max_credit"`
	// MaxHandshakesPerSource is the maximum of concurrent TLS handshakes and SSID exchanges from
	// one source address.
	MaxHandshakesPerSource uint32 `json:"max_handshakes_per_source,omitempty"`
	// MaxHandshakesPerPrefix is the maximum of concurrent TLS handshakes and SSID exchanges from
	// one network prefix.
	MaxHandshakesPerPrefix uint32 `json:"max_handshakes_per_prefix,omitempty"`
	// PrefixLengthV4 is the IPv4 prefix length MaxHandshakesPerPrefix counts (8–32).
	PrefixLengthV4 uint32 `json:"prefix_length_v4,omitempty"`
	// PrefixLengthV6 is the IPv6 prefix length MaxHandshakesPerPrefix counts (16–128).
	PrefixLengthV6 uint32 `json:"prefix_length_v6,omitempty"`
	// MaxBufferSize caps the SSID exchange buffer size (128–99999) for partners without their
	// own cap.
	MaxBufferSize uint32 `json:"max_buffer_size"`
	// ConnectTimeout is the time allowed for the DMZ server's TCP connect to a partner in an
	// outgoing session. If zero, the server's default.
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
}

// InternalServer is the internal OFTP2 server, as the internal client reaches it.
type InternalServer struct {
	// Address is its "host:port".
	Address string `json:"address"`
	// ConnectTimeout bounds TCP connect and TLS handshake. If zero, 10s.
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
	// SSRMTimeout bounds the wait for the server's SSRM. If zero, 30s.
	SSRMTimeout Duration `json:"ssrm_timeout,omitempty"`
	// TLS, if not null, makes the client connect with TLS.
	TLS *InternalTLS `json:"tls"`
}

// InternalTLS is the TLS configuration for the connection to the internal OFTP2 server.
type InternalTLS struct {
	// CAPEM holds the PEM CA certificates the server's certificate must chain to. If empty, the
	// system's trusted roots are used.
	CAPEM string `json:"ca_pem"`
	// CertificatePEM is a PEM client certificate chain to present. Optional; requires
	// PrivateKeyPEM.
	CertificatePEM string `json:"certificate_pem"`
	// PrivateKeyPEM is the PEM private key of CertificatePEM.
	PrivateKeyPEM Secret `json:"private_key_pem"`
	// ServerName is the name the server certificate is verified against. If empty, the host
	// part of Address.
	ServerName string `json:"server_name"`
}

// Route is an outgoing route: the internal client listens on ListenAddress for the internal
// OFTP2 server, and the DMZ server connects the session to the partner at PartnerAddress.
type Route struct {
	// Name identifies the route in logs; unique.
	Name string `json:"name"`
	// ListenAddress is the "host:port" the internal client listens on.
	ListenAddress string `json:"listen_address"`
	// PartnerAddress is the partner's "host:port".
	PartnerAddress string `json:"partner_address"`
	// PartnerOdetteID is the Odette ID of the partner behind PartnerAddress.
	PartnerOdetteID string `json:"partner_odette_id"`
	// ServerName is the name the partner's certificate is verified against. If empty, the host
	// part of PartnerAddress.
	ServerName string `json:"server_name"`
	// PreferredServer is the Proxy ID of the DMZ server whose tunnels the route's outgoing
	// sessions take while one is up (a client connected to several servers). If empty, any.
	PreferredServer string `json:"preferred_server,omitempty"`
}

// LogIgnoreRule lowers matching events to INFO (and keeps them from being escalated) while it is
// valid.
type LogIgnoreRule struct {
	// ID identifies the rule in the backend; 0 in a rule not stored yet.
	ID int64 `json:"id"`
	// Substring is matched case-insensitively against an event's line. Required.
	Substring string `json:"substring"`
	// Description says why the rule exists.
	Description string `json:"description"`
	// ValidFrom is the start of validity; null means already valid.
	ValidFrom *time.Time `json:"valid_from"`
	// ValidUntil is the end of validity; null means without end. It must be after ValidFrom.
	ValidUntil *time.Time `json:"valid_until"`
}

// ActiveAt reports whether r is valid at t: ValidFrom ≤ t < ValidUntil, absent bounds open.
func (r *LogIgnoreRule) ActiveAt(t time.Time) bool {
	if r.ValidFrom != nil && t.Before(*r.ValidFrom) {
		return false
	}
	return r.ValidUntil == nil || t.Before(*r.ValidUntil)
}

// CRLURLsRequest is the body of POST /v1/crl-urls: CRL distribution points seen in partner
// certificates that the configuration lacks.
type CRLURLsRequest struct {
	// URLs are absolute http or https URLs, at most MaxCRLURLsPerRequest.
	URLs []string `json:"urls"`
}

// Severity is an event's seriousness.
type Severity string

// Severity values, least serious first.
const (
	// SeverityDebug is diagnostic.
	SeverityDebug Severity = "debug"
	// SeverityInfo is normal operation.
	SeverityInfo Severity = "info"
	// SeverityWarning is something an operator should look at.
	SeverityWarning Severity = "warning"
	// SeverityError is a failure.
	SeverityError Severity = "error"
	// SeverityCritical is a security event or a failure that needs action now.
	SeverityCritical Severity = "critical"
)

// Valid reports whether s is one of the Severity values.
func (s Severity) Valid() bool {
	switch s {
	case SeverityDebug, SeverityInfo, SeverityWarning, SeverityError, SeverityCritical:
		return true
	}
	return false
}

// Source says which daemon raised an event.
type Source string

// Source values.
const (
	// SourceServer is the DMZ server (smartproxy-server).
	SourceServer Source = "server"
	// SourceClient is the internal client (smartproxy-client).
	SourceClient Source = "client"
)

// Valid reports whether s is one of the Source values.
func (s Source) Valid() bool { return s == SourceServer || s == SourceClient }

// Event is a security or system event for the backend's store.
type Event struct {
	// ID is unique per event, chosen by the client (e.g. 32 hexadecimal digits); see
	// ValidateEventID. The backend stores an ID once: a resent event counts as a duplicate.
	ID string `json:"id"`
	// Time is when the event happened (RFC 3339 with fractional seconds).
	Time time.Time `json:"time"`
	// Severity is how serious it is.
	Severity Severity `json:"severity"`
	// Name is the stable event name, e.g. "partner_unknown" (the event= field of the log line).
	Name string `json:"name"`
	// SessionID is the session the event belongs to; 0 if none.
	SessionID uint64 `json:"session_id,omitempty"`
	// OdetteID is the Odette ID involved; empty if none.
	OdetteID string `json:"odette_id,omitempty"`
	// RemoteAddr is the remote address involved, "ip:port"; empty if none.
	RemoteAddr string `json:"remote_addr,omitempty"`
	// Message is a human-readable description.
	Message string `json:"message,omitempty"`
	// Fields are further structured fields with snake_case keys.
	Fields map[string]string `json:"fields,omitempty"`
	// Source is the daemon that raised the event.
	Source Source `json:"source"`
}

// EventsRequest is the body of POST /v1/events.
type EventsRequest struct {
	// Events are 1 to MaxEventsPerRequest events with distinct IDs.
	Events []Event `json:"events"`
}

// EventsResponse answers POST /v1/events.
type EventsResponse struct {
	// Accepted is the number of events stored now.
	Accepted int `json:"accepted"`
	// Duplicates is the number of events whose ID was stored before (and were not stored again).
	Duplicates int `json:"duplicates"`
}

// LicenseStatus is the body of PUT /v1/license-status: the DMZ server's view of its license.
type LicenseStatus struct {
	// ProxyID is the Proxy ID of the DMZ server host.
	ProxyID string `json:"proxy_id"`
	// Valid is true when a license for ProxyID is installed, correctly signed and not expired.
	Valid bool `json:"valid"`
	// ExpiresAt is the end of validity of the installed license; null when none is installed.
	ExpiresAt *time.Time `json:"expires_at"`
	// Reason says why the license is not valid; empty when valid.
	Reason string `json:"reason"`
	// Tunnel is the client's tunnel to the DMZ server when it sent this report; nil from
	// clients that do not report it. A client reporting it repeats the report periodically, so
	// that the backend can show its tunnel and sessions as current.
	Tunnel *TunnelState `json:"tunnel,omitempty"`
}

// TunnelState is a proxy client's view of its tunnel to the DMZ server, part of LicenseStatus.
type TunnelState struct {
	// Streams is the number of tunnel streams established now; 0 when the tunnel is down.
	Streams int `json:"streams"`
	// OpenSessions is the number of partner sessions open through the tunnel now.
	OpenSessions int `json:"open_sessions"`
	// ConnectedAt is when the oldest established stream connected; nil when the tunnel is down.
	ConnectedAt *time.Time `json:"connected_at"`
}

// ConfigStatus is the body of POST /v1/config-status: what the DMZ server answered for a
// configuration the client pushed.
type ConfigStatus struct {
	// Revision is the ConfigDocument revision the answer is about.
	Revision int64 `json:"revision"`
	// ETag is the ETag of that document as GET /v1/config answered it.
	ETag string `json:"etag"`
	// Applied is true when the configuration is now in force.
	Applied bool `json:"applied"`
	// Errors say why it was refused; empty when applied.
	Errors []ConfigError `json:"errors"`
}

// ConfigError is one problem the DMZ server found in a configuration.
type ConfigError struct {
	// Field is the JSON path of the offending field, e.g. "partners[3].allowed_networks[0]".
	Field string `json:"field"`
	// Message says what is wrong with it.
	Message string `json:"message"`
}

// HealthResponse answers GET /v1/health.
type HealthResponse struct {
	// Status is "ok" when the backend serves requests.
	Status string `json:"status"`
}

// HealthOK is the Status of a healthy backend.
const HealthOK = "ok"
