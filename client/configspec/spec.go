package configspec

import (
	"fmt"
	"strings"
	"time"
)

// Blob is the content of one item of the configuration: the bytes of a file the local
// configuration names, or PEM text the backend sent.
type Blob struct {
	// Field is the path of the field the blob comes from, used for its problems and warnings,
	// e.g. "trusted_ca_files[1]" or "company_identity.private_key_pem".
	Field string
	// Name says where the bytes came from in messages, e.g. a file's path. If empty, messages
	// name only Field.
	Name string
	// Data is the content.
	Data []byte
	// Err, if not nil, says why the content could not be obtained (a missing file, an empty
	// required field). Build reports it as the problem of Field and ignores Data.
	Err error
	// Warnings are notes about how the content was obtained that do not prevent its use (a key
	// file readable by others). Build reports them, prefixed with Field, where it uses the blob.
	Warnings []string
}

// Spec is a configuration in source-neutral form: contents instead of file names, defaults not
// yet applied. A Spec is only the input of Build, which checks every field.
type Spec struct {
	// PartnerListenAddress is the "host:port" the DMZ server accepts partners on; the host must
	// be an IP address or empty. If empty, the server's default ":6619".
	PartnerListenAddress string
	// CompanyCertificate is the company's PEM or DER certificate chain, leaf first. Required.
	CompanyCertificate Blob
	// CompanyKey is the PEM private key of the company certificate. Required.
	CompanyKey Blob
	// TrustedCAsField is the path of the trusted CA list, for the problem of an empty list,
	// e.g. "trusted_ca_files".
	TrustedCAsField string
	// TrustedCAs are PEM or DER CA certificates partner certificates must chain to; at least one
	// certificate is required.
	TrustedCAs []Blob
	// CRLs are the revocation lists of the trusted CAs.
	CRLs []CRL
	// Partners are the trading partners.
	Partners []Partner
	// Limits are the partner listener's resource limits.
	Limits Limits
	// InternalServer is the internal OFTP2 server incoming sessions are forwarded to. Required.
	InternalServer *InternalServer
	// OutgoingSourceIP is the source address of the DMZ server's connections to partners. If
	// empty, the system chooses.
	OutgoingSourceIP string
	// Routes are the outgoing routes.
	Routes []Route
	// LogLevel is the DMZ server's log level: trace, debug, info, warn or error. If empty, the
	// server keeps its own.
	LogLevel string
	// LogIgnoreRules lower matching events to INFO.
	LogIgnoreRules []LogIgnoreRule
	// Revocation is the revocation policy for partner certificates whose revocation state is
	// unknown (no CRL covers them, or their CRL is past its nextUpdate): "soft" accepts them
	// with a warning, "hard" refuses them. If empty, "soft".
	Revocation string
	// ProxyProtocol turns on PROXY protocol v2 on the partner listener. If nil, it is off.
	ProxyProtocol *ProxyProtocol
}

// ProxyProtocol is the PROXY protocol v2 setting of the partner listener.
type ProxyProtocol struct {
	// Field is the path of AllowedSources, for its problems, e.g. "proxy_protocol.allowed_sources".
	Field string
	// AllowedSources are the IP addresses or CIDR networks of the load balancers allowed to send
	// a header. At least one is required.
	AllowedSources []string
}

// CRL is one certificate revocation list.
type CRL struct {
	// Blob is the PEM ("X509 CRL") or DER CRL.
	Blob
	// URL is the distribution point the CRL comes from. Optional.
	URL string
	// URLField is the path of URL, for its problems, e.g. "crls[0].url".
	URLField string
	// Stream keeps the CRL's bytes out of the snapshot: it lists the CRL with its size and
	// SHA-256 only, and the caller sets Snapshot.CRLSource to read it when it is pushed. Blob's
	// Data is still needed for the checks, unless Verified is set.
	Stream bool
	// Verified, with Stream, says that the caller has checked exactly this content (SHA256) with
	// Build before, against the same trusted CAs: Build then takes SHA256 and Size as they are
	// and does not need Data. A CRL the caller has not seen verified must not be marked.
	Verified bool
	// SHA256 and Size describe the content of a Verified CRL.
	SHA256 [32]byte
	Size   int64
}

// Partner is one trading partner.
type Partner struct {
	// OdetteID is the partner's Odette ID (SSIDCODE). Required, unique.
	OdetteID string
	// Name is a human-readable name for logs.
	Name string
	// Enabled says whether the partner may connect.
	Enabled bool
	// Password is the SSID password the partner must send. If empty, not checked.
	Password string
	// CertificateBindings are the certificates the partner may present.
	CertificateBindings []CertificateBinding
	// AllowedNetworks are the networks (CIDR) the partner may connect from. If empty, any.
	AllowedNetworks []string
	// Direction is "both", "incoming" or "outgoing". If empty, "both".
	Direction string
	// Charset is "strict" or "lenient". If empty, "strict".
	Charset string
	// MaxCredit caps the SSID credit (1–999). If zero, no cap.
	MaxCredit uint32
	// MaxBufferSize caps the SSID exchange buffer size (128–99999). If zero, no cap.
	MaxBufferSize uint32
	// Revocation overrides Spec.Revocation for certificates bound to this partner: "soft" or
	// "hard". If empty, the configuration's policy.
	Revocation string
}

// CertificateBinding ties a certificate to a partner; every field given must match.
type CertificateBinding struct {
	// SubjectSerialNumber is the expected subject serialNumber attribute.
	SubjectSerialNumber string
	// SHA256Fingerprint is the expected SHA-256 of the DER certificate, 64 hexadecimal digits,
	// optionally separated by colons or spaces.
	SHA256Fingerprint string
	// Subject is the expected subject distinguished name in RFC 4514 form.
	Subject string
	// Certificate, if not nil, is the partner's PEM or DER certificate; its fingerprint is used.
	// It may not be combined with SHA256Fingerprint. Its Field names the binding's
	// certificate field, e.g. "partners[1].certificate_bindings[0].certificate_file".
	Certificate *Blob
}

// Limits are the partner listener's resource limits. Zero values mean the server's defaults.
type Limits struct {
	// MaxSessions is the maximum of concurrent partner sessions.
	MaxSessions uint32
	// MaxHandshakes is the maximum of concurrent TLS handshakes and SSID exchanges.
	MaxHandshakes uint32
	// PerIPRate is the number of new connections per second allowed from one IP address.
	PerIPRate float64
	// PerIPBurst is the burst size of the per-IP rate limit.
	PerIPBurst uint32
	// HandshakeTimeout is the time allowed for a partner's TLS handshake.
	HandshakeTimeout time.Duration
	// SSIDTimeout is the time allowed for a partner's SSID after SSRM.
	SSIDTimeout time.Duration
	// IdleTimeout ends a session without any command for this long.
	IdleTimeout time.Duration
	// MaxCredit caps the SSID credit (1–999) for partners without their own cap.
	MaxCredit uint32
	// MaxBufferSize caps the SSID exchange buffer size (128–99999) for partners without their
	// own cap.
	MaxBufferSize uint32
	// ConnectTimeout is the time allowed for the DMZ server's TCP connect to a partner in an
	// outgoing session.
	ConnectTimeout time.Duration
	// MaxHandshakesPerSource is the maximum of concurrent TLS handshakes and SSID exchanges from
	// one source address.
	MaxHandshakesPerSource uint32
	// MaxHandshakesPerPrefix is the maximum of concurrent TLS handshakes and SSID exchanges from
	// one network prefix (PrefixLengthV4, PrefixLengthV6).
	MaxHandshakesPerPrefix uint32
	// PrefixLengthV4 is the IPv4 prefix length MaxHandshakesPerPrefix counts (8–32).
	PrefixLengthV4 uint32
	// PrefixLengthV6 is the IPv6 prefix length MaxHandshakesPerPrefix counts (16–128).
	PrefixLengthV6 uint32
}

// InternalServer is the internal OFTP2 server.
type InternalServer struct {
	// Address is its "host:port". Required.
	Address string
	// ConnectTimeout bounds TCP connect and TLS handshake. If zero, the client's default.
	ConnectTimeout time.Duration
	// SSRMTimeout bounds the wait for the server's SSRM. If zero, the client's default.
	SSRMTimeout time.Duration
	// TLS, if not nil, makes the client connect with TLS.
	TLS *InternalTLS
}

// InternalTLS is the TLS configuration for the connection to the internal OFTP2 server.
type InternalTLS struct {
	// CAs are PEM or DER CA certificates the server's certificate must chain to. If empty, the
	// system's trusted roots are used.
	CAs []Blob
	// Certificate is the PEM client certificate chain to present; it requires Key. Its Field
	// is always set; without Data and Err it is absent (no client certificate).
	Certificate Blob
	// Key is the PEM private key of Certificate; it requires Certificate. Its Field is always
	// set; without Data and Err it is absent.
	Key Blob
	// ServerName is the name the server certificate is verified against. If empty, the host
	// part of the address.
	ServerName string
}

// Route binds an outgoing listener of the client to a partner the DMZ server dials.
type Route struct {
	// Name identifies the route in logs and sessions. Required, unique.
	Name string
	// ListenAddress is the "host:port" the client listens on for the internal OFTP2 server.
	// Required.
	ListenAddress string
	// PartnerAddress is the partner's "host:port" the DMZ server dials. Required.
	PartnerAddress string
	// PartnerOdetteID is the Odette ID of the partner the route reaches. Required.
	PartnerOdetteID string
	// ServerName is the name the partner's certificate is verified against. If empty, the host
	// of PartnerAddress.
	ServerName string
	// PreferredServer is the Proxy ID of the DMZ server whose tunnels the route's outgoing
	// sessions take while one is established (a client connected to several servers). If
	// empty, any server's.
	PreferredServer string
}

// LogIgnoreRule lowers matching events to INFO.
type LogIgnoreRule struct {
	// Substring is matched case-insensitively against an event's line. Required.
	Substring string
	// Description says why the rule exists.
	Description string
	// ValidFrom is the start of validity. If zero, already valid.
	ValidFrom time.Time
	// ValidUntil is the end of validity. If zero, valid without end.
	ValidUntil time.Time
}

// Problem is one problem with one field of a configuration.
type Problem struct {
	// Field is the path of the field, e.g. "partners[2].odette_id".
	Field string
	// Msg says what is wrong.
	Msg string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Msg
	}
	return p.Field + ": " + p.Msg
}

// Error is returned by Build for a configuration that cannot be used. It lists every problem.
type Error struct {
	// Problems are the problems, in the order of the Spec's fields; never empty.
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}
