package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// Odette IDs of the revocation policy tests.
const (
	uncoveredID = "O0013000000NOCRL"  // certificate of a trusted CA without a CRL
	staleID     = "O0013000000STALE"  // certificate of a trusted CA whose CRL is past nextUpdate
	overrideID  = "O0013000000OVERRD" // certificate without a CRL; the partner overrides the policy
)

// revocationSystem starts a system whose configuration has the revocation policy global, two
// more trusted CAs — one without a CRL, one whose CRL's nextUpdate was a day ago — and partners
// with certificates of those CAs; the partner overrideID has the policy override. It returns
// the leaves by Odette ID.
func revocationSystem(t *testing.T, fx *fixture, global, override string) (*system, map[string]*pki.Leaf) {
	t.Helper()
	uncovered, err := pki.NewCA("e2e CA without CRL")
	if err != nil {
		t.Fatal(err)
	}
	stale, err := pki.NewCA("e2e CA with a stale CRL")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	staleCRL, err := stale.CRL(nil, now.Add(-8*24*time.Hour), now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"uncovered-ca.pem": uncovered.CertPEM, "stale-ca.pem": stale.CertPEM, "stale.crl": staleCRL} {
		if err := pki.WriteFile(filepath.Join(fx.Dir, name), data, pki.CertFileMode); err != nil {
			t.Fatal(err)
		}
	}
	leaves := map[string]*pki.Leaf{
		uncoveredID: fx.issue(t, uncovered, uncoveredID, nil),
		staleID:     fx.issue(t, stale, staleID, nil),
		overrideID:  fx.issue(t, uncovered, overrideID, nil),
		partnerID:   fx.partner(t, partnerID), // covered by a current CRL
	}
	sys := startSystem(t, fx, systemOptions{
		config: func(f *configfile.File) {
			f.Revocation = global
			f.TrustedCAFiles = append(f.TrustedCAFiles, "uncovered-ca.pem", "stale-ca.pem")
			f.CRLs = append(f.CRLs, configfile.CRL{File: "stale.crl", URL: "http://crl.stale.test/ca.crl"})
			f.Partners = append(f.Partners,
				configfile.Partner{OdetteID: uncoveredID}, configfile.Partner{OdetteID: staleID},
				configfile.Partner{OdetteID: overrideID, Revocation: override})
		},
		responder: func(c *endpoint.Config) {
			c.Partners[uncoveredID], c.Partners[staleID], c.Partners[overrideID] = "", "", ""
		},
	})
	return sys, leaves
}

// refusedInTLS dials as leaf and expects the TLS alert of a refused certificate on the first
// read; it returns the partner's local address.
func refusedInTLS(t *testing.T, fx *fixture, addr string, leaf *pki.Leaf) string {
	t.Helper()
	rp, err := servertest.DialPartner(addr, &leaf.TLS, fx.CompanyCA.Pool())
	if err != nil {
		t.Fatalf("TLS handshake of the partner: %v", err)
	}
	defer rp.Close()
	if _, err := rp.Read(10 * time.Second); err == nil || !strings.Contains(err.Error(), "remote error: tls: bad certificate") {
		t.Errorf("partner's first read = %v, want the TLS alert bad certificate", err)
	}
	return rp.Conn.LocalAddr().String()
}

// delivers sends one small file as the partner id with leaf and checks that it arrives; n is the
// responder's session count after it.
func delivers(t *testing.T, fx *fixture, sys *system, leaf *pki.Leaf, id string, n int) {
	t.Helper()
	f := makeFile(t, t.TempDir(), id+".dat", oftp2.FormatUnstructured, 32<<10, uint64(n))
	res, err := sendAs(t, fx, sys.partnerAddr(t), leaf, id, partnerPasswordOf(id), nil, f)
	if err != nil {
		t.Fatalf("partner session of %s: %v", id, err)
	}
	checkDelivered(t, res, sys.responderResults(t, n)[n-1], []testFile{f})
}

// partnerPasswordOf returns the SSID password the fixture's configuration expects of id.
func partnerPasswordOf(id string) string {
	if id == partnerID {
		return partnerPassword
	}
	return ""
}

// TestHardRevocation: with `revocation: hard`, a certificate that no configured CRL covers and
// one whose covering CRL is past its nextUpdate are refused in the TLS handshake with
// partner_revocation_unknown (reasons no_covering_crl and crl_stale) and nothing reaches the
// inside; a partner whose own policy is soft is admitted with a certificate of the same CA, and
// a certificate covered by a current CRL is admitted as before.
func TestHardRevocation(t *testing.T) {
	fx := newFixture(t)
	sys, leaves := revocationSystem(t, fx, "hard", "soft")
	addr := sys.partnerAddr(t)

	local := refusedInTLS(t, fx, addr, leaves[uncoveredID])
	sys.securityEvent(t, "partner_revocation_unknown", local, map[string]string{"reason": "no_covering_crl"})
	local = refusedInTLS(t, fx, addr, leaves[staleID])
	e, _ := sys.securityEvent(t, "partner_revocation_unknown", local, map[string]string{"reason": "crl_stale"})
	if e.Data["crl_url"] != "http://crl.stale.test/ca.crl" {
		t.Errorf("crl_stale event names CRL %v, want the stale CRL's URL", e.Data["crl_url"])
	}
	checkNothingInside(t, sys)

	delivers(t, fx, sys, leaves[overrideID], overrideID, 1)
	delivers(t, fx, sys, leaves[partnerID], partnerID, 2)
}

// TestSoftRevocation: the default policy keeps the documented soft-fail — a certificate without
// a covering CRL is accepted with partner_crl_missing and one with a stale CRL is accepted —
// while a partner whose own policy is hard is refused with partner_revocation_unknown.
func TestSoftRevocation(t *testing.T) {
	fx := newFixture(t)
	sys, leaves := revocationSystem(t, fx, "", "hard")
	addr := sys.partnerAddr(t)

	local := refusedInTLS(t, fx, addr, leaves[overrideID])
	sys.securityEvent(t, "partner_revocation_unknown", local, map[string]string{"reason": "no_covering_crl"})
	checkNothingInside(t, sys)

	delivers(t, fx, sys, leaves[uncoveredID], uncoveredID, 1)
	sys.serverLog.wait(t, "the server", "partner_crl_missing", map[string]string{"reason": "no_crl"})
	delivers(t, fx, sys, leaves[staleID], staleID, 2)
	if es := sys.serverLog.entries("partner_revocation_unknown", nil); len(es) != 1 {
		t.Errorf("%d partner_revocation_unknown events, want only the overriding partner's", len(es))
	}
}
