package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/internal/pki"
)

// Odette IDs, passwords and the Proxy ID the tests use.
const (
	// partnerID is an enabled partner with an SSID password.
	partnerID       = "O0013000000PARTNER"
	partnerPassword = "PARTNPW"
	// healthyID is an enabled partner without a password; parallel healthy sessions use it.
	healthyID = "O0013000000HEALTHY"
	// disabledID is configured but disabled.
	disabledID = "O0013000000DISABLED"
	// revokedGoID's certificate is listed in the partner CA's CRL made with crypto/x509.
	revokedGoID = "O0013000000REVOKEDGO"
	// revokedSSLID's certificate is listed in the second partner CA's CRL made by `openssl ca`.
	revokedSSLID = "O0013000000REVOKEDSSL"
	// unknownID is not configured at all.
	unknownID = "O0013000000NOBODY"
	// companyID is the internal responder's Odette ID.
	companyID       = "O0013000000COMPANY"
	companyPassword = "COMPANY"
	// testProxyID is the Proxy ID of the in-process server; its license is issued for it.
	testProxyID = "SPX-0000-0000-0000-0E2E"
)

// File names in a fixture's directory.
const (
	fileTunnelCA     = "tunnel-ca.pem"
	fileTunnelServer = "server.pem"
	fileTunnelSKey   = "server-key.pem"
	fileTunnelClient = "client.pem"
	fileTunnelCKey   = "client-key.pem"
	fileCompany      = "company.pem"
	fileCompanyKey   = "company-key.pem"
	fileCompanyCA    = "company-ca.pem"
	filePartnerCA    = "partner-ca.pem"
	filePartnerCA2   = "partner-ca2.pem"
	fileCRLGo        = "partner-ca.crl"
	fileCRLOpenSSL   = "partner-ca2-crl.pem"
	fileClientConfig = "client.json"
)

// fixture is the PKI of a test system, written into Dir: the tunnel CA with the daemons'
// tunnel certificates, the company certificate partners see, two trusted partner CAs (the
// first with a CRL made by crypto/x509, the second with one made by `openssl ca` when openssl
// is installed) and a foreign CA nobody trusts. Its fields are immutable after newFixture.
type fixture struct {
	Dir string

	TunnelCA     *pki.CA
	TunnelServer *pki.Leaf
	TunnelClient *pki.Leaf

	CompanyCA *pki.CA
	Company   *pki.Leaf

	PartnerCA  *pki.CA // trusted; CRL by crypto/x509 lists RevokedGo
	PartnerCA2 *pki.CA // trusted; CRL by openssl lists RevokedSSL (when OpenSSL is true)
	ForeignCA  *pki.CA // not trusted

	RevokedGo  *pki.Leaf
	RevokedSSL *pki.Leaf
	// OpenSSL is true when the second CA's CRL was made by `openssl ca`; without openssl the
	// second CA has no CRL.
	OpenSSL bool

	mu     sync.Mutex
	leaves map[string]*pki.Leaf // partner certificates of PartnerCA by Odette ID
}

// newFixture creates the certificates and writes them into a new temporary directory. It
// fails t on error; it skips nothing (see requireOpenSSL for the openssl part).
func newFixture(t testing.TB) *fixture {
	t.Helper()
	fx := &fixture{Dir: t.TempDir(), leaves: make(map[string]*pki.Leaf)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("fixture: %v", err)
		}
	}
	var err error
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	fx.TunnelCA, err = pki.NewCAWithOptions(pki.CAOptions{CommonName: "e2e tunnel CA", MaxPathLen: -1})
	must(err)
	fx.TunnelServer, err = fx.TunnelCA.Issue(pki.Request{CommonName: "smartproxy-server", DNSNames: []string{"localhost"}, IPAddresses: loopback, Usage: pki.UsageServer})
	must(err)
	fx.TunnelClient, err = fx.TunnelCA.Issue(pki.Request{CommonName: "smartproxy-client", DNSNames: []string{"smartproxy-client"}, Usage: pki.UsageClient})
	must(err)
	fx.CompanyCA, err = pki.NewCA("e2e company CA")
	must(err)
	fx.Company, err = fx.CompanyCA.Issue(pki.Request{CommonName: "oftp.company.test", SerialNumber: companyID,
		DNSNames: []string{"localhost"}, IPAddresses: loopback, Usage: pki.UsageServer | pki.UsageClient})
	must(err)
	fx.PartnerCA, err = pki.NewCA("e2e partner CA")
	must(err)
	fx.PartnerCA2, err = pki.NewCA("e2e partner CA 2")
	must(err)
	fx.ForeignCA, err = pki.NewCA("e2e foreign CA")
	must(err)

	fx.RevokedGo = fx.issue(t, fx.PartnerCA, revokedGoID, nil)
	fx.RevokedSSL = fx.issue(t, fx.PartnerCA2, revokedSSLID, nil)
	now := time.Now()
	crl, err := fx.PartnerCA.CRL([]pki.RevokedCert{{SerialNumber: new(big.Int).Set(fx.RevokedGo.Cert.SerialNumber), ReasonCode: 1}},
		now.Add(-time.Hour), now.Add(7*24*time.Hour))
	must(err)

	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		must(pki.WriteFile(filepath.Join(fx.Dir, name), data, mode))
	}
	write(fileTunnelCA, fx.TunnelCA.CertPEM, pki.CertFileMode)
	write(fileTunnelServer, fx.TunnelServer.CertPEM, pki.CertFileMode)
	write(fileTunnelSKey, fx.TunnelServer.KeyPEM, pki.KeyFileMode)
	write(fileTunnelClient, fx.TunnelClient.CertPEM, pki.CertFileMode)
	write(fileTunnelCKey, fx.TunnelClient.KeyPEM, pki.KeyFileMode)
	write(fileCompany, fx.Company.CertPEM, pki.CertFileMode)
	write(fileCompanyKey, fx.Company.KeyPEM, pki.KeyFileMode)
	write(fileCompanyCA, fx.CompanyCA.CertPEM, pki.CertFileMode)
	write(filePartnerCA, fx.PartnerCA.CertPEM, pki.CertFileMode)
	write(filePartnerCA2, fx.PartnerCA2.CertPEM, pki.CertFileMode)
	write(fileCRLGo, crl, pki.CertFileMode)

	if der, ok := opensslCRL(t, fx.PartnerCA2, fx.RevokedSSL); ok {
		write(fileCRLOpenSSL, pki.EncodeCRLPEM(der), pki.CertFileMode)
		fx.OpenSSL = true
	}
	return fx
}

// issue issues a partner certificate from ca whose subject serialNumber is odetteID (the
// Odette certificate policy); mod may change the request.
func (fx *fixture) issue(t testing.TB, ca *pki.CA, odetteID string, mod func(*pki.Request)) *pki.Leaf {
	t.Helper()
	// Names for loopback: every partner certificate can also serve a partner's OFTP2 server
	// that the proxy calls in outgoing sessions.
	req := pki.Request{CommonName: "partner " + odetteID, SerialNumber: odetteID, Organization: []string{"Partner " + odetteID},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Usage: pki.UsageClient | pki.UsageServer}
	if mod != nil {
		mod(&req)
	}
	leaf, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("fixture: issue %s: %v", odetteID, err)
	}
	return leaf
}

// partner returns PartnerCA's certificate for odetteID, issued once per fixture.
func (fx *fixture) partner(t testing.TB, odetteID string) *pki.Leaf {
	t.Helper()
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if l := fx.leaves[odetteID]; l != nil {
		return l
	}
	l := fx.issue(t, fx.PartnerCA, odetteID, nil)
	fx.leaves[odetteID] = l
	return l
}

// partnerTLS returns the TLS configuration of a partner presenting cert (none if nil) that
// trusts the company CA, as a partner of the company would.
func (fx *fixture) partnerTLS(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: fx.CompanyCA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// config returns the client configuration file of the fixture: the partner listener at
// listen, the internal responder at internal (plain TCP), both partner CAs trusted with their
// CRLs, and the partners the tests use. The rate limits are generous, since every test partner
// connects from 127.0.0.1; the deadlines are the documented defaults (tests of the deadlines
// shorten them).
func (fx *fixture) config(listen, internal string) configfile.File {
	no := false
	f := configfile.File{
		PartnerListenAddress: listen,
		CompanyCertificate:   fileCompany,
		CompanyKey:           fileCompanyKey,
		TrustedCAFiles:       []string{filePartnerCA, filePartnerCA2},
		CRLs:                 []configfile.CRL{{File: fileCRLGo, URL: "http://crl.partner-ca.test/ca.crl"}},
		Partners: []configfile.Partner{
			{OdetteID: partnerID, Name: "Partner AG", Password: partnerPassword},
			{OdetteID: healthyID, Name: "Healthy GmbH"},
			{OdetteID: disabledID, Name: "Former partner", Enabled: &no},
			{OdetteID: revokedGoID, Name: "Revoked by the Go CRL"},
			{OdetteID: revokedSSLID, Name: "Revoked by the OpenSSL CRL"},
		},
		Limits: configfile.Limits{
			MaxSessions:   200,
			MaxHandshakes: 250,
			PerIPRate:     1e5,
			PerIPBurst:    1e5,
			// Every test partner connects from 127.0.0.1: no per-source or per-network cap
			// (TestAdmissionUnderAttack runs the defaults).
			MaxHandshakesPerSource: 1e5,
			MaxHandshakesPerPrefix: 1e5,
			HandshakeTimeout:       configfile.Duration(10 * time.Second),
			SSIDTimeout:            configfile.Duration(endpointTimeout),
			IdleTimeout:            configfile.Duration(2 * time.Minute),
		},
		InternalServer: &configfile.InternalServer{Address: internal, ConnectTimeout: configfile.Duration(5 * time.Second),
			SSRMTimeout: configfile.Duration(10 * time.Second)},
		LogLevel: "info",
	}
	if fx.OpenSSL {
		f.CRLs = append(f.CRLs, configfile.CRL{File: fileCRLOpenSSL, URL: "http://crl.partner-ca2.test/ca.crl"})
	}
	return f
}

// writeConfig writes c as the fixture's client configuration file and returns its path.
func (fx *fixture) writeConfig(t testing.TB, c configfile.File) string {
	t.Helper()
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(fx.Dir, fileClientConfig)
	if err := pki.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeLicense writes a development license for proxyID, valid for a day, and returns its path.
// mod, if not nil, changes the license before it is signed.
func writeLicense(t testing.TB, dir, proxyID string, mod func(*license.License)) string {
	t.Helper()
	key, keyID := devkey.SigningKey()
	lic := license.License{ProxyID: proxyID, Customer: "e2e", NotAfter: time.Now().Add(24 * time.Hour)}
	if mod != nil {
		mod(&lic)
	}
	file, err := license.Sign(lic, key, keyID)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "license")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// opensslCnf configures `openssl ca` for a CA whose certificate and key are ca.pem and
// ca.key in the working directory.
const opensslCnf = `
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = .
database         = $dir/index.txt
new_certs_dir    = $dir
certificate      = $dir/ca.pem
private_key      = $dir/ca.key
serial           = $dir/serial
crlnumber        = $dir/crlnumber
default_md       = sha256
default_days     = 30
default_crl_days = 7
policy           = policy_any
crl_extensions   = crl_ext

[ policy_any ]
commonName = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always
`

// requireOpenSSL reports whether openssl is installed. Without it, the test is skipped,
// unless SMARTPROXY_REQUIRE_OPENSSL=1, which makes it fail (as in CI).
func requireOpenSSL(t testing.TB) string {
	t.Helper()
	return requireTool(t, "openssl", "SMARTPROXY_REQUIRE_OPENSSL")
}

// opensslCRL revokes leaf with the real `openssl ca -revoke` against ca (its certificate and
// key written for openssl) and returns the DER of the CRL `openssl ca -gencrl` makes. ok is
// false when openssl is not installed (and not required).
func opensslCRL(t testing.TB, ca *pki.CA, leaf *pki.Leaf) (der []byte, ok bool) {
	t.Helper()
	openssl := requireOpenSSL(t)
	if openssl == "" {
		return nil, false
	}
	dir := t.TempDir()
	files := map[string][]byte{
		"openssl.cnf": []byte(opensslCnf), "index.txt": nil, "serial": []byte("1000\n"), "crlnumber": []byte("07\n"),
		"ca.pem": ca.CertPEM, "ca.key": ca.KeyPEM, "revoked.pem": leaf.CertPEM,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "OPENSSL_CONF="+filepath.Join(dir, "openssl.cnf"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ca", "-config", "openssl.cnf", "-revoke", "revoked.pem", "-crl_reason", "keyCompromise")
	run("ca", "-config", "openssl.cnf", "-gencrl", "-out", "crl.pem")
	run("crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der")
	der, err := os.ReadFile(filepath.Join(dir, "crl.der"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("the CRL openssl made does not parse: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("the CRL openssl made lists %d entries, want exactly the serial %v", len(crl.RevokedCertificateEntries), leaf.Cert.SerialNumber)
	}
	return der, true
}
