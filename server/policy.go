package server

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/revocation"
	"smartproxy/oftp2"
)

// Defaults of the partner listener, used where the configuration leaves a value zero.
const (
	// DefaultPartnerListenAddress is the partner listener address when the configuration has
	// none: every address, the OFTP2-over-TLS port of RFC 5024 §2.4.
	DefaultPartnerListenAddress = ":6619"
	// DefaultMaxSessions is the default limit of concurrent partner connections.
	DefaultMaxSessions = 2000
	// DefaultMaxHandshakes is the default limit of concurrent connections that are not yet
	// verified (TLS handshake or SSID exchange in progress): the size of the pre-admission
	// pool.
	DefaultMaxHandshakes = 200
	// DefaultMaxHandshakesPerSource is the default limit of concurrent unverified connections
	// from one source address. A partner opens one connection per session and rarely more
	// than a few sessions at once.
	DefaultMaxHandshakesPerSource = 8
	// DefaultMaxHandshakesPerPrefix is the default limit of concurrent unverified connections
	// from one network prefix (DefaultPrefixLengthV4, DefaultPrefixLengthV6).
	DefaultMaxHandshakesPerPrefix = 32
	// DefaultPrefixLengthV4 is the IPv4 prefix the per-prefix limit counts.
	DefaultPrefixLengthV4 = 24
	// DefaultPrefixLengthV6 is the IPv6 prefix the per-prefix limit counts: one site usually
	// owns a whole /64.
	DefaultPrefixLengthV6 = 64
	// DefaultPerIPRate is the default number of new connections per second one source may open.
	DefaultPerIPRate = 5.0
	// DefaultPerIPBurst is the default burst of new connections from one source.
	DefaultPerIPBurst = 20
	// DefaultHandshakeTimeout is the default time allowed for the TLS handshake: a handful of
	// round trips even on a slow line, short so that a silent connection holds its
	// pre-admission slot briefly.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultSSIDTimeout is the default time allowed for the partner's SSID after SSRM. An
	// OFTP2 initiator answers SSRM with its SSID at once (RFC 5024 §4.2.1).
	DefaultSSIDTimeout = 10 * time.Second
	// DefaultIdleTimeout is the default time a session may go without any command.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaxCredit is the default upper bound of SSIDCRED passed on: the protocol's own
	// maximum (RFC 5024 §5.3.2), so by default the credit is not lowered.
	DefaultMaxCredit = 999
	// DefaultMaxBufferSize is the default upper bound of SSIDSDEB passed on: the protocol's
	// own maximum (RFC 5024 §5.3.2), so by default the buffer size is not lowered.
	DefaultMaxBufferSize = 99999
	// DefaultConnectTimeout is the default time allowed for the TCP connect to a partner in an
	// outgoing session.
	DefaultConnectTimeout = 15 * time.Second
)

// Policy is one applied security configuration in a form the partner path can use directly.
// A Policy is immutable once built; the server swaps whole policies atomically, so every
// connection sees one consistent configuration for each step it takes.
type Policy struct {
	// Version is the configuration version.
	Version uint64
	// ListenAddress is the partner listener address, "host:port".
	ListenAddress string
	// Certificate is the company's TLS identity, in memory only.
	Certificate *tls.Certificate
	// Roots holds the trusted CAs for partner certificates.
	Roots *x509.CertPool
	// CAs are the trusted CA certificates, in configuration order.
	CAs []*x509.Certificate
	// Revocation answers revocation questions from the configured CRLs.
	Revocation *revocation.Checker
	// RevocationMode says what happens to a partner certificate of unknown revocation state
	// (no CRL covers it, or its CRL is past nextUpdate): RevocationSoft or RevocationHard,
	// unless a partner bound to the certificate overrides it.
	RevocationMode RevocationMode
	// CRLs are the parsed CRLs with their source URLs, in configuration order.
	CRLs []*revocation.CRL
	// Partners maps an Odette ID (trailing spaces removed) to its partner.
	Partners map[string]*Partner
	// Limits are the listener's resource limits with defaults filled in.
	Limits Limits
	// OutgoingSourceIP is the source address for outgoing connections; invalid if unset.
	OutgoingSourceIP netip.Addr
	// Origin is where the configuration comes from (ConfigSnapshot.origin): versions are
	// compared only between configurations of one origin.
	Origin string
	// Routes are the outgoing routes by name.
	Routes map[string]*Route
	// LogLevel is the requested process log level; 0 (panic) means no change.
	LogLevel logrus.Level
	// IgnoreRules lower matching events to INFO.
	IgnoreRules []IgnoreRule
	// ProxySources are the load balancers allowed to send a PROXY protocol v2 header before
	// TLS; nil means PROXY protocol is off (proxyproto.go).
	ProxySources []netip.Prefix

	// revocationOverrides are the partners with a RevocationMode of their own.
	revocationOverrides []*Partner
	// Warnings are problems that did not prevent the configuration from being applied (a
	// CRL past its nextUpdate, for example), one line each.
	Warnings []string
}

// RevocationMode is the revocation policy for partner certificates whose revocation state is
// unknown.
type RevocationMode uint8

const (
	// RevocationDefault, for a partner, means the configuration's mode.
	RevocationDefault RevocationMode = iota
	// RevocationSoft accepts the certificate with a partner_crl_missing event (a stale CRL is
	// still used and reported as a configuration warning).
	RevocationSoft
	// RevocationHard refuses the certificate in the TLS handshake with a
	// partner_revocation_unknown event.
	RevocationHard
)

// String returns "default", "soft" or "hard".
func (m RevocationMode) String() string {
	switch m {
	case RevocationDefault:
		return "default"
	case RevocationSoft:
		return "soft"
	case RevocationHard:
		return "hard"
	}
	return fmt.Sprintf("RevocationMode(%d)", int(m))
}

// revocationMode compiles a RevocationPolicy; field is its path for errors.
func (c *compiler) revocationMode(field string, rp tunnelv1.RevocationPolicy) RevocationMode {
	switch rp {
	case tunnelv1.RevocationPolicy_REVOCATION_POLICY_UNSPECIFIED:
		return RevocationDefault
	case tunnelv1.RevocationPolicy_REVOCATION_POLICY_SOFT:
		return RevocationSoft
	case tunnelv1.RevocationPolicy_REVOCATION_POLICY_HARD:
		return RevocationHard
	}
	c.errorf(field, "unknown value %d", rp)
	return RevocationDefault
}

// revocationModeFor returns the revocation mode for cert: the mode of the partners cert is
// bound to that have one of their own (hard if any of them says hard), else the
// configuration's. Only partners with an override are looked at, so the usual configuration
// costs nothing per handshake.
func (p *Policy) revocationModeFor(cert *x509.Certificate) RevocationMode {
	mode, matched := p.RevocationMode, false
	for _, pt := range p.revocationOverrides {
		if pt.certMatches(cert) && (!matched || pt.RevocationMode == RevocationHard) {
			mode, matched = pt.RevocationMode, true
		}
	}
	return mode
}

// Partner is one configured trading partner.
type Partner struct {
	// OdetteID is the partner's identification code (SSIDCODE) without padding.
	OdetteID string
	// Name is a human-readable name.
	Name string
	// Enabled is false for a partner that is refused with its own event.
	Enabled bool
	// Password is the expected SSIDPSWD; empty means not checked.
	Password Secret
	// Bindings are the certificates the partner may present; empty means the certificate
	// subject's serialNumber must equal OdetteID.
	Bindings []Binding
	// RevocationMode overrides the configuration's RevocationMode for certificates bound to
	// this partner; RevocationDefault means no override.
	RevocationMode RevocationMode
	// Networks are the source networks allowed; empty means any.
	Networks []netip.Prefix
	// Direction says which sessions the partner may take part in.
	Direction tunnelv1.DirectionPolicy
	// Charset is the character-set policy for the partner's commands.
	Charset oftp2.Charset
	// MaxCredit bounds SSIDCRED passed on; it already includes the Limits default.
	MaxCredit int
	// MaxBufferSize bounds SSIDSDEB passed on; it already includes the Limits default.
	MaxBufferSize int
}

// Route is one outgoing route: the partner the server dials when the client opens an outgoing
// session on it.
type Route struct {
	// Name is the route's unique name (SessionOpen.route_name).
	Name string
	// ListenAddress is where the client listens for the internal OFTP2 server, "host:port".
	ListenAddress string
	// PartnerAddress is the partner's "host:port" the server dials.
	PartnerAddress string
	// Partner is the configured partner the route reaches; its Odette ID and certificate
	// bindings judge the partner's server certificate and SSID.
	Partner *Partner
	// ServerName is the name the partner's server certificate must be issued for: the route's
	// server_name, or the host of PartnerAddress when that is empty.
	ServerName string
}

// Secret is a password. Its String and GoString never reveal it.
type Secret string

// String returns "[redacted]" or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns the same as String, so %#v does not reveal it either.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Equal compares s with a presented password in constant time (for equal lengths).
func (s Secret) Equal(presented string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(presented)) == 1
}

// Binding is one certificate a partner may present. Every set field must match.
type Binding struct {
	// SubjectSerialNumber is the expected subject serialNumber attribute; empty means any.
	SubjectSerialNumber string
	// Fingerprint is the expected SHA-256 of the certificate's DER; nil means any.
	Fingerprint []byte
	// Subject is the expected subject DN in normalised RFC 4514 form; empty means any.
	Subject string
}

// Limits are the partner listener's resource limits, defaults filled in.
type Limits struct {
	// MaxSessions limits concurrent partner connections.
	MaxSessions int
	// MaxHandshakes limits concurrent unverified connections (the pre-admission pool).
	MaxHandshakes int
	// MaxHandshakesPerSource limits concurrent unverified connections from one address.
	MaxHandshakesPerSource int
	// MaxHandshakesPerPrefix limits concurrent unverified connections from one network
	// prefix of PrefixLengthV4 or PrefixLengthV6 bits.
	MaxHandshakesPerPrefix int
	// PrefixLengthV4 and PrefixLengthV6 are the prefix lengths MaxHandshakesPerPrefix counts.
	PrefixLengthV4, PrefixLengthV6 int
	// PerIPRate is the token rate of one source, connections per second.
	PerIPRate float64
	// PerIPBurst is the bucket size of one source.
	PerIPBurst int
	// HandshakeTimeout bounds the TLS handshake.
	HandshakeTimeout time.Duration
	// SSIDTimeout bounds the wait for the partner's SSID after SSRM.
	SSIDTimeout time.Duration
	// IdleTimeout ends a session without any command for this long.
	IdleTimeout time.Duration
	// MaxCredit bounds SSIDCRED passed on for partners without their own bound.
	MaxCredit int
	// MaxBufferSize bounds SSIDSDEB passed on for partners without their own bound.
	MaxBufferSize int
	// ConnectTimeout bounds the TCP connect to a partner in an outgoing session.
	ConnectTimeout time.Duration
}

// IgnoreRule lowers events whose line contains Substring (case-insensitive) to INFO while
// the rule is valid.
type IgnoreRule struct {
	// Substring is matched case-insensitively; stored in lower case.
	Substring string
	// Description says why the rule exists.
	Description string
	// ValidFrom is the start of validity; zero means always.
	ValidFrom time.Time
	// ValidUntil is the end of validity; zero means no end.
	ValidUntil time.Time
}

// ConfigError is one problem of a configuration, with the path of the offending field, e.g.
// "partners[3].allowed_networks[0]".
type ConfigError struct {
	// Field is the path of the field.
	Field string
	// Message says what is wrong.
	Message string
}

func (e ConfigError) Error() string { return e.Field + ": " + e.Message }

// ConfigErrors is the list of problems that made a configuration unusable.
type ConfigErrors []ConfigError

func (e ConfigErrors) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration: ")
	for i, ce := range e {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(ce.Error())
	}
	return b.String()
}

// Proto returns the errors as tunnel ConfigError messages.
func (e ConfigErrors) Proto() []*tunnelv1.ConfigError {
	out := make([]*tunnelv1.ConfigError, len(e))
	for i, ce := range e {
		out[i] = &tunnelv1.ConfigError{Field: ce.Field, Message: ce.Message}
	}
	return out
}

// compiler collects errors while building a Policy.
type compiler struct {
	now  time.Time
	errs ConfigErrors
	warn []string
}

func (c *compiler) errorf(field, format string, args ...any) {
	c.errs = append(c.errs, ConfigError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// CompilePolicy validates a complete security configuration (every chunked CRL already
// reassembled into Crl.der) and builds the Policy for version. now is the time against which
// certificate and CRL validity are judged. The error is ConfigErrors naming every bad field;
// nothing is partially applied.
func CompilePolicy(version uint64, cfg *tunnelv1.SecurityConfig, now time.Time) (*Policy, error) {
	c := &compiler{now: now}
	if version == 0 {
		c.errorf("version", "must not be 0")
	}
	if cfg == nil {
		c.errorf("config", "missing")
		return nil, c.errs
	}
	p := &Policy{Version: version, Partners: make(map[string]*Partner)}
	p.ListenAddress = c.listenAddress(cfg.GetPartnerListenAddress())
	p.Certificate = c.identity(cfg.GetCompanyIdentity())
	p.CAs, p.Roots = c.trustedCAs(cfg.GetTrustedCaCertificates())
	p.CRLs = c.crls(cfg.GetCrls(), p.CAs)
	p.Limits = c.limits(cfg.GetLimits())
	if p.RevocationMode = c.revocationMode("revocation_policy", cfg.GetRevocationPolicy()); p.RevocationMode == RevocationDefault {
		p.RevocationMode = RevocationSoft
	}
	for i, pc := range cfg.GetPartners() {
		path := fmt.Sprintf("partners[%d]", i)
		pt := c.partner(path, pc, p.Limits)
		if pt == nil {
			continue
		}
		if _, dup := p.Partners[pt.OdetteID]; dup {
			c.errorf(path+".odette_id", "%q is configured twice", pt.OdetteID)
			continue
		}
		p.Partners[pt.OdetteID] = pt
		if pt.RevocationMode != RevocationDefault {
			p.revocationOverrides = append(p.revocationOverrides, pt)
		}
	}
	if s := cfg.GetOutgoingSourceIp(); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			c.errorf("outgoing_source_ip", "%q is not an IP address", s)
		}
		p.OutgoingSourceIP = a
	}
	p.Routes = c.routes(cfg.GetOutgoingRoutes(), p.Partners)
	p.LogLevel = c.logLevel("log_level", cfg.GetLogLevel())
	p.IgnoreRules = c.ignoreRules(cfg.GetLogIgnoreRules())
	p.ProxySources = c.proxySources(cfg.GetProxyProtocol())
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	p.Revocation = revocation.NewChecker(p.CRLs...)
	p.Warnings = c.warn
	return p, nil
}

func (c *compiler) listenAddress(s string) string {
	if s == "" {
		return DefaultPartnerListenAddress
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		c.errorf("partner_listen_address", "%q is not host:port: %v", s, err)
		return ""
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			c.errorf("partner_listen_address", "host %q is not an IP address (names are not resolved in the DMZ)", host)
		}
	}
	// Port 0 (a free port at every bind) is allowed for tests.
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		c.errorf("partner_listen_address", "port %q is not a number 0-65535", port)
	}
	return s
}

func (c *compiler) identity(id *tunnelv1.TlsIdentity) *tls.Certificate {
	const path = "company_identity"
	if id == nil {
		c.errorf(path, "missing: the company certificate and key are required")
		return nil
	}
	if len(id.GetCertificateChain()) == 0 {
		c.errorf(path+".certificate_chain", "empty: the company certificate is required")
		return nil
	}
	cert := &tls.Certificate{}
	for i, der := range id.GetCertificateChain() {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			c.errorf(fmt.Sprintf("%s.certificate_chain[%d]", path, i), "not a DER X.509 certificate: %v", err)
			return nil
		}
		if i == 0 {
			cert.Leaf = x
		}
		cert.Certificate = append(cert.Certificate, der)
	}
	leaf := cert.Leaf
	if c.now.After(leaf.NotAfter) {
		c.errorf(path+".certificate_chain[0]", "the company certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(id.GetPrivateKey()) == 0 {
		c.errorf(path+".private_key", "empty: the company private key is required")
		return nil
	}
	key, err := x509.ParsePKCS8PrivateKey(id.GetPrivateKey())
	if err != nil {
		// Never echo key material, only the parser's verdict.
		c.errorf(path+".private_key", "not a PKCS #8 DER private key")
		return nil
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		c.errorf(path+".private_key", "key type %T cannot sign", key)
		return nil
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		c.errorf(path+".private_key", "does not belong to the certificate %q", leaf.Subject.String())
		return nil
	}
	cert.PrivateKey = signer
	return cert
}

func (c *compiler) trustedCAs(ders [][]byte) ([]*x509.Certificate, *x509.CertPool) {
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	if len(ders) == 0 {
		c.errorf("trusted_ca_certificates", "empty: at least one trusted CA is required, or no partner can be verified")
		return nil, pool
	}
	for i, der := range ders {
		path := fmt.Sprintf("trusted_ca_certificates[%d]", i)
		x, err := x509.ParseCertificate(der)
		if err != nil {
			c.errorf(path, "not a DER X.509 certificate: %v", err)
			continue
		}
		if !x.IsCA {
			c.errorf(path, "%q is not a CA certificate (basicConstraints cA is false)", x.Subject.String())
			continue
		}
		if c.now.After(x.NotAfter) {
			c.warn = append(c.warn, fmt.Sprintf("%s: CA %q expired at %s", path, x.Subject.String(), x.NotAfter.UTC().Format(time.RFC3339)))
		}
		pool.AddCert(x)
		cas = append(cas, x)
	}
	return cas, pool
}

func (c *compiler) crls(list []*tunnelv1.Crl, cas []*x509.Certificate) []*revocation.CRL {
	ids := make(map[string]bool)
	var out []*revocation.CRL
	for i, cr := range list {
		path := fmt.Sprintf("crls[%d]", i)
		if cr.GetId() == "" {
			c.errorf(path+".id", "empty")
		} else if ids[cr.GetId()] {
			c.errorf(path+".id", "%q is used twice", cr.GetId())
		}
		ids[cr.GetId()] = true
		der := cr.GetDer()
		if len(der) == 0 {
			c.errorf(path+".der", "empty (a chunked CRL was not reassembled)")
			continue
		}
		if sum := cr.GetSha256(); len(sum) > 0 {
			got := sha256.Sum256(der)
			if !bytes.Equal(sum, got[:]) {
				c.errorf(path+".sha256", "does not match the CRL's bytes")
				continue
			}
		}
		crl, err := revocation.ParseFrom(der, cas, c.now)
		if err != nil {
			var stale *revocation.StaleError
			if !errors.As(err, &stale) || crl == nil {
				c.errorf(path+".der", "%v", err)
				continue
			}
			c.warn = append(c.warn, fmt.Sprintf("%s: %v", path, err))
		}
		if u := cr.GetUrl(); u != "" {
			crl = crl.WithURL(u)
		}
		out = append(out, crl)
	}
	return out
}

func (c *compiler) limits(l *tunnelv1.Limits) Limits {
	out := Limits{
		MaxSessions:    DefaultMaxSessions,
		MaxHandshakes:  DefaultMaxHandshakes,
		PrefixLengthV4: DefaultPrefixLengthV4,
		PrefixLengthV6: DefaultPrefixLengthV6,

		MaxHandshakesPerSource: DefaultMaxHandshakesPerSource,
		MaxHandshakesPerPrefix: DefaultMaxHandshakesPerPrefix,
		PerIPRate:              DefaultPerIPRate,
		PerIPBurst:             DefaultPerIPBurst,
		HandshakeTimeout:       DefaultHandshakeTimeout,
		SSIDTimeout:            DefaultSSIDTimeout,
		IdleTimeout:            DefaultIdleTimeout,
		MaxCredit:              DefaultMaxCredit,
		MaxBufferSize:          DefaultMaxBufferSize,
		ConnectTimeout:         DefaultConnectTimeout,
	}
	if l == nil {
		return out
	}
	if v := l.GetMaxSessions(); v > 0 {
		out.MaxSessions = int(v)
	}
	if v := l.GetMaxHandshakes(); v > 0 {
		out.MaxHandshakes = int(v)
	}
	if v := l.GetMaxHandshakesPerSource(); v > 0 {
		out.MaxHandshakesPerSource = int(v)
	}
	if v := l.GetMaxHandshakesPerPrefix(); v > 0 {
		out.MaxHandshakesPerPrefix = int(v)
	}
	if v := l.GetPrefixLengthV4(); v != 0 && (v < 8 || v > 32) {
		c.errorf("limits.prefix_length_v4", "%d is outside 8-32", v)
	} else if v > 0 {
		out.PrefixLengthV4 = int(v)
	}
	if v := l.GetPrefixLengthV6(); v != 0 && (v < 16 || v > 128) {
		c.errorf("limits.prefix_length_v6", "%d is outside 16-128", v)
	} else if v > 0 {
		out.PrefixLengthV6 = int(v)
	}
	if v := l.GetPerIpRate(); v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		c.errorf("limits.per_ip_rate", "%v is not a rate: want a finite number >= 0", v)
	} else if v > 0 {
		out.PerIPRate = v
	}
	if v := l.GetPerIpBurst(); v > 0 {
		out.PerIPBurst = int(v)
	}
	dur := func(field string, d interface {
		CheckValid() error
		AsDuration() time.Duration
	}, present bool, dst *time.Duration) {
		if !present {
			return
		}
		if err := d.CheckValid(); err != nil {
			c.errorf("limits."+field, "%v", err)
			return
		}
		v := d.AsDuration()
		if v < 0 {
			c.errorf("limits."+field, "%s is negative", v)
			return
		}
		if v > 0 {
			*dst = v
		}
	}
	dur("handshake_timeout", l.GetHandshakeTimeout(), l.GetHandshakeTimeout() != nil, &out.HandshakeTimeout)
	dur("ssid_timeout", l.GetSsidTimeout(), l.GetSsidTimeout() != nil, &out.SSIDTimeout)
	dur("idle_timeout", l.GetIdleTimeout(), l.GetIdleTimeout() != nil, &out.IdleTimeout)
	dur("connect_timeout", l.GetConnectTimeout(), l.GetConnectTimeout() != nil, &out.ConnectTimeout)
	if v := l.GetMaxCredit(); v > 999 {
		c.errorf("limits.max_credit", "%d is above the SSIDCRED maximum 999 (RFC 5024 §5.3.2)", v)
	} else if v > 0 {
		out.MaxCredit = int(v)
	}
	if v := l.GetMaxBufferSize(); v != 0 && (v < 128 || v > 99999) {
		c.errorf("limits.max_buffer_size", "%d is outside the SSIDSDEB range 128-99999 (RFC 5024 §5.3.2)", v)
	} else if v > 0 {
		out.MaxBufferSize = int(v)
	}
	return out
}

func (c *compiler) partner(path string, pc *tunnelv1.Partner, lim Limits) *Partner {
	p := &Partner{
		Name:          pc.GetName(),
		Enabled:       pc.GetEnabled(),
		Password:      Secret(pc.GetPassword()),
		Direction:     pc.GetDirectionPolicy(),
		MaxCredit:     lim.MaxCredit,
		MaxBufferSize: lim.MaxBufferSize,
	}
	ok := true
	errs := len(c.errs)
	if p.RevocationMode = c.revocationMode(path+".revocation_policy", pc.GetRevocationPolicy()); len(c.errs) > errs {
		ok = false
	}
	switch pc.GetCharsetPolicy() {
	case tunnelv1.CharsetPolicy_CHARSET_POLICY_UNSPECIFIED, tunnelv1.CharsetPolicy_CHARSET_POLICY_STRICT:
		p.Charset = oftp2.CharsetStrict
	case tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT:
		p.Charset = oftp2.CharsetLenient
	default:
		c.errorf(path+".charset_policy", "unknown value %d", pc.GetCharsetPolicy())
		ok = false
	}
	switch p.Direction {
	case tunnelv1.DirectionPolicy_DIRECTION_POLICY_UNSPECIFIED:
		p.Direction = tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH
	case tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH, tunnelv1.DirectionPolicy_DIRECTION_POLICY_INCOMING_ONLY,
		tunnelv1.DirectionPolicy_DIRECTION_POLICY_OUTGOING_ONLY:
	default:
		c.errorf(path+".direction_policy", "unknown value %d", pc.GetDirectionPolicy())
		ok = false
	}
	id := strings.TrimRight(pc.GetOdetteId(), " ")
	p.OdetteID = id
	if id == "" {
		c.errorf(path+".odette_id", "empty")
		ok = false
	} else if err := checkSSIDFields(id, pc.GetPassword(), p.Charset); err != nil {
		c.errorf(path+"."+err.field, "%s", err.msg)
		ok = false
	}
	for i, b := range pc.GetCertificateBindings() {
		bp := fmt.Sprintf("%s.certificate_bindings[%d]", path, i)
		bd := Binding{SubjectSerialNumber: b.GetSubjectSerialNumber()}
		if fp := b.GetSha256Fingerprint(); len(fp) > 0 {
			if len(fp) != sha256.Size {
				c.errorf(bp+".sha256_fingerprint", "%d bytes, want %d", len(fp), sha256.Size)
				ok = false
			}
			bd.Fingerprint = bytes.Clone(fp)
		}
		if s := b.GetSubject(); s != "" {
			n, err := normalizeDN(s)
			if err != nil {
				c.errorf(bp+".subject", "%v", err)
				ok = false
				n = s
			}
			bd.Subject = n
		}
		if bd.SubjectSerialNumber == "" && bd.Fingerprint == nil && bd.Subject == "" {
			c.errorf(bp, "empty: set at least one of subject_serial_number, sha256_fingerprint, subject")
			ok = false
		}
		p.Bindings = append(p.Bindings, bd)
	}
	for i, s := range pc.GetAllowedNetworks() {
		np := fmt.Sprintf("%s.allowed_networks[%d]", path, i)
		pfx, err := parseNetwork(s)
		if err != nil {
			c.errorf(np, "%v", err)
			ok = false
			continue
		}
		p.Networks = append(p.Networks, pfx)
	}
	if v := pc.GetMaxCredit(); v > 999 {
		c.errorf(path+".max_credit", "%d is above the SSIDCRED maximum 999 (RFC 5024 §5.3.2)", v)
		ok = false
	} else if v > 0 {
		p.MaxCredit = int(v)
	}
	if v := pc.GetMaxBufferSize(); v != 0 && (v < 128 || v > 99999) {
		c.errorf(path+".max_buffer_size", "%d is outside the SSIDSDEB range 128-99999 (RFC 5024 §5.3.2)", v)
		ok = false
	} else if v > 0 {
		p.MaxBufferSize = int(v)
	}
	if !ok {
		return nil
	}
	return p
}

// proxySources compiles the PROXY protocol sources: nil when pp is unset, at least one
// address or network otherwise. A network of the whole address space is allowed with a
// warning: every host on the internet could then claim any address.
func (c *compiler) proxySources(pp *tunnelv1.ProxyProtocol) []netip.Prefix {
	if pp == nil {
		return nil
	}
	if len(pp.GetAllowedSources()) == 0 {
		c.errorf("proxy_protocol.allowed_sources", "empty; list the load balancers' addresses, or leave proxy_protocol unset to turn it off")
		return nil
	}
	out := make([]netip.Prefix, 0, len(pp.GetAllowedSources()))
	for i, s := range pp.GetAllowedSources() {
		path := fmt.Sprintf("proxy_protocol.allowed_sources[%d]", i)
		pfx, err := parseNetwork(s)
		if err != nil {
			c.errorf(path, "%v", err)
			continue
		}
		if pfx.Bits() == 0 {
			c.warn = append(c.warn, fmt.Sprintf("%s: %s lets any host send a PROXY header and claim any address", path, pfx))
		}
		out = append(out, pfx)
	}
	return out
}

// proxyAllowed reports whether PROXY protocol is on and addr is one of its sources.
func (p *Policy) proxyAllowed(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	for _, n := range p.ProxySources {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// parseNetwork parses a CIDR prefix or a single address (a /32 or /128).
func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network in CIDR notation", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a network in CIDR notation", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmapBits is the number of prefix bits an IPv4-mapped IPv6 address loses when unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

func (c *compiler) routes(routes []*tunnelv1.Route, partners map[string]*Partner) map[string]*Route {
	out := make(map[string]*Route, len(routes))
	names := make(map[string]bool)
	for i, r := range routes {
		path := fmt.Sprintf("outgoing_routes[%d]", i)
		ok := true
		if r.GetName() == "" {
			c.errorf(path+".name", "empty")
			ok = false
		} else if names[r.GetName()] {
			c.errorf(path+".name", "%q is used twice", r.GetName())
			ok = false
		}
		names[r.GetName()] = true
		host, _, err := net.SplitHostPort(r.GetPartnerAddress())
		if err != nil {
			c.errorf(path+".partner_address", "%q is not host:port", r.GetPartnerAddress())
			ok = false
		}
		id := strings.TrimRight(r.GetPartnerOdetteId(), " ")
		partner := partners[id]
		if partner == nil {
			c.errorf(path+".partner_odette_id", "%q is not a configured partner", id)
			ok = false
		}
		if !ok {
			continue
		}
		rt := &Route{Name: r.GetName(), ListenAddress: r.GetListenAddress(), PartnerAddress: r.GetPartnerAddress(),
			Partner: partner, ServerName: r.GetServerName()}
		if rt.ServerName == "" {
			rt.ServerName = host
		}
		out[rt.Name] = rt
	}
	return out
}

// logLevel maps a tunnel LogLevel to logrus; UNSPECIFIED maps to 0 (no change).
func (c *compiler) logLevel(field string, l tunnelv1.LogLevel) logrus.Level {
	if l == tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED {
		return 0
	}
	lv, ok := admin.LevelToLogrus(l)
	if !ok {
		c.errorf(field, "unknown value %d", l)
	}
	return lv
}

func (c *compiler) ignoreRules(rules []*tunnelv1.LogIgnoreRule) []IgnoreRule {
	var out []IgnoreRule
	for i, r := range rules {
		path := fmt.Sprintf("log_ignore_rules[%d]", i)
		if strings.TrimSpace(r.GetSubstring()) == "" {
			c.errorf(path+".substring", "empty: a rule without a substring would match every event")
			continue
		}
		ir := IgnoreRule{Substring: strings.ToLower(r.GetSubstring()), Description: r.GetDescription()}
		if t := r.GetValidFrom(); t != nil {
			if err := t.CheckValid(); err != nil {
				c.errorf(path+".valid_from", "%v", err)
				continue
			}
			ir.ValidFrom = t.AsTime()
		}
		if t := r.GetValidUntil(); t != nil {
			if err := t.CheckValid(); err != nil {
				c.errorf(path+".valid_until", "%v", err)
				continue
			}
			ir.ValidUntil = t.AsTime()
		}
		if !ir.ValidFrom.IsZero() && !ir.ValidUntil.IsZero() && !ir.ValidUntil.After(ir.ValidFrom) {
			c.errorf(path+".valid_until", "not after valid_from")
			continue
		}
		out = append(out, ir)
	}
	return out
}

// matchIgnore returns the first rule valid at now whose substring occurs in line.
func (p *Policy) matchIgnore(line string, now time.Time) (IgnoreRule, bool) {
	if p == nil || len(p.IgnoreRules) == 0 {
		return IgnoreRule{}, false
	}
	lower := strings.ToLower(line)
	for _, r := range p.IgnoreRules {
		if !r.ValidFrom.IsZero() && now.Before(r.ValidFrom) {
			continue
		}
		if !r.ValidUntil.IsZero() && !now.Before(r.ValidUntil) {
			continue
		}
		if strings.Contains(lower, r.Substring) {
			return r, true
		}
	}
	return IgnoreRule{}, false
}
