package configspec

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"smartproxy/client"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/license"
	"smartproxy/internal/pki"
	"smartproxy/internal/revocation"
	"smartproxy/oftp2"
)

// Limits of the values a configuration accepts (RFC 5024 §5.3.2 for SSID fields).
const (
	maxCredit     = oftp2.MaxCredit         // SSIDCRED 9(3)
	minBufferSize = oftp2.MinExchangeBuffer // SSIDSDEB minimum
	maxBufferSize = oftp2.MaxExchangeBuffer // SSIDSDEB maximum
	// minPrefixV4 and minPrefixV6 are the shortest prefixes the per-prefix handshake limit
	// may count: a shorter one would put unrelated networks under one cap.
	minPrefixV4 = 8
	minPrefixV6 = 16
	// ExpiryWarning is how long before a certificate expires Build starts warning about it.
	ExpiryWarning = 30 * 24 * time.Hour
)

// Result is the outcome of a successful Build.
type Result struct {
	// Snapshot is the configuration. Its Version and Source are left for the caller to set
	// before it hands the snapshot to a client.Client; Digest is set.
	Snapshot *client.Snapshot
	// Warnings are problems that do not prevent using the configuration (a certificate close to
	// expiry, an out-of-date CRL), each prefixed with its field.
	Warnings []string
}

// Build checks s at time now and builds the snapshot. On failure the error is an *Error naming
// every problem's field. The snapshot shares the CRL bytes of s (they can be large) unless the
// CRL is streamed (CRL.Stream): the caller must not modify them afterwards, and must set
// Snapshot.CRLSource when a CRL is streamed.
func Build(s *Spec, now time.Time) (*Result, error) {
	b := &builder{now: now, sec: &tunnelv1.SecurityConfig{}}
	sec := b.sec
	sec.PartnerListenAddress = b.listenAddress("partner_listen_address", s.PartnerListenAddress)
	sec.CompanyIdentity = b.identity(&s.CompanyCertificate, &s.CompanyKey)
	cas := b.trustedCAs(s.TrustedCAsField, s.TrustedCAs)
	for _, c := range cas {
		sec.TrustedCaCertificates = append(sec.TrustedCaCertificates, c.Raw)
	}
	sec.Crls = b.crls(s.CRLs, cas)
	sec.Partners = b.partners(s.Partners)
	sec.Limits = b.limits(&s.Limits)
	internal := b.internalServer(s.InternalServer)
	sec.OutgoingSourceIp = b.sourceIP("outgoing_source_ip", s.OutgoingSourceIP)
	sec.OutgoingRoutes = b.routes(s.Routes, s.Partners)
	sec.LogLevel = b.logLevel("log_level", s.LogLevel)
	sec.LogIgnoreRules = b.ignoreRules(s.LogIgnoreRules)
	sec.RevocationPolicy = b.revocation("revocation", s.Revocation)
	sec.ProxyProtocol = b.proxyProtocol(s.ProxyProtocol)
	if len(b.probs) > 0 {
		return nil, &Error{Problems: b.probs}
	}
	snap := &client.Snapshot{Security: sec, Internal: internal, Digest: b.digest(internal, s.InternalServer)}
	return &Result{Snapshot: snap, Warnings: b.warnings}, nil
}

// builder checks a Spec field by field and builds the snapshot parts, collecting every problem.
type builder struct {
	now      time.Time
	sec      *tunnelv1.SecurityConfig
	probs    []Problem
	warnings []string
}

func (b *builder) problem(field, format string, args ...any) {
	b.probs = append(b.probs, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (b *builder) warnf(field, format string, args ...any) {
	b.warnings = append(b.warnings, field+": "+fmt.Sprintf(format, args...))
}

// use returns the content of a blob, reporting its error or its warnings. ok is false when the
// blob has no usable content.
func (b *builder) use(bl *Blob) (data []byte, ok bool) {
	if bl.Err != nil {
		b.problem(bl.Field, "%v", bl.Err)
		return nil, false
	}
	for _, w := range bl.Warnings {
		b.warnf(bl.Field, "%s", w)
	}
	if len(bl.Data) == 0 {
		if bl.Name != "" {
			b.problem(bl.Field, "%s is empty", bl.Name)
		} else {
			b.problem(bl.Field, "required, and empty")
		}
		return nil, false
	}
	return bl.Data, true
}

// where is the prefix of a message about a blob's content: its name and a colon, or nothing.
func where(bl *Blob) string {
	if bl.Name == "" {
		return ""
	}
	return bl.Name + ": "
}

// checkAddress checks a "host:port" value. A listen address may have an empty host (all
// interfaces) and port 0 (any free port, reported by the server's admin status).
func checkAddress(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, strings.TrimPrefix(err.Error(), "address "+s+": "))
	}
	if host == "" && !listen {
		return fmt.Errorf("%q has no host", s)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q has an invalid host", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 && !listen {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

func (b *builder) listenAddress(field, s string) string {
	if s == "" {
		return ""
	}
	if err := checkAddress(s, true); err != nil {
		b.problem(field, "%v", err)
	} else if host, _, _ := net.SplitHostPort(s); host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			b.problem(field, "host %q is not an IP address (the DMZ server does not resolve names)", host)
		}
	}
	return s
}

func (b *builder) sourceIP(field, s string) string {
	if s == "" {
		return ""
	}
	if _, err := netip.ParseAddr(s); err != nil {
		b.problem(field, "%q is not an IP address", s)
	}
	return s
}

// proxyProtocol checks the PROXY protocol sources: at least one, each an IP address or a
// network in CIDR notation without host bits.
func (b *builder) proxyProtocol(pp *ProxyProtocol) *tunnelv1.ProxyProtocol {
	if pp == nil {
		return nil
	}
	if len(pp.AllowedSources) == 0 {
		b.problem(pp.Field, "empty; list the load balancers' addresses, or leave proxy_protocol out to turn it off")
		return nil
	}
	out := &tunnelv1.ProxyProtocol{}
	for i, src := range pp.AllowedSources {
		f := fmt.Sprintf("%s[%d]", pp.Field, i)
		if _, err := netip.ParseAddr(src); err == nil {
			out.AllowedSources = append(out.AllowedSources, src)
			continue
		}
		pfx, err := netip.ParsePrefix(src)
		switch {
		case err != nil:
			b.problem(f, "%q is neither an IP address nor a network in CIDR notation such as 10.0.0.0/29", src)
		case pfx != pfx.Masked():
			b.problem(f, "%q has host bits set; did you mean %s?", src, pfx.Masked())
		default:
			if pfx.Bits() == 0 {
				b.warnf(f, "%s lets any host send a PROXY header and claim any address", src)
			}
			out.AllowedSources = append(out.AllowedSources, src)
		}
	}
	return out
}

// ParseCertificates reads PEM ("CERTIFICATE" blocks only) or DER certificates.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return pki.ParseCertificatesPEM(data)
	}
	certs, err := x509.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("neither PEM nor DER certificates: %v", err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate found")
	}
	return certs, nil
}

// validity checks a certificate's validity period at b.now.
func (b *builder) validity(field string, c *x509.Certificate) {
	switch {
	case b.now.Before(c.NotBefore):
		b.problem(field, "certificate %q is not valid before %s", c.Subject, c.NotBefore.Format(time.RFC3339))
	case b.now.After(c.NotAfter):
		b.problem(field, "certificate %q expired at %s", c.Subject, c.NotAfter.Format(time.RFC3339))
	case c.NotAfter.Sub(b.now) < ExpiryWarning:
		b.warnf(field, "certificate %q expires at %s", c.Subject, c.NotAfter.Format(time.RFC3339))
	}
}

func (b *builder) identity(cert, key *Blob) *tunnelv1.TlsIdentity {
	id := &tunnelv1.TlsIdentity{}
	var leaf *x509.Certificate
	if data, ok := b.use(cert); ok {
		certs, err := ParseCertificates(data)
		if err != nil {
			b.problem(cert.Field, "%s%v", where(cert), err)
		} else {
			leaf = certs[0]
			if leaf.IsCA {
				b.problem(cert.Field, "%sthe first certificate is a CA certificate; put the company's own certificate first", where(cert))
			}
			b.validity(cert.Field, leaf)
			if !hasUsage(leaf, x509.ExtKeyUsageServerAuth) {
				b.warnf(cert.Field, "certificate %q does not allow TLS server use (extended key usage); partners may refuse it", leaf.Subject)
			}
			for _, c := range certs {
				id.CertificateChain = append(id.CertificateChain, c.Raw)
			}
		}
	}
	if data, ok := b.use(key); ok {
		k, err := pki.ParsePrivateKeyPEM(data)
		if err != nil {
			b.problem(key.Field, "%s%v", where(key), err)
			return id
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			b.problem(key.Field, "%s%v", where(key), err)
			return id
		}
		id.PrivateKey = der
		if leaf != nil {
			pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !pub.Equal(k.Public()) {
				of := cert.Name
				if of == "" {
					of = cert.Field
				}
				b.problem(key.Field, "%sthe key does not belong to the certificate in %s", where(key), of)
			}
		}
	}
	return id
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 {
		return true
	}
	for _, v := range c.ExtKeyUsage {
		if v == u || v == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func (b *builder) trustedCAs(listField string, blobs []Blob) []*x509.Certificate {
	if len(blobs) == 0 {
		b.problem(listField, "at least one CA certificate is required: without a trusted CA no partner certificate can be verified")
		return nil
	}
	var out []*x509.Certificate
	seen := make(map[[32]byte]string)
	for i := range blobs {
		bl := &blobs[i]
		data, ok := b.use(bl)
		if !ok {
			continue
		}
		certs, err := ParseCertificates(data)
		if err != nil {
			b.problem(bl.Field, "%s%v", where(bl), err)
			continue
		}
		for _, c := range certs {
			sum := sha256.Sum256(c.Raw)
			if prev, dup := seen[sum]; dup {
				b.warnf(bl.Field, "certificate %q is also in %s; it is used once", c.Subject, prev)
				continue
			}
			seen[sum] = bl.Field
			if !c.IsCA {
				b.problem(bl.Field, "certificate %q is not a CA certificate (basicConstraints cA is false); put the CA that issued it here, or bind a partner's own certificate with certificate_bindings", c.Subject)
				continue
			}
			b.validity(bl.Field, c)
			out = append(out, c)
		}
	}
	return out
}

// CRLDER returns the DER form of a PEM ("X509 CRL") or DER CRL.
func CRLDER(data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		return data, nil
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "X509 CRL" {
		return nil, fmt.Errorf("want a PEM \"X509 CRL\" block")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("more than one PEM block; give each CRL on its own")
	}
	return block.Bytes, nil
}

// CRLID returns the identifier of a CRL in the snapshot: derived from its content, so that the
// same CRL has the same id whatever its source.
func CRLID(sum [32]byte) string { return "crl-" + hex.EncodeToString(sum[:8]) }

func (b *builder) crls(list []CRL, cas []*x509.Certificate) []*tunnelv1.Crl {
	var out []*tunnelv1.Crl
	ids := make(map[string]string)
	for i := range list {
		c := &list[i]
		if c.URL != "" {
			u, err := url.Parse(c.URL)
			if err != nil || u.Scheme == "" || u.Host == "" && u.Scheme != "ldap" {
				b.problem(c.URLField, "%q is not an absolute URL", c.URL)
			}
		}
		if c.Stream && c.Verified {
			id := CRLID(c.SHA256)
			if prev, dup := ids[id]; dup {
				b.problem(c.Field, "%sthe same CRL as %s", where(&c.Blob), prev)
				continue
			}
			ids[id] = strings.TrimSuffix(c.Field, ".file")
			out = append(out, &tunnelv1.Crl{Id: id, Url: c.URL, Size: uint64(c.Size), Sha256: bytes.Clone(c.SHA256[:])})
			continue
		}
		data, ok := b.use(&c.Blob)
		if !ok {
			continue
		}
		der, err := CRLDER(data)
		if err != nil {
			b.problem(c.Field, "%s%v", where(&c.Blob), err)
			continue
		}
		if c.Stream && len(der) != len(data) {
			b.problem(c.Field, "%sa streamed CRL must be DER, not PEM", where(&c.Blob))
			continue
		}
		// The DMZ server's own parser checks the structure, the issuer among the trusted CAs and
		// the signature without indexing the entries, so that a CRL of a million serials costs
		// no memory beyond its bytes here; the server indexes it where it is used.
		_, err = revocation.VerifyFrom(der, cas, b.now)
		var stale *revocation.StaleError
		switch {
		case len(cas) == 0:
			// Reported at the trusted CAs; nothing to verify the CRL against.
		case errors.As(err, &stale):
			b.warnf(c.Field, "%sthe CRL of %q is out of date since %s; refresh it", where(&c.Blob), stale.Issuer, stale.NextUpdate.Format(time.RFC3339))
		case err != nil:
			b.problem(c.Field, "%sthe CRL is signed by none of the trusted CAs or cannot be used: %v", where(&c.Blob), err)
			continue
		}
		sum := sha256.Sum256(der)
		id := CRLID(sum)
		if prev, dup := ids[id]; dup {
			b.problem(c.Field, "%sthe same CRL as %s", where(&c.Blob), prev)
			continue
		}
		ids[id] = strings.TrimSuffix(c.Field, ".file")
		if c.Stream {
			out = append(out, &tunnelv1.Crl{Id: id, Url: c.URL, Size: uint64(len(der)), Sha256: sum[:]})
			continue
		}
		out = append(out, &tunnelv1.Crl{Id: id, Url: c.URL, Der: der, Sha256: sum[:]})
	}
	return out
}

func (b *builder) partners(list []Partner) []*tunnelv1.Partner {
	var out []*tunnelv1.Partner
	seen := make(map[string]int)
	for i := range list {
		p := &list[i]
		field := fmt.Sprintf("partners[%d]", i)
		pp := &tunnelv1.Partner{OdetteId: p.OdetteID, Name: p.Name, Enabled: p.Enabled, MaxCredit: p.MaxCredit, MaxBufferSize: p.MaxBufferSize}

		pp.RevocationPolicy = b.revocation(field+".revocation", p.Revocation)
		switch p.Charset {
		case "", "strict":
			pp.CharsetPolicy = tunnelv1.CharsetPolicy_CHARSET_POLICY_STRICT
		case "lenient":
			pp.CharsetPolicy = tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT
		default:
			b.problem(field+".charset", "%q is not a charset policy; want strict or lenient", p.Charset)
		}
		cs := oftp2.CharsetStrict
		if pp.CharsetPolicy == tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT {
			cs = oftp2.CharsetLenient
		}

		if p.OdetteID == "" {
			b.problem(field+".odette_id", "required: the partner's Odette ID (SSIDCODE)")
		} else if err := checkSSIDField(p.OdetteID, "", cs); err != nil {
			b.problem(field+".odette_id", "%q is not a valid Odette ID (%s charset): %v", p.OdetteID, cs, err)
		} else if prev, dup := seen[p.OdetteID]; dup {
			b.problem(field+".odette_id", "%q is already the Odette ID of partners[%d]", p.OdetteID, prev)
		} else {
			seen[p.OdetteID] = i
		}
		if p.Password != "" {
			if err := checkSSIDField(placeholderID, p.Password, cs); err != nil {
				// The value is a secret: name the problem, not the password.
				b.problem(field+".password", "not a valid SSID password (%s charset, at most 8 characters): %v", cs, err)
			} else {
				pp.Password = p.Password
			}
		}
		switch p.Direction {
		case "", "both":
			pp.DirectionPolicy = tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH
		case "incoming":
			pp.DirectionPolicy = tunnelv1.DirectionPolicy_DIRECTION_POLICY_INCOMING_ONLY
		case "outgoing":
			pp.DirectionPolicy = tunnelv1.DirectionPolicy_DIRECTION_POLICY_OUTGOING_ONLY
		default:
			b.problem(field+".direction", "%q is not a direction; want both, incoming or outgoing", p.Direction)
		}
		if p.MaxCredit > maxCredit {
			b.problem(field+".max_credit", "%d is out of range; want 1 to %d, or 0 for no cap", p.MaxCredit, maxCredit)
		}
		if p.MaxBufferSize != 0 && (p.MaxBufferSize < minBufferSize || p.MaxBufferSize > maxBufferSize) {
			b.problem(field+".max_buffer_size", "%d is out of range; want %d to %d, or 0 for no cap", p.MaxBufferSize, minBufferSize, maxBufferSize)
		}
		for j, n := range p.AllowedNetworks {
			f := fmt.Sprintf("%s.allowed_networks[%d]", field, j)
			pfx, err := netip.ParsePrefix(n)
			switch {
			case err != nil:
				if _, ipErr := netip.ParseAddr(n); ipErr == nil {
					b.problem(f, "%q is an address, not a network; write %s/32 (IPv4) or %s/128 (IPv6) for one host", n, n, n)
				} else {
					b.problem(f, "%q is not a network in CIDR notation such as 192.0.2.0/24", n)
				}
			case pfx != pfx.Masked():
				b.problem(f, "%q has host bits set; did you mean %s?", n, pfx.Masked())
			default:
				pp.AllowedNetworks = append(pp.AllowedNetworks, n)
			}
		}
		for j := range p.CertificateBindings {
			if cb := b.binding(fmt.Sprintf("%s.certificate_bindings[%d]", field, j), &p.CertificateBindings[j]); cb != nil {
				pp.CertificateBindings = append(pp.CertificateBindings, cb)
			}
		}
		out = append(out, pp)
	}
	return out
}

func (b *builder) binding(field string, c *CertificateBinding) *tunnelv1.CertificateBinding {
	cb := &tunnelv1.CertificateBinding{SubjectSerialNumber: c.SubjectSerialNumber, Subject: c.Subject}
	if c.SubjectSerialNumber == "" && c.SHA256Fingerprint == "" && c.Subject == "" && c.Certificate == nil {
		b.problem(field, "empty binding; give subject_serial_number, sha256_fingerprint, subject or a certificate")
		return nil
	}
	if c.Subject != "" {
		if err := checkDN(c.Subject); err != nil {
			b.problem(field+".subject", "%q is not a distinguished name in RFC 4514 form: %v", c.Subject, err)
		}
	}
	if c.SHA256Fingerprint != "" {
		if c.Certificate != nil {
			b.problem(field, "give sha256_fingerprint or a certificate, not both")
		}
		fp, err := ParseFingerprint(c.SHA256Fingerprint)
		if err != nil {
			b.problem(field+".sha256_fingerprint", "%q: %v", c.SHA256Fingerprint, err)
		}
		cb.Sha256Fingerprint = fp
	}
	if c.Certificate != nil {
		if data, ok := b.use(c.Certificate); ok {
			certs, err := ParseCertificates(data)
			switch {
			case err != nil:
				b.problem(c.Certificate.Field, "%s%v", where(c.Certificate), err)
			case len(certs) != 1:
				b.problem(c.Certificate.Field, "%sholds %d certificates; want exactly the partner's one", where(c.Certificate), len(certs))
			default:
				sum := sha256.Sum256(certs[0].Raw)
				cb.Sha256Fingerprint = sum[:]
			}
		}
	}
	return cb
}

// ParseFingerprint reads 64 hexadecimal digits, optionally separated by colons or spaces.
func ParseFingerprint(s string) ([]byte, error) {
	clean := strings.NewReplacer(":", "", " ", "").Replace(s)
	if len(clean) != 2*sha256.Size {
		return nil, fmt.Errorf("want 64 hexadecimal digits (SHA-256), got %d", len(clean))
	}
	fp, err := hex.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("not hexadecimal")
	}
	return fp, nil
}

// checkDN checks the outline of an RFC 4514 distinguished name: attribute=value pairs separated
// by unescaped commas (or plus signs within one RDN), attribute types that are names or dotted
// OIDs.
func checkDN(s string) error {
	var parts []string
	start, esc := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case esc:
			esc = false
		case s[i] == '\\':
			esc = true
		case s[i] == ',' || s[i] == '+':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if esc {
		return fmt.Errorf("ends with a lone backslash")
	}
	parts = append(parts, s[start:])
	for _, p := range parts {
		typ, _, ok := strings.Cut(p, "=")
		typ = strings.TrimSpace(typ)
		if !ok || typ == "" {
			return fmt.Errorf("%q is not attribute=value", p)
		}
		for _, r := range typ {
			if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
				return fmt.Errorf("attribute type %q is neither a name nor an OID", typ)
			}
		}
	}
	return nil
}

func (b *builder) limits(l *Limits) *tunnelv1.Limits {
	out := &tunnelv1.Limits{MaxSessions: l.MaxSessions, MaxHandshakes: l.MaxHandshakes, PerIpRate: l.PerIPRate,
		PerIpBurst: l.PerIPBurst, MaxCredit: l.MaxCredit, MaxBufferSize: l.MaxBufferSize,
		MaxHandshakesPerSource: l.MaxHandshakesPerSource, MaxHandshakesPerPrefix: l.MaxHandshakesPerPrefix,
		PrefixLengthV4: l.PrefixLengthV4, PrefixLengthV6: l.PrefixLengthV6}
	if v := l.PrefixLengthV4; v != 0 && (v < minPrefixV4 || v > 32) {
		b.problem("limits.prefix_length_v4", "%d is out of range; want %d to 32, or 0 for the server's default", v, minPrefixV4)
	}
	if v := l.PrefixLengthV6; v != 0 && (v < minPrefixV6 || v > 128) {
		b.problem("limits.prefix_length_v6", "%d is out of range; want %d to 128, or 0 for the server's default", v, minPrefixV6)
	}
	if l.MaxCredit > maxCredit {
		b.problem("limits.max_credit", "%d is out of range; want 1 to %d, or 0 for the server's default", l.MaxCredit, maxCredit)
	}
	if l.MaxBufferSize != 0 && (l.MaxBufferSize < minBufferSize || l.MaxBufferSize > maxBufferSize) {
		b.problem("limits.max_buffer_size", "%d is out of range; want %d to %d, or 0 for the server's default", l.MaxBufferSize, minBufferSize, maxBufferSize)
	}
	if l.PerIPRate < 0 || math.IsNaN(l.PerIPRate) || math.IsInf(l.PerIPRate, 0) {
		b.problem("limits.per_ip_rate", "%v is negative or not a number; want connections per second, or 0 for the server's default", l.PerIPRate)
	}
	dur := func(field string, d time.Duration) *durationpb.Duration {
		if d < 0 {
			b.problem(field, "%v is negative", d)
		}
		if d <= 0 {
			return nil
		}
		return durationpb.New(d)
	}
	out.HandshakeTimeout = dur("limits.handshake_timeout", l.HandshakeTimeout)
	out.SsidTimeout = dur("limits.ssid_timeout", l.SSIDTimeout)
	out.IdleTimeout = dur("limits.idle_timeout", l.IdleTimeout)
	out.ConnectTimeout = dur("limits.connect_timeout", l.ConnectTimeout)
	return out
}

func (b *builder) internalServer(s *InternalServer) client.InternalServer {
	const field = "internal_server"
	if s == nil {
		b.problem(field, "required: the internal OFTP2 server incoming sessions go to")
		return client.InternalServer{}
	}
	out := client.InternalServer{Address: s.Address, ConnectTimeout: s.ConnectTimeout, SSRMTimeout: s.SSRMTimeout}
	if s.Address == "" {
		b.problem(field+".address", "required: host:port of the internal OFTP2 server")
	} else if err := checkAddress(s.Address, false); err != nil {
		b.problem(field+".address", "%v", err)
	}
	if s.ConnectTimeout < 0 {
		b.problem(field+".connect_timeout", "%v is negative", s.ConnectTimeout)
	}
	if s.SSRMTimeout < 0 {
		b.problem(field+".ssrm_timeout", "%v is negative", s.SSRMTimeout)
	}
	if s.TLS == nil {
		return out
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.TLS.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(s.Address)
	}
	if len(s.TLS.CAs) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		for i := range s.TLS.CAs {
			bl := &s.TLS.CAs[i]
			data, ok := b.use(bl)
			if !ok {
				continue
			}
			certs, err := ParseCertificates(data)
			if err != nil {
				b.problem(bl.Field, "%s%v", where(bl), err)
				continue
			}
			for _, c := range certs {
				cfg.RootCAs.AddCert(c)
			}
		}
	}
	cert, key := &s.TLS.Certificate, &s.TLS.Key
	switch {
	case present(cert) && present(key):
		cd, ok1 := b.use(cert)
		kd, ok2 := b.use(key)
		if ok1 && ok2 {
			pair, err := tls.X509KeyPair(cd, kd)
			if err != nil {
				b.problem(cert.Field, "%swith its key: %v", where(cert), err)
			} else {
				cfg.Certificates = []tls.Certificate{pair}
			}
		}
	case present(cert):
		b.problem(key.Field, "required with certificate")
	case present(key):
		b.problem(cert.Field, "required with key")
	}
	out.TLS = cfg
	return out
}

// present reports whether an optional blob was given.
func present(bl *Blob) bool { return bl.Err != nil || len(bl.Data) > 0 }

func (b *builder) routes(list []Route, partners []Partner) []*tunnelv1.Route {
	var out []*tunnelv1.Route
	names := make(map[string]int)
	listens := make(map[string]int)
	known := make(map[string]bool, len(partners))
	for _, p := range partners {
		known[strings.TrimRight(p.OdetteID, " ")] = true
	}
	for i, r := range list {
		field := fmt.Sprintf("routes[%d]", i)
		switch prev, dup := names[r.Name]; {
		case r.Name == "":
			b.problem(field+".name", "required: the route's name")
		case dup:
			b.problem(field+".name", "%q is already the name of routes[%d]", r.Name, prev)
		default:
			names[r.Name] = i
		}
		if r.ListenAddress == "" {
			b.problem(field+".listen_address", "required: host:port the client listens on for the internal OFTP2 server")
		} else if err := checkAddress(r.ListenAddress, true); err != nil {
			b.problem(field+".listen_address", "%v", err)
		} else if prev, dup := listens[r.ListenAddress]; dup {
			b.problem(field+".listen_address", "%q is already the listen address of routes[%d]", r.ListenAddress, prev)
		} else {
			listens[r.ListenAddress] = i
		}
		if r.PartnerAddress == "" {
			b.problem(field+".partner_address", "required: host:port of the partner")
		} else if err := checkAddress(r.PartnerAddress, false); err != nil {
			b.problem(field+".partner_address", "%v", err)
		}
		if r.PartnerOdetteID == "" {
			b.problem(field+".partner_odette_id", "required: the Odette ID of the partner the route reaches")
		} else if err := checkSSIDField(r.PartnerOdetteID, "", oftp2.CharsetLenient); err != nil {
			b.problem(field+".partner_odette_id", "%q is not a valid Odette ID: %v", r.PartnerOdetteID, err)
		} else if !known[strings.TrimRight(r.PartnerOdetteID, " ")] {
			b.problem(field+".partner_odette_id", "%q is not one of the partners; add it to partners first", r.PartnerOdetteID)
		}
		preferred := ""
		if r.PreferredServer != "" {
			id, err := license.NormalizeProxyID(r.PreferredServer)
			if err != nil {
				b.problem(field+".preferred_server", "%v", err)
			}
			preferred = id
		}
		out = append(out, &tunnelv1.Route{Name: r.Name, ListenAddress: r.ListenAddress, PartnerAddress: r.PartnerAddress,
			PartnerOdetteId: r.PartnerOdetteID, ServerName: r.ServerName, PreferredServer: preferred})
	}
	return out
}

// logLevels maps the configuration's level names to the tunnel's.
// revocation returns the revocation policy s names: "soft", "hard" or "" (unspecified: the
// server's default for the configuration, the configuration's policy for a partner).
func (b *builder) revocation(field, s string) tunnelv1.RevocationPolicy {
	switch s {
	case "":
		return tunnelv1.RevocationPolicy_REVOCATION_POLICY_UNSPECIFIED
	case "soft":
		return tunnelv1.RevocationPolicy_REVOCATION_POLICY_SOFT
	case "hard":
		return tunnelv1.RevocationPolicy_REVOCATION_POLICY_HARD
	}
	b.problem(field, "%q is not a revocation policy; want soft or hard", s)
	return tunnelv1.RevocationPolicy_REVOCATION_POLICY_UNSPECIFIED
}

var logLevels = map[string]tunnelv1.LogLevel{
	"trace": tunnelv1.LogLevel_LOG_LEVEL_TRACE, "debug": tunnelv1.LogLevel_LOG_LEVEL_DEBUG,
	"info": tunnelv1.LogLevel_LOG_LEVEL_INFO, "warn": tunnelv1.LogLevel_LOG_LEVEL_WARN,
	"warning": tunnelv1.LogLevel_LOG_LEVEL_WARN, "error": tunnelv1.LogLevel_LOG_LEVEL_ERROR,
}

func (b *builder) logLevel(field, s string) tunnelv1.LogLevel {
	if s == "" {
		return tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED
	}
	l, ok := logLevels[strings.ToLower(s)]
	if !ok {
		b.problem(field, "%q is not a log level; want trace, debug, info, warn or error", s)
	}
	return l
}

func (b *builder) ignoreRules(list []LogIgnoreRule) []*tunnelv1.LogIgnoreRule {
	var out []*tunnelv1.LogIgnoreRule
	for i, r := range list {
		field := fmt.Sprintf("log_ignore_rules[%d]", i)
		if strings.TrimSpace(r.Substring) == "" {
			b.problem(field+".substring", "required: the text the rule matches")
		}
		if !r.ValidFrom.IsZero() && !r.ValidUntil.IsZero() && !r.ValidUntil.After(r.ValidFrom) {
			b.problem(field+".valid_until", "%s is not after valid_from %s", r.ValidUntil.Format(time.RFC3339), r.ValidFrom.Format(time.RFC3339))
		}
		if !r.ValidUntil.IsZero() && b.now.After(r.ValidUntil) {
			b.warnf(field+".valid_until", "the rule expired at %s; the server drops it", r.ValidUntil.Format(time.RFC3339))
		}
		pr := &tunnelv1.LogIgnoreRule{Substring: r.Substring, Description: r.Description}
		if !r.ValidFrom.IsZero() {
			pr.ValidFrom = timestamppb.New(r.ValidFrom)
		}
		if !r.ValidUntil.IsZero() {
			pr.ValidUntil = timestamppb.New(r.ValidUntil)
		}
		out = append(out, pr)
	}
	return out
}

// digest hashes everything the configuration holds: the security configuration and the
// internal server settings with the contents of their TLS material.
func (b *builder) digest(in client.InternalServer, s *InternalServer) [32]byte {
	h := sha256.New()
	// The CRLs count by their SHA-256, not their bytes: marshalling a CRL of a million serials
	// would copy it once more for nothing.
	light := &tunnelv1.SecurityConfig{}
	dst := light.ProtoReflect()
	b.sec.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "crls" {
			dst.Set(fd, v) // shares the value: nothing is copied
		}
		return true
	})
	light.Crls = make([]*tunnelv1.Crl, len(b.sec.Crls))
	for i, c := range b.sec.Crls {
		light.Crls[i] = &tunnelv1.Crl{Id: c.Id, Url: c.Url, Sha256: c.Sha256}
	}
	sec, err := proto.MarshalOptions{Deterministic: true}.Marshal(light)
	if err != nil {
		// Marshal fails only on invalid UTF-8 in strings; report it in the digest instead of
		// failing, as the server will refuse such a configuration with its field.
		writeField(h, []byte(err.Error()))
	}
	writeField(h, sec)
	writeField(h, []byte(in.Address))
	writeField(h, []byte(in.ConnectTimeout.String()))
	writeField(h, []byte(in.SSRMTimeout.String()))
	if in.TLS != nil && s != nil && s.TLS != nil {
		writeField(h, []byte("tls "+in.TLS.ServerName))
		for _, bl := range s.TLS.CAs {
			writeField(h, bl.Data)
		}
		writeField(h, s.TLS.Certificate.Data)
		writeField(h, s.TLS.Key.Data)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// writeField writes p with its length, so that field boundaries are part of the hash.
func writeField(h hash.Hash, p []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(p)))
	h.Write(n[:])
	h.Write(p)
}

// checkSSIDField checks that an Odette ID (field "SSIDCODE") or password ("SSIDPSWD") can appear
// in an SSID under the given charset policy, with the OFTP2 codec's own field rules (RFC 5024
// §5.3.2, §5.4), so that the client, the DMZ server and the wire agree on what is valid. The
// message never repeats the value (passwords are secret).
func checkSSIDField(id, password string, cs oftp2.Charset) error {
	ssid := &oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: oftp2.MaxExchangeBuffer,
		Mode: oftp2.ModeBoth, Credit: oftp2.MaxCredit}
	err := oftp2.Validate(ssid, &oftp2.ParseOptions{Charset: cs})
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		return errors.New(pe.Msg)
	}
	return err
}

// placeholderID is a valid Odette ID used to check a password on its own.
const placeholderID = "O0000"
