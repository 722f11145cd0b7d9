package revocation

import (
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smartproxy/internal/pki"
)

// opensslCnf is a minimal `openssl ca` configuration. $dir is the CA
// directory the test creates.
const opensslCnf = `
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = .
database         = $dir/index.txt
new_certs_dir    = $dir/newcerts
certificate      = $dir/ca.pem
private_key      = $dir/ca.key
serial           = $dir/serial
crlnumber        = $dir/crlnumber
default_md       = sha256
default_days     = 30
default_crl_days = 7
policy           = policy_any
unique_subject   = no
crl_extensions   = crl_ext

[ policy_any ]
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt             = no

[ req_dn ]
CN = unused

[ v3_ca ]
basicConstraints     = critical, CA:true
keyUsage             = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ usr_cert ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth, serverAuth
authorityKeyIdentifier = keyid
crlDistributionPoints  = URI:http://crl.example.test/openssl.crl

[ crl_ext ]
authorityKeyIdentifier = keyid:always
`

// TestOpenSSLCRL parses CRLs made by the real `openssl ca -gencrl` for an
// ECDSA, an RSA and an RSA-PSS CA. It skips only when openssl is missing,
// and fails instead when SMARTPROXY_REQUIRE_OPENSSL=1 (as in CI).
func TestOpenSSLCRL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("SMARTPROXY_REQUIRE_OPENSSL") == "1" {
			t.Fatalf("openssl not found and SMARTPROXY_REQUIRE_OPENSSL=1: %v", err)
		}
		t.Skipf("openssl not found (install Debian's openssl package to run this test): %v", err)
	}
	tests := []struct {
		name   string
		newkey []string
		sigopt []string
		alg    x509.SignatureAlgorithm
	}{
		{"ecdsa-p256", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}, nil, x509.ECDSAWithSHA256},
		{"rsa-2048", []string{"-newkey", "rsa:2048"}, nil, x509.SHA256WithRSA},
		{"rsa-pss", []string{"-newkey", "rsa:2048"},
			[]string{"-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"}, x509.SHA256WithRSAPSS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			run := func(args ...string) {
				t.Helper()
				cmd := exec.Command(openssl, args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "OPENSSL_CONF="+filepath.Join(dir, "openssl.cnf"))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}
			write := func(name, content string) {
				t.Helper()
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write("openssl.cnf", opensslCnf)
			write("index.txt", "")
			write("serial", "1000\n")
			write("crlnumber", "2a\n")
			if err := os.Mkdir(filepath.Join(dir, "newcerts"), 0o700); err != nil {
				t.Fatal(err)
			}

			req := append([]string{"req", "-x509", "-config", "openssl.cnf", "-extensions", "v3_ca", "-nodes",
				"-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/O=SmartProxy Test/CN=OpenSSL " + tt.name + " CA"},
				tt.newkey...)
			run(req...)
			for _, leaf := range []string{"revoked", "good"} {
				run(append([]string{"req", "-new", "-config", "openssl.cnf", "-nodes", "-keyout", leaf + ".key",
					"-out", leaf + ".csr", "-subj", "/CN=" + leaf + ".partner.example.test"}, tt.newkey...)...)
				run(append([]string{"ca", "-batch", "-config", "openssl.cnf", "-extensions", "usr_cert",
					"-in", leaf + ".csr", "-out", leaf + ".pem"}, tt.sigopt...)...)
			}
			run("ca", "-config", "openssl.cnf", "-revoke", "revoked.pem", "-crl_reason", "keyCompromise")
			run(append([]string{"ca", "-config", "openssl.cnf", "-gencrl", "-out", "crl.pem"}, tt.sigopt...)...)
			run("crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der")

			load := func(name string) []byte {
				t.Helper()
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			cert := func(name string) *x509.Certificate {
				t.Helper()
				certs, err := pki.ParseCertificatesPEM(load(name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return certs[0]
			}
			caCert, revoked, good := cert("ca.pem"), cert("revoked.pem"), cert("good.pem")

			now := time.Now()
			crl, err := Parse(load("crl.der"), caCert, now)
			if err != nil {
				t.Fatalf("Parse(openssl CRL) error = %v", err)
			}
			if got := crl.SignatureAlgorithm(); got != tt.alg {
				t.Errorf("SignatureAlgorithm() = %v, want %v", got, tt.alg)
			}
			if got, want := crl.Len(), 1; got != want {
				t.Errorf("Len() = %d, want %d", got, want)
			}
			if got := crl.Number(); got == nil || got.Int64() != 0x2a {
				t.Errorf("Number() = %v, want 42", got)
			}
			if d := crl.NextUpdate().Sub(crl.ThisUpdate()); d != 7*24*time.Hour {
				t.Errorf("NextUpdate() - ThisUpdate() = %v, want 168h", d)
			}
			if reason, ok := crl.Lookup(revoked.SerialNumber); !ok || reason != ReasonKeyCompromise {
				t.Errorf("Lookup(revoked %v) = %v, %t, want keyCompromise, true", revoked.SerialNumber, reason, ok)
			}
			if crl.IsRevoked(good.SerialNumber) {
				t.Errorf("IsRevoked(good %v) = true, want false", good.SerialNumber)
			}

			ch := NewChecker(crl.WithURL("http://crl.example.test/openssl.crl"))
			for _, c := range []struct {
				name string
				cert *x509.Certificate
				want Status
			}{{"revoked", revoked, Revoked}, {"good", good, Good}} {
				if st, err := ch.Check(c.cert, caCert); err != nil || st != c.want {
					t.Errorf("Check(%s) = %v, %v, want %v, nil", c.name, st, err, c.want)
				}
				if m := ch.MissingDistributionPoints(c.cert); len(m) != 0 {
					t.Errorf("MissingDistributionPoints(%s) = %q, want none", c.name, m)
				}
			}
		})
	}
}
