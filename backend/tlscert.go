package backend

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"smartproxy/internal/pki"
)

// Names of the generated certificate files in the data directory.
const (
	GeneratedCertFile = "tls/api.crt"
	GeneratedKeyFile  = "tls/api.key"
)

// generatedValidity is the validity of a generated certificate.
const generatedValidity = 5 * 365 * 24 * time.Hour

// EnsureSelfSigned returns the paths of the certificate and key in
// dataDir/tls, generating a self-signed ECDSA P-256 certificate for
// localhost, 127.0.0.1, ::1, the host name and hosts when there is none. It
// reports whether it created one. The key is written with mode 0600.
func EnsureSelfSigned(dataDir string, hosts []string, now time.Time) (certFile, keyFile string, created bool, err error) {
	certFile, keyFile = filepath.Join(dataDir, GeneratedCertFile), filepath.Join(dataDir, GeneratedKeyFile)
	_, cerr := os.Stat(certFile)
	_, kerr := os.Stat(keyFile)
	switch {
	case cerr == nil && kerr == nil:
		return certFile, keyFile, false, nil
	case cerr == nil || kerr == nil:
		return "", "", false, fmt.Errorf("only one of %s and %s exists; remove it to have a new pair generated", certFile, keyFile)
	case !errors.Is(cerr, fs.ErrNotExist):
		return "", "", false, cerr
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return "", "", false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", false, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "smartproxy-api", Organization: []string{"SmartProxy backend (self-signed)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(generatedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	names = append(names, hosts...)
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", false, err
	}
	if err := pki.WriteKeyFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return "", "", false, err
	}
	if err := pki.WriteCertFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, true, nil
}

// Fingerprint returns the SHA-256 fingerprint of a certificate as
// colon-separated upper-case hex, the form browsers and openssl show.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// CertificateFiles serves a certificate and key from files and reloads them
// when they change, so that a renewed certificate is used by new
// handshakes without a restart.
type CertificateFiles struct {
	certFile, keyFile string
	checkEvery        time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

// LoadCertificateFiles loads the PEM certificate chain and key.
func LoadCertificateFiles(certFile, keyFile string) (*CertificateFiles, error) {
	cf := &CertificateFiles{certFile: certFile, keyFile: keyFile, checkEvery: 5 * time.Second}
	if err := cf.load(); err != nil {
		return nil, err
	}
	return cf, nil
}

func (cf *CertificateFiles) load() error {
	cert, err := tls.LoadX509KeyPair(cf.certFile, cf.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s / key %s: %w", cf.certFile, cf.keyFile, err)
	}
	mt, err := cf.mtime()
	if err != nil {
		return err
	}
	cf.cert, cf.modTime = &cert, mt
	return nil
}

func (cf *CertificateFiles) mtime() (time.Time, error) {
	var latest time.Time
	for _, p := range []string{cf.certFile, cf.keyFile} {
		st, err := os.Stat(p)
		if err != nil {
			return time.Time{}, err
		}
		if st.ModTime().After(latest) {
			latest = st.ModTime()
		}
	}
	return latest, nil
}

// Leaf returns the current leaf certificate.
func (cf *CertificateFiles) Leaf() *x509.Certificate {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	return cf.cert.Leaf
}

// GetCertificate implements tls.Config.GetCertificate. It looks at the
// files at most every few seconds and reloads them when they changed; a
// pair that does not load keeps the previous one in use.
func (cf *CertificateFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if now := time.Now(); now.Sub(cf.checked) >= cf.checkEvery {
		cf.checked = now
		if mt, err := cf.mtime(); err == nil && mt.After(cf.modTime) {
			old := cf.cert
			if err := cf.load(); err != nil {
				cf.cert = old
			}
		}
	}
	return cf.cert, nil
}

// Reload loads the files now, whatever their modification time (SIGHUP). A pair that does not
// load keeps the previous one in use and is returned as the error.
func (cf *CertificateFiles) Reload() error {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	old := cf.cert
	if err := cf.load(); err != nil {
		cf.cert = old
		return err
	}
	cf.checked = time.Now()
	return nil
}

// TLSConfig returns a server TLS configuration (TLS 1.2 or newer) that uses
// cf's certificate.
func (cf *CertificateFiles) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cf.GetCertificate}
}
