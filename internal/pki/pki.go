// Package pki creates the certificates the tunnel between smartproxy-client and
// smartproxy-server runs on, and the partner certificates, CRLs and broken
// certificates (expired, foreign CA, wrong usage) that tests need.
//
// Keys are ECDSA P-256 unless a request asks for RSA (some Odette partners still
// require RSA). A CA is created with [NewCA] or [NewCAWithOptions]; it issues
// leaf certificates with [CA.Issue], subordinate CAs with [CA.IssueCA] and CRLs
// with [CA.CRL]. [Init] writes a tunnel CA and one server and one client
// certificate into a directory, which is what `smartproxy-server pki init`
// does.
//
// Private keys are written with mode 0600; PEM files are written atomically
// (temporary file, fsync, rename) so that a daemon that reloads them never sees
// a half-written file.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"time"
)

// KeyAlgorithm selects the kind of key generated for a certificate.
type KeyAlgorithm int

// Key algorithms. The zero value is ECDSA with curve P-256.
const (
	// ECDSAP256 is ECDSA over NIST P-256, the default.
	ECDSAP256 KeyAlgorithm = iota
	// RSA2048 is RSA with a 2048-bit modulus.
	RSA2048
	// RSA3072 is RSA with a 3072-bit modulus.
	RSA3072
	// RSA4096 is RSA with a 4096-bit modulus.
	RSA4096
)

// String returns the name of the algorithm, for example "ecdsa-p256".
func (a KeyAlgorithm) String() string {
	switch a {
	case ECDSAP256:
		return "ecdsa-p256"
	case RSA2048:
		return "rsa-2048"
	case RSA3072:
		return "rsa-3072"
	case RSA4096:
		return "rsa-4096"
	}
	return fmt.Sprintf("KeyAlgorithm(%d)", int(a))
}

// GenerateKey creates a new private key of algorithm a.
func GenerateKey(a KeyAlgorithm) (crypto.Signer, error) {
	switch a {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("pki: unknown key algorithm %v", a)
}

// Usage is a bit set of the purposes a leaf certificate is issued for. It maps
// to the extended key usage extension.
type Usage uint8

// Usage bits.
const (
	// UsageServer allows TLS server authentication (id-kp-serverAuth).
	UsageServer Usage = 1 << iota
	// UsageClient allows TLS client authentication (id-kp-clientAuth).
	UsageClient
)

// String returns the usage bits as text, for example "server|client".
func (u Usage) String() string {
	switch u {
	case 0:
		return "none"
	case UsageServer:
		return "server"
	case UsageClient:
		return "client"
	case UsageServer | UsageClient:
		return "server|client"
	}
	return fmt.Sprintf("Usage(%#x)", uint8(u))
}

func (u Usage) extKeyUsage() []x509.ExtKeyUsage {
	var eku []x509.ExtKeyUsage
	if u&UsageServer != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if u&UsageClient != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	return eku
}

// Default validity periods.
const (
	// DefaultCAValidity is how long a CA is valid when CAOptions.NotAfter is zero.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultLeafValidity is how long a leaf is valid when Request.NotAfter is zero.
	DefaultLeafValidity = 365 * 24 * time.Hour
	// backdate is how far NotBefore lies in the past by default, to tolerate
	// clocks that are a little behind.
	backdate = time.Hour
)

// CAOptions describes a CA certificate.
type CAOptions struct {
	// CommonName is the subject common name. It must not be empty.
	CommonName string
	// Organization is the subject organization. If empty, none is set.
	Organization []string
	// KeyAlgorithm is the key type. If zero, ECDSA P-256 is used.
	KeyAlgorithm KeyAlgorithm
	// NotBefore is the start of validity. If zero, one hour ago.
	NotBefore time.Time
	// NotAfter is the end of validity. If zero, NotBefore + DefaultCAValidity.
	NotAfter time.Time
	// MaxPathLen limits the number of subordinate CAs below this one. If zero,
	// no limit is set; use a negative value for "no subordinate CAs"
	// (pathLenConstraint 0).
	MaxPathLen int
	// CRLDistributionPoints are URLs written into the CA certificate. If
	// empty, none.
	CRLDistributionPoints []string
}

// CA is a certificate authority with its private key. Its exported fields are
// immutable after creation. A CA is safe for concurrent use and must not be
// copied.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key is the CA private key.
	Key crypto.Signer
	// CertPEM is Cert in PEM form.
	CertPEM []byte
	// KeyPEM is Key in PKCS #8 PEM form.
	KeyPEM []byte
	// Chain holds the certificates above this CA up to, but excluding, the
	// self-signed root, nearest first. It is empty for a root CA. Leaves issued
	// by this CA carry Cert followed by Chain as intermediates.
	Chain []*x509.Certificate

	crlNumber atomic.Int64
}

// NewCA creates a self-signed root CA with the given common name, an ECDSA
// P-256 key and ten years of validity.
func NewCA(commonName string) (*CA, error) {
	return NewCAWithOptions(CAOptions{CommonName: commonName})
}

// NewCAWithOptions creates a self-signed root CA described by opts.
func NewCAWithOptions(opts CAOptions) (*CA, error) {
	return newCA(opts, nil)
}

// IssueCA creates a subordinate (intermediate) CA signed by ca.
func (ca *CA) IssueCA(opts CAOptions) (*CA, error) {
	return newCA(opts, ca)
}

func newCA(opts CAOptions, parent *CA) (*CA, error) {
	if opts.CommonName == "" {
		return nil, errors.New("pki: CA common name is empty")
	}
	notBefore, notAfter, err := validity(opts.NotBefore, opts.NotAfter, DefaultCAValidity)
	if err != nil {
		return nil, err
	}
	key, err := GenerateKey(opts.KeyAlgorithm)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: opts.Organization},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: opts.CRLDistributionPoints,
	}
	switch {
	case opts.MaxPathLen > 0:
		tmpl.MaxPathLen = opts.MaxPathLen
	case opts.MaxPathLen < 0:
		tmpl.MaxPathLen = 0
		tmpl.MaxPathLenZero = true
	default:
		tmpl.MaxPathLen = -1
	}
	signerCert, signerKey := tmpl, key
	var chain []*x509.Certificate
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
		if parent.isRoot() {
			chain = nil
		} else {
			chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate %q: %w", opts.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new CA certificate: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: EncodeCertPEM(cert),
		KeyPEM:  keyPEM,
		Chain:   chain,
	}, nil
}

// LoadCA reads a CA from its PEM certificate and PEM private key, for example
// the files written by [Init]. certPEM may hold further certificates after the
// CA's own: they become Chain. It fails when the certificate is not a CA or the
// key does not belong to it.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: certificate %q is not a CA", cert.Subject.CommonName)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: private key does not match CA certificate %q", cert.Subject.CommonName)
	}
	ca := &CA{Cert: cert, Key: key, CertPEM: EncodeCertPEM(cert), Chain: certs[1:]}
	if ca.KeyPEM, err = EncodeKeyPEM(key); err != nil {
		return nil, err
	}
	return ca, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// isRoot reports whether the CA certificate is self-signed.
func (ca *CA) isRoot() bool {
	return ca.Cert.CheckSignatureFrom(ca.Cert) == nil
}

// Pool returns a new certificate pool that holds only ca.Cert. For a
// subordinate CA this pins trust to that CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Request describes a leaf certificate to issue.
type Request struct {
	// CommonName is the subject common name. CommonName and the SAN lists
	// must not all be empty.
	CommonName string
	// SerialNumber is the subject serialNumber attribute (OID 2.5.4.5), not
	// the certificate serial number. Odette's certificate policy puts the
	// partner's Odette ID here. If empty, the attribute is absent.
	SerialNumber string
	// Organization is the subject organization. If empty, none is set.
	Organization []string
	// OrganizationalUnit is the subject organizational unit. If empty, none.
	OrganizationalUnit []string
	// Country is the subject country. If empty, none.
	Country []string
	// DNSNames are DNS subject alternative names. If empty, none.
	DNSNames []string
	// IPAddresses are IP subject alternative names. If empty, none.
	IPAddresses []net.IP
	// URIs are URI subject alternative names. If empty, none.
	URIs []*url.URL
	// EmailAddresses are e-mail subject alternative names. If empty, none.
	EmailAddresses []string
	// Usage selects the extended key usages. If zero, UsageServer|UsageClient.
	Usage Usage
	// NotBefore is the start of validity. If zero, one hour ago.
	NotBefore time.Time
	// NotAfter is the end of validity. If zero, NotBefore +
	// DefaultLeafValidity. It may lie in the past, to make expired
	// certificates for tests.
	NotAfter time.Time
	// CRLDistributionPoints are the URLs of the CRL distribution points
	// extension. If empty, the extension is absent.
	CRLDistributionPoints []string
	// KeyAlgorithm is the key type generated when Key is nil. If zero, ECDSA
	// P-256.
	KeyAlgorithm KeyAlgorithm
	// Key, if not nil, is certified instead of a newly generated key (to
	// renew a certificate with the same key).
	Key crypto.Signer
}

// Leaf is an issued end-entity certificate with its key.
type Leaf struct {
	// Cert is the leaf certificate.
	Cert *x509.Certificate
	// Key is the private key of Cert.
	Key crypto.Signer
	// CertPEM is the chain in PEM form: Cert, then the issuing CA if it is
	// not a root, then that CA's chain. This is what a TLS peer presents.
	CertPEM []byte
	// KeyPEM is Key in PKCS #8 PEM form.
	KeyPEM []byte
	// TLS is the chain and key ready for tls.Config.Certificates; its Leaf
	// field is set.
	TLS tls.Certificate
}

// Issue creates a leaf certificate signed by ca.
func (ca *CA) Issue(req Request) (*Leaf, error) {
	if req.CommonName == "" && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 &&
		len(req.URIs) == 0 && len(req.EmailAddresses) == 0 {
		return nil, errors.New("pki: request has neither a common name nor a subject alternative name")
	}
	if req.Usage&^(UsageServer|UsageClient) != 0 {
		return nil, fmt.Errorf("pki: unknown usage bits %v", req.Usage)
	}
	usage := req.Usage
	if usage == 0 {
		usage = UsageServer | UsageClient
	}
	notBefore, notAfter, err := validity(req.NotBefore, req.NotAfter, DefaultLeafValidity)
	if err != nil {
		return nil, err
	}
	key := req.Key
	if key == nil {
		if key, err = GenerateKey(req.KeyAlgorithm); err != nil {
			return nil, err
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, ok := key.Public().(*rsa.PublicKey); ok {
		// RSA key exchange in TLS 1.2 encrypts with the certificate key.
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         req.CommonName,
			SerialNumber:       req.SerialNumber,
			Organization:       req.Organization,
			OrganizationalUnit: req.OrganizationalUnit,
			Country:            req.Country,
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           usage.extKeyUsage(),
		BasicConstraintsValid: true,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		URIs:                  req.URIs,
		EmailAddresses:        req.EmailAddresses,
		CRLDistributionPoints: req.CRLDistributionPoints,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue certificate %q: %w", req.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new certificate: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	chain := ca.presentedChain()
	tc := tls.Certificate{
		Certificate: [][]byte{cert.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}
	certPEM := EncodeCertPEM(cert)
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
		certPEM = append(certPEM, EncodeCertPEM(c)...)
	}
	return &Leaf{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM, TLS: tc}, nil
}

// presentedChain returns the CA certificates a leaf of ca presents after
// itself: none for a root CA, else ca.Cert and its chain.
func (ca *CA) presentedChain() []*x509.Certificate {
	if ca.isRoot() {
		return nil
	}
	return append([]*x509.Certificate{ca.Cert}, ca.Chain...)
}

// RevokedCert is one entry of a CRL.
type RevokedCert struct {
	// SerialNumber is the certificate serial number of the revoked
	// certificate. It must not be nil.
	SerialNumber *big.Int
	// RevokedAt is the revocation time. If zero, the CRL's thisUpdate.
	RevokedAt time.Time
	// ReasonCode is the RFC 5280 CRLReason (1 keyCompromise, 4 superseded,
	// …). If zero, no reason is given (unspecified).
	ReasonCode int
}

// CRL creates a DER-encoded X.509 CRL signed by ca listing revoked. Each call
// uses the next CRL number of ca, starting at 1, so later CRLs of one CA
// supersede earlier ones. nextUpdate must be after thisUpdate.
func (ca *CA) CRL(revoked []RevokedCert, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if thisUpdate.IsZero() || !nextUpdate.After(thisUpdate) {
		return nil, fmt.Errorf("pki: CRL nextUpdate %v is not after thisUpdate %v", nextUpdate, thisUpdate)
	}
	if ca.Cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("pki: CA %q lacks the cRLSign key usage", ca.Cert.Subject.CommonName)
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for i, r := range revoked {
		if r.SerialNumber == nil {
			return nil, fmt.Errorf("pki: CRL entry %d has no serial number", i)
		}
		at := r.RevokedAt
		if at.IsZero() {
			at = thisUpdate
		}
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   r.SerialNumber,
			RevocationTime: at,
			ReasonCode:     r.ReasonCode,
		})
	}
	tmpl := &x509.RevocationList{
		Number:                    big.NewInt(ca.crlNumber.Add(1)),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CRL of %q: %w", ca.Cert.Subject.CommonName, err)
	}
	return der, nil
}

// validity applies the defaults for a validity period and checks it.
func validity(notBefore, notAfter time.Time, def time.Duration) (time.Time, time.Time, error) {
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-backdate)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.Add(def)
	}
	if !notAfter.After(notBefore) {
		return time.Time{}, time.Time{}, fmt.Errorf("pki: NotAfter %v is not after NotBefore %v", notAfter, notBefore)
	}
	return notBefore, notAfter, nil
}

// randomSerial returns a random positive 127-bit certificate serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// EncodeCertPEM returns cert as one PEM "CERTIFICATE" block.
func EncodeCertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKeyPEM returns key as one PKCS #8 PEM "PRIVATE KEY" block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeCRLPEM returns a DER CRL as one PEM "X509 CRL" block.
func EncodeCRLPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// ParseCertificatesPEM parses every block of data, which must all be
// "CERTIFICATE" blocks. Unlike x509.CertPool.AppendCertsFromPEM it fails on
// anything it cannot use instead of skipping it, and on input without any
// certificate.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for i := 0; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pki: PEM block %d is %q, want CERTIFICATE", i, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: PEM block %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("pki: no PEM certificate found")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, errors.New("pki: trailing data after the last PEM certificate")
	}
	return certs, nil
}

// ParsePrivateKeyPEM parses the first PEM block of data as a private key in
// PKCS #8, PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY") form.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("pki: no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("pki: PEM block is %q, want a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", block.Type, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: private key of type %T cannot sign", key)
	}
	return s, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
