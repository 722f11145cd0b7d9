package server

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/server/servertest"
)

// opensslCRL makes a DER CRL for ca with the real `openssl ca -gencrl` command, listing the
// certificates in revoked as revoked (keyCompromise).
func opensslCRL(t *testing.T, ca *pki.CA, revoked ...*pki.Leaf) []byte {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("SMARTPROXY_REQUIRE_OPENSSL") == "1" {
			t.Fatalf("openssl is required (SMARTPROXY_REQUIRE_OPENSSL=1) but not found: %v", err)
		}
		t.Skip("openssl not installed; set SMARTPROXY_REQUIRE_OPENSSL=1 to make this a failure")
	}
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644))
	must(os.WriteFile(filepath.Join(dir, "ca-key.pem"), ca.KeyPEM, 0o600))
	var index strings.Builder
	stamp := func(tm time.Time) string { return tm.UTC().Format("060102150405Z") }
	for _, l := range revoked {
		serial := fmt.Sprintf("%X", l.Cert.SerialNumber)
		if len(serial)%2 == 1 {
			serial = "0" + serial
		}
		// index.txt: status, expiry, revocation[,reason], serial, file name, subject.
		fmt.Fprintf(&index, "R\t%s\t%s,keyCompromise\t%s\tunknown\t/CN=%s\n",
			stamp(l.Cert.NotAfter), stamp(time.Now().Add(-time.Minute)), serial, l.Cert.Subject.CommonName)
	}
	must(os.WriteFile(filepath.Join(dir, "index.txt"), []byte(index.String()), 0o644))
	must(os.WriteFile(filepath.Join(dir, "crlnumber"), []byte("1000\n"), 0o644))
	cnf := fmt.Sprintf(`[ ca ]
default_ca = CA_default
[ CA_default ]
dir = %s
database = $dir/index.txt
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca-key.pem
default_md = sha256
default_crl_days = 7
`, dir)
	must(os.WriteFile(filepath.Join(dir, "openssl.cnf"), []byte(cnf), 0o644))
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ca", "-config", "openssl.cnf", "-gencrl", "-out", "crl.pem")
	run("crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der")
	der, err := os.ReadFile(filepath.Join(dir, "crl.der"))
	must(err)
	return der
}

func TestAdmissionRevokedByOpensslCRL(t *testing.T) {
	p := servertest.NewPKI(t)
	revoked := p.Partner(t, "O0013REVOKED", nil)
	good := p.Partner(t, "O0013PARTNER", nil)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"), servertest.EnabledPartner("O0013REVOKED"))
	cfg.Crls = []*tunnelv1.Crl{{Id: "openssl", Url: "http://crl.example/openssl.crl", Der: opensslCRL(t, p.PartnerCA, revoked)}}
	env := newEnv(t, p, cfg, envOptions{})

	rp, err := servertest.DialPartner(env.s.PartnerAddr(), &revoked.TLS, p.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if _, err := rp.Read(10 * time.Second); !servertest.IsTLSAlert(err) {
		t.Errorf("revoked partner: first read = %v, want a TLS alert", err)
	}
	entry, ev := env.waitSecurityEvent(t, EventPartnerRevoked, rp.Conn.LocalAddr().String())
	if entry.Level != logrus.WarnLevel || ev.GetFields()["crl_reason"] != "keyCompromise" {
		t.Errorf("partner_revoked: level %s, fields %v; want warning with crl_reason keyCompromise", entry.Level, ev.GetFields())
	}
	// A certificate the openssl CRL does not list is admitted up to the inside.
	rawSession(t, env, good, "O0013PARTNER")
	if n := len(env.client.SessionOpens()); n != 1 {
		t.Errorf("%d SessionOpens, want 1 for the partner whose certificate is not revoked", n)
	}
}
