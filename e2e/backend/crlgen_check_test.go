package backend_test

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"smartproxy/internal/pki"
	"smartproxy/internal/revocation"
)

// TestLargeCRLGenerator checks the generator against the DMZ server's own parser.
func TestLargeCRLGenerator(t *testing.T) {
	ca, err := pki.NewCA("Generator CA")
	if err != nil {
		t.Fatal(err)
	}
	revoked := big.NewInt(0x7e57)
	der := largeCRL(t, ca, 1000, 1, revoked)
	crl, err := revocation.Parse(der, ca.Cert, time.Now())
	if err != nil {
		t.Fatalf("revocation.Parse(generated CRL) = %v", err)
	}
	if crl.Len() != 1001 || !crl.IsRevoked(revoked) || crl.IsRevoked(big.NewInt(0x7e58)) {
		t.Errorf("generated CRL: %d entries, revoked %v, other %v; want 1001 entries with the given serial", crl.Len(), crl.IsRevoked(revoked), crl.IsRevoked(big.NewInt(0x7e58)))
	}
}

// TestLargeCRLGeneratorStandardParser checks a small list of the generator with the standard
// library's parser, which shares no code with the generator or the server's parser: a
// structure error made by both would otherwise pass unnoticed.
func TestLargeCRLGeneratorStandardParser(t *testing.T) {
	ca, err := pki.NewCA("Generator CA")
	if err != nil {
		t.Fatal(err)
	}
	revoked := []*big.Int{big.NewInt(0x7e57), big.NewInt(0x80)} // the second needs a leading zero octet
	const n, seed = 50, 7
	der := largeCRL(t, ca, n, seed, revoked...)
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("x509.ParseRevocationList(generated CRL) = %v", err)
	}
	if err := rl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CheckSignatureFrom(the CA) = %v", err)
	}
	if rl.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("SignatureAlgorithm = %v, want ECDSA with SHA-256", rl.SignatureAlgorithm)
	}
	if !bytes.Equal(rl.RawIssuer, ca.Cert.RawSubject) {
		t.Errorf("issuer %q, want the CA's subject %q", rl.Issuer, ca.Cert.Subject)
	}
	if !bytes.Equal(rl.AuthorityKeyId, ca.Cert.SubjectKeyId) {
		t.Errorf("AuthorityKeyId = %x, want the CA's %x", rl.AuthorityKeyId, ca.Cert.SubjectKeyId)
	}
	if rl.Number == nil || rl.Number.Int64() != seed+1 {
		t.Errorf("CRL number = %v, want %d", rl.Number, seed+1)
	}
	now := time.Now()
	if !rl.ThisUpdate.Before(now) || !rl.NextUpdate.After(now.Add(6*24*time.Hour)) {
		t.Errorf("thisUpdate %v, nextUpdate %v: want one just past and one a week ahead", rl.ThisUpdate, rl.NextUpdate)
	}
	entries := rl.RevokedCertificateEntries
	if len(entries) != n+len(revoked) {
		t.Fatalf("%d entries, want %d", len(entries), n+len(revoked))
	}
	// Every serial the standard parser sees is one the server's parser finds revoked.
	crl, err := revocation.Parse(der, ca.Cert, now)
	if err != nil {
		t.Fatalf("revocation.Parse(generated CRL) = %v", err)
	}
	for i, e := range entries {
		if e.SerialNumber.Sign() <= 0 || !crl.IsRevoked(e.SerialNumber) || !e.RevocationTime.Before(now) {
			t.Errorf("entry %d: serial %v (revoked for the server: %v), revoked at %v", i, e.SerialNumber, crl.IsRevoked(e.SerialNumber), e.RevocationTime)
		}
	}
	for i, s := range revoked {
		if got := entries[n+i].SerialNumber; got.Cmp(s) != 0 {
			t.Errorf("entry %d = serial %v, want the given %v", n+i, got, s)
		}
	}
}
