package configfile

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"smartproxy/client"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
)

// Limits of the values the configuration accepts (RFC 5024 §5.3.2 for SSID fields).
const (
	maxCredit     = oftp2.MaxCredit         // SSIDCRED 9(3)
	minBufferSize = oftp2.MinExchangeBuffer // SSIDSDEB minimum
	maxBufferSize = oftp2.MaxExchangeBuffer // SSIDSDEB maximum
	// maxFileSize bounds every file the configuration names, so that a wrong path (a device, a
	// huge log) cannot exhaust memory. The largest real CRLs are tens of MiB.
	maxFileSize = 256 << 20
	// expiryWarning is how long before a certificate expires Load starts warning about it.
	expiryWarning = 30 * 24 * time.Hour
)

// built is the result of checking a File.
type built struct {
	security *tunnelv1.SecurityConfig
	internal client.InternalServer
	// files are the contents of every file read, by resolved path, for the digest.
	files    map[string][]byte
	warnings []string
}

// builder checks a File field by field and builds the snapshot parts, collecting every problem.
type builder struct {
	dir   string
	now   time.Time
	probs problems
	out   built
}

// build checks f, whose relative paths are resolved against dir, and returns the snapshot parts
// or the problems found.
func build(f *File, dir string, now time.Time) (*built, problems) {
	b := &builder{dir: dir, now: now}
	b.out.security = &tunnelv1.SecurityConfig{}
	b.out.files = make(map[string][]byte)
	sec := b.out.security

	sec.PartnerListenAddress = b.listenAddress("partner_listen_address", f.PartnerListenAddress)
	sec.CompanyIdentity = b.identity(f.CompanyCertificate, f.CompanyKey)
	cas := b.trustedCAs(f.TrustedCAFiles)
	for _, c := range cas {
		sec.TrustedCaCertificates = append(sec.TrustedCaCertificates, c.Raw)
	}
	sec.Crls = b.crls(f.CRLs, cas)
	sec.Partners = b.partners(f.Partners)
	sec.Limits = b.limits(&f.Limits)
	b.out.internal = b.internalServer(f.InternalServer)
	sec.LogLevel = b.logLevel("log_level", f.LogLevel)
	sec.LogIgnoreRules = b.ignoreRules(f.LogIgnoreRules)
	if len(b.probs) > 0 {
		return nil, b.probs
	}
	return &b.out, nil
}

func (b *builder) warnf(field, format string, args ...any) {
	b.out.warnings = append(b.out.warnings, field+": "+fmt.Sprintf(format, args...))
}

// readFile reads a file the configuration names, resolving a relative name against the
// configuration file's directory.
func (b *builder) readFile(field, name string) ([]byte, string, bool) {
	if name == "" {
		b.probs.add(field, "a file name is required")
		return nil, "", false
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(b.dir, path)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.probs.add(field, "%v", err)
		return nil, path, false
	}
	if !st.Mode().IsRegular() {
		b.probs.add(field, "%s is not a regular file", path)
		return nil, path, false
	}
	if st.Size() > maxFileSize {
		b.probs.add(field, "%s has %d bytes, more than the %d allowed", path, st.Size(), maxFileSize)
		return nil, path, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.probs.add(field, "%v", err)
		return nil, path, false
	}
	b.out.files[path] = data
	return data, path, true
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
		b.probs.add(field, "%v", err)
	} else if host, _, _ := net.SplitHostPort(s); host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			b.probs.add(field, "host %q is not an IP address (the DMZ server does not resolve names)", host)
		}
	}
	return s
}

// parseCertificates reads PEM ("CERTIFICATE" blocks only) or DER certificates.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
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
		b.probs.add(field, "certificate %q is not valid before %s", c.Subject, c.NotBefore.Format(time.RFC3339))
	case b.now.After(c.NotAfter):
		b.probs.add(field, "certificate %q expired at %s", c.Subject, c.NotAfter.Format(time.RFC3339))
	case c.NotAfter.Sub(b.now) < expiryWarning:
		b.warnf(field, "certificate %q expires at %s", c.Subject, c.NotAfter.Format(time.RFC3339))
	}
}

func (b *builder) identity(certFile, keyFile string) *tunnelv1.TlsIdentity {
	const certField, keyField = "company_certificate", "company_key"
	id := &tunnelv1.TlsIdentity{}
	var leaf *x509.Certificate
	if data, path, ok := b.readFile(certField, certFile); ok {
		certs, err := parseCertificates(data)
		if err != nil {
			b.probs.add(certField, "%s: %v", path, err)
		} else {
			leaf = certs[0]
			if leaf.IsCA {
				b.probs.add(certField, "%s: the first certificate is a CA certificate; put the company's own certificate first", path)
			}
			b.validity(certField, leaf)
			if !hasUsage(leaf, x509.ExtKeyUsageServerAuth) {
				b.warnf(certField, "certificate %q does not allow TLS server use (extended key usage); partners may refuse it", leaf.Subject)
			}
			for _, c := range certs {
				id.CertificateChain = append(id.CertificateChain, c.Raw)
			}
		}
	}
	if data, path, ok := b.readFile(keyField, keyFile); ok {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			b.warnf(keyField, "%s is readable by others (mode %04o); use mode 0600", path, st.Mode().Perm())
		}
		key, err := pki.ParsePrivateKeyPEM(data)
		if err != nil {
			b.probs.add(keyField, "%s: %v", path, err)
			return id
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			b.probs.add(keyField, "%s: %v", path, err)
			return id
		}
		id.PrivateKey = der
		if leaf != nil {
			pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !pub.Equal(key.Public()) {
				b.probs.add(keyField, "%s does not belong to the certificate in %s", path, certFile)
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

func (b *builder) trustedCAs(files []string) []*x509.Certificate {
	if len(files) == 0 {
		b.probs.add("trusted_ca_files", "at least one file is required: without a trusted CA no partner certificate can be verified")
		return nil
	}
	var out []*x509.Certificate
	seen := make(map[[32]byte]string)
	for i, name := range files {
		field := fmt.Sprintf("trusted_ca_files[%d]", i)
		data, path, ok := b.readFile(field, name)
		if !ok {
			continue
		}
		certs, err := parseCertificates(data)
		if err != nil {
			b.probs.add(field, "%s: %v", path, err)
			continue
		}
		for _, c := range certs {
			sum := sha256.Sum256(c.Raw)
			if prev, dup := seen[sum]; dup {
				b.warnf(field, "certificate %q is also in %s; it is used once", c.Subject, prev)
				continue
			}
			seen[sum] = field
			if !c.IsCA {
				b.probs.add(field, "certificate %q is not a CA certificate (basicConstraints cA is false); put the CA that issued it here, or bind a partner's own certificate with certificate_bindings", c.Subject)
				continue
			}
			b.validity(field, c)
			out = append(out, c)
		}
	}
	return out
}

// parseCRL reads a PEM ("X509 CRL") or DER CRL and returns its DER form.
func parseCRL(data []byte) (*x509.RevocationList, []byte, error) {
	der := data
	if bytes.Contains(data, []byte("-----BEGIN")) {
		block, rest := pem.Decode(data)
		if block == nil || block.Type != "X509 CRL" {
			return nil, nil, fmt.Errorf("want a PEM \"X509 CRL\" block")
		}
		if next, _ := pem.Decode(rest); next != nil {
			return nil, nil, fmt.Errorf("more than one PEM block; put each CRL in its own file")
		}
		der = block.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, nil, fmt.Errorf("not a CRL: %v", err)
	}
	return crl, der, nil
}

func (b *builder) crls(list []CRL, cas []*x509.Certificate) []*tunnelv1.Crl {
	var out []*tunnelv1.Crl
	ids := make(map[string]int)
	for i, c := range list {
		field := fmt.Sprintf("crls[%d]", i)
		if c.URL != "" {
			u, err := url.Parse(c.URL)
			if err != nil || u.Scheme == "" || u.Host == "" && u.Scheme != "ldap" {
				b.probs.add(field+".url", "%q is not an absolute URL", c.URL)
			}
		}
		data, path, ok := b.readFile(field+".file", c.File)
		if !ok {
			continue
		}
		crl, der, err := parseCRL(data)
		if err != nil {
			b.probs.add(field+".file", "%s: %v", path, err)
			continue
		}
		var issuer *x509.Certificate
		for _, ca := range cas {
			if bytes.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
				issuer = ca
				break
			}
		}
		if issuer == nil && len(cas) > 0 {
			b.probs.add(field+".file", "%s: the CRL of %q is signed by none of the trusted CAs", path, crl.Issuer)
		}
		if !crl.NextUpdate.IsZero() && b.now.After(crl.NextUpdate) {
			b.warnf(field+".file", "%s: the CRL of %q is out of date since %s; refresh it", path, crl.Issuer, crl.NextUpdate.Format(time.RFC3339))
		}
		sum := sha256.Sum256(der)
		id := "crl-" + hex.EncodeToString(sum[:8])
		if prev, dup := ids[id]; dup {
			b.probs.add(field+".file", "%s is the same CRL as crls[%d]", path, prev)
			continue
		}
		ids[id] = i
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
		pp := &tunnelv1.Partner{OdetteId: p.OdetteID, Name: p.Name, Enabled: p.Enabled == nil || *p.Enabled, MaxCredit: p.MaxCredit, MaxBufferSize: p.MaxBufferSize}

		switch p.Charset {
		case "", "strict":
			pp.CharsetPolicy = tunnelv1.CharsetPolicy_CHARSET_POLICY_STRICT
		case "lenient":
			pp.CharsetPolicy = tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT
		default:
			b.probs.add(field+".charset", "%q is not a charset policy; want strict or lenient", p.Charset)
		}
		cs := oftp2.CharsetStrict
		if pp.CharsetPolicy == tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT {
			cs = oftp2.CharsetLenient
		}

		if p.OdetteID == "" {
			b.probs.add(field+".odette_id", "required: the partner's Odette ID (SSIDCODE)")
		} else if err := checkSSIDField(p.OdetteID, "", cs); err != nil {
			b.probs.add(field+".odette_id", "%q is not a valid Odette ID (%s charset): %v", p.OdetteID, cs, err)
		} else if prev, dup := seen[p.OdetteID]; dup {
			b.probs.add(field+".odette_id", "%q is already the Odette ID of partners[%d]", p.OdetteID, prev)
		} else {
			seen[p.OdetteID] = i
		}
		if p.Password != "" {
			if err := checkSSIDField(placeholderID, p.Password, cs); err != nil {
				// The value is a secret: name the problem, not the password.
				b.probs.add(field+".password", "not a valid SSID password (%s charset, at most 8 characters): %v", cs, err)
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
			b.probs.add(field+".direction", "%q is not a direction; want both, incoming or outgoing", p.Direction)
		}
		if p.MaxCredit > maxCredit {
			b.probs.add(field+".max_credit", "%d is out of range; want 1 to %d, or 0 for no cap", p.MaxCredit, maxCredit)
		}
		if p.MaxBufferSize != 0 && (p.MaxBufferSize < minBufferSize || p.MaxBufferSize > maxBufferSize) {
			b.probs.add(field+".max_buffer_size", "%d is out of range; want %d to %d, or 0 for no cap", p.MaxBufferSize, minBufferSize, maxBufferSize)
		}
		for j, n := range p.AllowedNetworks {
			f := fmt.Sprintf("%s.allowed_networks[%d]", field, j)
			pfx, err := netip.ParsePrefix(n)
			switch {
			case err != nil:
				if _, ipErr := netip.ParseAddr(n); ipErr == nil {
					b.probs.add(f, "%q is an address, not a network; write %s/32 (IPv4) or %s/128 (IPv6) for one host", n, n, n)
				} else {
					b.probs.add(f, "%q is not a network in CIDR notation such as 192.0.2.0/24", n)
				}
			case pfx != pfx.Masked():
				b.probs.add(f, "%q has host bits set; did you mean %s?", n, pfx.Masked())
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
	if c.SubjectSerialNumber == "" && c.SHA256Fingerprint == "" && c.Subject == "" && c.CertificateFile == "" {
		b.probs.add(field, "empty binding; give subject_serial_number, sha256_fingerprint, subject or certificate_file")
		return nil
	}
	if c.Subject != "" {
		if err := checkDN(c.Subject); err != nil {
			b.probs.add(field+".subject", "%q is not a distinguished name in RFC 4514 form: %v", c.Subject, err)
		}
	}
	if c.SHA256Fingerprint != "" {
		if c.CertificateFile != "" {
			b.probs.add(field, "give sha256_fingerprint or certificate_file, not both")
		}
		fp, err := parseFingerprint(c.SHA256Fingerprint)
		if err != nil {
			b.probs.add(field+".sha256_fingerprint", "%q: %v", c.SHA256Fingerprint, err)
		}
		cb.Sha256Fingerprint = fp
	}
	if c.CertificateFile != "" {
		if data, path, ok := b.readFile(field+".certificate_file", c.CertificateFile); ok {
			certs, err := parseCertificates(data)
			switch {
			case err != nil:
				b.probs.add(field+".certificate_file", "%s: %v", path, err)
			case len(certs) != 1:
				b.probs.add(field+".certificate_file", "%s holds %d certificates; want exactly the partner's one", path, len(certs))
			default:
				sum := sha256.Sum256(certs[0].Raw)
				cb.Sha256Fingerprint = sum[:]
			}
		}
	}
	return cb
}

// parseFingerprint reads 64 hexadecimal digits, optionally separated by colons or spaces.
func parseFingerprint(s string) ([]byte, error) {
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
		PerIpBurst: l.PerIPBurst, MaxCredit: l.MaxCredit, MaxBufferSize: l.MaxBufferSize}
	if l.MaxCredit > maxCredit {
		b.probs.add("limits.max_credit", "%d is out of range; want 1 to %d, or 0 for the server's default", l.MaxCredit, maxCredit)
	}
	if l.MaxBufferSize != 0 && (l.MaxBufferSize < minBufferSize || l.MaxBufferSize > maxBufferSize) {
		b.probs.add("limits.max_buffer_size", "%d is out of range; want %d to %d, or 0 for the server's default", l.MaxBufferSize, minBufferSize, maxBufferSize)
	}
	if l.PerIPRate < 0 || math.IsNaN(l.PerIPRate) {
		b.probs.add("limits.per_ip_rate", "%v is negative; want connections per second, or 0 for the server's default", l.PerIPRate)
	}
	dur := func(d Duration) *durationpb.Duration {
		if d == 0 {
			return nil
		}
		return durationpb.New(time.Duration(d))
	}
	out.HandshakeTimeout = dur(l.HandshakeTimeout)
	out.SsidTimeout = dur(l.SSIDTimeout)
	out.IdleTimeout = dur(l.IdleTimeout)
	return out
}

func (b *builder) internalServer(s *InternalServer) client.InternalServer {
	const field = "internal_server"
	if s == nil {
		b.probs.add(field, "required: the internal OFTP2 server incoming sessions go to")
		return client.InternalServer{}
	}
	out := client.InternalServer{Address: s.Address, ConnectTimeout: time.Duration(s.ConnectTimeout), SSRMTimeout: time.Duration(s.SSRMTimeout)}
	if s.Address == "" {
		b.probs.add(field+".address", "required: host:port of the internal OFTP2 server")
	} else if err := checkAddress(s.Address, false); err != nil {
		b.probs.add(field+".address", "%v", err)
	}
	if s.TLS == nil {
		return out
	}
	tf := field + ".tls"
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.TLS.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(s.Address)
	}
	if len(s.TLS.CAFiles) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		for i, name := range s.TLS.CAFiles {
			f := fmt.Sprintf("%s.ca_files[%d]", tf, i)
			data, path, ok := b.readFile(f, name)
			if !ok {
				continue
			}
			certs, err := parseCertificates(data)
			if err != nil {
				b.probs.add(f, "%s: %v", path, err)
				continue
			}
			for _, c := range certs {
				cfg.RootCAs.AddCert(c)
			}
		}
	}
	switch {
	case s.TLS.Certificate != "" && s.TLS.Key != "":
		cd, cpath, ok1 := b.readFile(tf+".certificate", s.TLS.Certificate)
		kd, _, ok2 := b.readFile(tf+".key", s.TLS.Key)
		if ok1 && ok2 {
			pair, err := tls.X509KeyPair(cd, kd)
			if err != nil {
				b.probs.add(tf+".certificate", "%s with its key: %v", cpath, err)
			} else {
				cfg.Certificates = []tls.Certificate{pair}
			}
		}
	case s.TLS.Certificate != "":
		b.probs.add(tf+".key", "required with certificate")
	case s.TLS.Key != "":
		b.probs.add(tf+".certificate", "required with key")
	}
	out.TLS = cfg
	return out
}

// logLevels maps the configuration's level names to the tunnel's.
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
		b.probs.add(field, "%q is not a log level; want trace, debug, info, warn or error", s)
	}
	return l
}

func (b *builder) ignoreRules(list []LogIgnoreRule) []*tunnelv1.LogIgnoreRule {
	var out []*tunnelv1.LogIgnoreRule
	for i, r := range list {
		field := fmt.Sprintf("log_ignore_rules[%d]", i)
		if strings.TrimSpace(r.Substring) == "" {
			b.probs.add(field+".substring", "required: the text the rule matches")
		}
		if !r.ValidFrom.IsZero() && !r.ValidUntil.IsZero() && !r.ValidUntil.After(r.ValidFrom.Time) {
			b.probs.add(field+".valid_until", "%s is not after valid_from %s", r.ValidUntil.Format(time.RFC3339), r.ValidFrom.Format(time.RFC3339))
		}
		if !r.ValidUntil.IsZero() && b.now.After(r.ValidUntil.Time) {
			b.warnf(field+".valid_until", "the rule expired at %s; the server drops it", r.ValidUntil.Format(time.RFC3339))
		}
		pr := &tunnelv1.LogIgnoreRule{Substring: r.Substring, Description: r.Description}
		if !r.ValidFrom.IsZero() {
			pr.ValidFrom = timestamppb.New(r.ValidFrom.Time)
		}
		if !r.ValidUntil.IsZero() {
			pr.ValidUntil = timestamppb.New(r.ValidUntil.Time)
		}
		out = append(out, pr)
	}
	return out
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
