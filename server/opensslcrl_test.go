package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
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

// TestDialPartnerRevokedByOpensslCRL: a partner we call whose server certificate a CRL made by
// `openssl ca` lists is refused inside the handshake (outgoing_revoked, ESID 12 for the internal
// initiator), and receives no byte of OFTP2; a partner it does not list is reached.
func TestDialPartnerRevokedByOpensslCRL(t *testing.T) {
	p := servertest.NewPKI(t)
	s, _ := dialServer(t, p)
	revoked := servertest.IssuePartner(t, p.PartnerCA, dialPartnerID, func(r *pki.Request) {
		r.IPAddresses, r.Usage = []net.IP{net.IPv4(127, 0, 0, 1)}, pki.UsageServer
	})
	crl := opensslCRL(t, p.PartnerCA, revoked)
	withCRL := func(c *tunnelv1.SecurityConfig) {
		c.Crls = []*tunnelv1.Crl{{Id: "openssl", Url: "http://crl.example/openssl.crl", Der: crl}}
	}

	tp := startTLSPartner(t, p, revoked.TLS)
	pol, route := dialPolicy(t, p, tp.addr, withCRL)
	conn, ref := s.dialPartner(context.Background(), pol, route, s.log)
	if ref == nil {
		conn.Close()
		t.Fatal("dialPartner() to a revoked partner succeeded")
	}
	if ref.event != EventOutgoingRevoked || ref.esid != oftp2.ESIDSecureAuthIncompatible || ref.fields["crl_reason"] != "keyCompromise" {
		t.Errorf("refusal = %s ESID %s fields %v; want %s, ESID 12, crl_reason keyCompromise", ref.event, ref.esid, ref.fields, EventOutgoingRevoked)
	}
	if pc := tp.next(t); len(pc.got) != 0 {
		t.Errorf("the revoked partner received %q", pc.got)
	}

	good := startTLSPartner(t, p, partnerLeaf(t, p.PartnerCA, dialPartnerID, nil))
	pol, route = dialPolicy(t, p, good.addr, withCRL)
	conn, ref = s.dialPartner(context.Background(), pol, route, s.log)
	if ref != nil {
		t.Fatalf("dialPartner() to a partner the CRL does not list: %v", ref)
	}
	conn.Close()
}
