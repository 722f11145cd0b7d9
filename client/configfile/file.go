package configfile

// File is the JSON document of a configuration file, as written by the operator. Field names are
// the JSON keys; docs/configuration.md describes each one with an example. Paths are resolved
// against the directory of the configuration file when relative.
//
// File is only the syntax: Load validates it and turns it into a client.Snapshot.
type File struct {
	// Version of the configuration; higher wins on the server. If zero, Load derives one (see
	// Loader).
	Version uint64 `json:"version"`
	// PartnerListenAddress is the "host:port" the DMZ server accepts partners on. If empty,
	// ":6619".
	PartnerListenAddress string `json:"partner_listen_address"`
	// CompanyCertificate is a PEM file with the company's certificate chain, leaf first, which
	// partners see. Required.
	CompanyCertificate string `json:"company_certificate"`
	// CompanyKey is a PEM file with the private key of CompanyCertificate (PKCS #8, PKCS #1 or
	// SEC 1). Required.
	CompanyKey string `json:"company_key"`
	// TrustedCAFiles are PEM or DER files with the CA certificates partner certificates must
	// chain to. At least one is required.
	TrustedCAFiles []string `json:"trusted_ca_files"`
	// CRLs are the revocation lists for the trusted CAs.
	CRLs []CRL `json:"crls"`
	// Partners are the trading partners allowed to connect.
	Partners []Partner `json:"partners"`
	// Limits are the partner listener's resource limits.
	Limits Limits `json:"limits"`
	// InternalServer is the internal OFTP2 server incoming sessions are forwarded to. Required.
	InternalServer *InternalServer `json:"internal_server"`
	// OutgoingSourceIP is the source address of the DMZ server's connections to partners in
	// outgoing sessions; it must be an address of the DMZ host. If empty, the system chooses.
	OutgoingSourceIP string `json:"outgoing_source_ip"`
	// Routes are the outgoing routes: the client listens on each route's address for the
	// internal OFTP2 server and the DMZ server dials the route's partner.
	Routes []Route `json:"routes"`
	// LogLevel is the DMZ server's log level (trace, debug, info, warn, error). If empty, the
	// server keeps its own.
	LogLevel string `json:"log_level"`
	// LogIgnoreRules lower matching events to INFO.
	LogIgnoreRules []LogIgnoreRule `json:"log_ignore_rules"`
	// Revocation is the revocation policy for partner certificates that no CRL covers or whose
	// CRL is past its nextUpdate: "soft" accepts them with a partner_crl_missing event, "hard"
	// refuses them (partner_revocation_unknown). If empty, "soft".
	Revocation string `json:"revocation"`
	// ProxyProtocol turns on PROXY protocol v2 on the partner listener, for a DMZ server behind
	// a TCP load balancer. If absent, it is off.
	ProxyProtocol *ProxyProtocol `json:"proxy_protocol"`
}

// ProxyProtocol is the PROXY protocol v2 setting of the partner listener.
type ProxyProtocol struct {
	// AllowedSources are the IP addresses or CIDR networks of the load balancers allowed to send
	// a header; their connections must start with one. At least one is required.
	AllowedSources []string `json:"allowed_sources"`
}

// CRL is one certificate revocation list file.
type CRL struct {
	// File is a PEM ("X509 CRL") or DER file. Required.
	File string `json:"file"`
	// URL is the distribution point the CRL comes from, so that the server does not report it as
	// unknown. Optional.
	URL string `json:"url"`
}

// Partner is one trading partner.
type Partner struct {
	// OdetteID is the partner's Odette ID (SSIDCODE), 1–25 characters. Required, unique.
	OdetteID string `json:"odette_id"`
	// Name is a human-readable name for logs. Optional.
	Name string `json:"name"`
	// Enabled says whether the partner may connect. If absent, true.
	Enabled *bool `json:"enabled"`
	// Password is the SSID password (SSIDPSWD) the partner must send, up to 8 characters,
	// compared exactly. If empty, the proxy does not check it (the internal server still may).
	Password string `json:"password"`
	// CertificateBindings are the certificates the partner may present; one must match. If
	// empty, the certificate subject's serialNumber must equal the Odette ID.
	CertificateBindings []CertificateBinding `json:"certificate_bindings"`
	// AllowedNetworks are the networks (CIDR) the partner may connect from. If empty, any.
	AllowedNetworks []string `json:"allowed_networks"`
	// Direction is "both", "incoming" or "outgoing". If empty, "both".
	Direction string `json:"direction"`
	// Charset is "strict" or "lenient". If empty, "strict".
	Charset string `json:"charset"`
	// MaxCredit caps the SSID credit (1–999) passed on for this partner. If zero, no cap.
	MaxCredit uint32 `json:"max_credit"`
	// MaxBufferSize caps the SSID exchange buffer size (128–99999) passed on for this partner.
	// If zero, no cap.
	MaxBufferSize uint32 `json:"max_buffer_size"`
	// Revocation overrides the configuration's revocation policy for certificates bound to this
	// partner: "soft" or "hard". If empty, the configuration's.
	Revocation string `json:"revocation"`
}

// CertificateBinding ties a certificate to a partner; every field given must match.
type CertificateBinding struct {
	// SubjectSerialNumber is the expected subject serialNumber attribute.
	SubjectSerialNumber string `json:"subject_serial_number"`
	// SHA256Fingerprint is the expected SHA-256 of the DER certificate, 64 hexadecimal digits,
	// optionally separated by colons or spaces.
	SHA256Fingerprint string `json:"sha256_fingerprint"`
	// Subject is the expected subject distinguished name in RFC 4514 form, e.g.
	// "CN=edi.example.com,O=Example AG,C=DE".
	Subject string `json:"subject"`
	// CertificateFile is a PEM or DER file with the partner's certificate; its SHA-256
	// fingerprint is used. It may not be combined with SHA256Fingerprint.
	CertificateFile string `json:"certificate_file"`
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
	// HandshakeTimeout is the time allowed for a partner's TLS handshake, e.g. "10s".
	HandshakeTimeout Duration `json:"handshake_timeout"`
	// SSIDTimeout is the time allowed for a partner's SSID after SSRM, e.g. "30s".
	SSIDTimeout Duration `json:"ssid_timeout"`
	// IdleTimeout ends a session without any command for this long, e.g. "10m".
	IdleTimeout Duration `json:"idle_timeout"`
	// MaxCredit caps the SSID credit (1–999) passed on for partners without their own cap.
	MaxCredit uint32 `json:"max_credit"`
	// MaxBufferSize caps the SSID exchange buffer size (128–99999) passed on for partners without
	// their own cap.
	MaxBufferSize uint32 `json:"max_buffer_size"`
	// ConnectTimeout is the time allowed for the DMZ server's TCP connect to a partner in an
	// outgoing session, e.g. "15s".
	ConnectTimeout Duration `json:"connect_timeout"`
	// MaxHandshakesPerSource is the maximum of concurrent TLS handshakes and SSID exchanges from
	// one source address.
	MaxHandshakesPerSource uint32 `json:"max_handshakes_per_source,omitempty"`
	// MaxHandshakesPerPrefix is the maximum of concurrent TLS handshakes and SSID exchanges from
	// one network prefix.
	MaxHandshakesPerPrefix uint32 `json:"max_handshakes_per_prefix,omitempty"`
	// PrefixLengthV4 is the IPv4 prefix length max_handshakes_per_prefix counts (8–32).
	PrefixLengthV4 uint32 `json:"prefix_length_v4,omitempty"`
	// PrefixLengthV6 is the IPv6 prefix length max_handshakes_per_prefix counts (16–128).
	PrefixLengthV6 uint32 `json:"prefix_length_v6,omitempty"`
}

// Route is one outgoing route.
type Route struct {
	// Name identifies the route in logs and sessions. Required, unique.
	Name string `json:"name"`
	// ListenAddress is the "host:port" the client listens on for the internal OFTP2 server,
	// e.g. "127.0.0.1:65433". Required.
	ListenAddress string `json:"listen_address"`
	// PartnerAddress is the partner's "host:port" the DMZ server dials, e.g.
	// "oftp.partner.example:6619". Required.
	PartnerAddress string `json:"partner_address"`
	// PartnerOdetteID is the Odette ID of the partner the route reaches; it must be one of
	// Partners. Required.
	PartnerOdetteID string `json:"partner_odette_id"`
	// ServerName is the name the partner's server certificate must be issued for. If empty, the
	// host of PartnerAddress.
	ServerName string `json:"server_name"`
	// PreferredServer is the Proxy ID (smartproxy-server -L) of the DMZ server whose tunnels
	// the route's outgoing sessions take while one is up, for a client with several servers
	// (-S). If empty, the least busy tunnel of any server.
	PreferredServer string `json:"preferred_server"`
}

// InternalServer is the internal OFTP2 server.
type InternalServer struct {
	// Address is its "host:port". Required.
	Address string `json:"address"`
	// ConnectTimeout bounds TCP connect and TLS handshake. If empty, "10s".
	ConnectTimeout Duration `json:"connect_timeout"`
	// SSRMTimeout bounds the wait for the server's SSRM. If empty, "30s".
	SSRMTimeout Duration `json:"ssrm_timeout"`
	// TLS, if present, makes the client connect with TLS.
	TLS *InternalTLS `json:"tls"`
}

// InternalTLS is the TLS configuration for the connection to the internal OFTP2 server.
type InternalTLS struct {
	// CAFiles are PEM or DER files with the CAs the server's certificate must chain to. If empty,
	// the system's trusted roots are used.
	CAFiles []string `json:"ca_files"`
	// Certificate is a PEM file with a client certificate chain to present. Optional; requires
	// Key.
	Certificate string `json:"certificate"`
	// Key is the PEM private key of Certificate.
	Key string `json:"key"`
	// ServerName is the name the server certificate is verified against. If empty, the host
	// part of Address.
	ServerName string `json:"server_name"`
}

// LogIgnoreRule lowers matching events to INFO.
type LogIgnoreRule struct {
	// Substring is matched case-insensitively against an event's line. Required.
	Substring string `json:"substring"`
	// Description says why the rule exists.
	Description string `json:"description"`
	// ValidFrom is the start of validity in RFC 3339 form. If empty, already valid.
	ValidFrom Time `json:"valid_from"`
	// ValidUntil is the end of validity in RFC 3339 form. If empty, valid without end.
	ValidUntil Time `json:"valid_until"`
}
