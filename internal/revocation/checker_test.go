package revocation

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"smartproxy/internal/pki"
)

// idpExtension returns an issuingDistributionPoint extension naming urls.
func idpExtension(t *testing.T, urls []string, onlyUser bool) pkix.Extension {
	t.Helper()
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				for _, u := range urls {
					b.AddASN1(asn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
				}
			})
		})
		if onlyUser {
			b.AddASN1(asn1.Tag(1).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
		}
	})
	v, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: v}
}

// signedCRL creates and parses a CRL of ca with the given number, revoked
// serials and extra extensions.
func signedCRL(t *testing.T, ca *pki.CA, number int64, revoked []*big.Int, exts ...pkix.Extension) *CRL {
	t.Helper()
	now := time.Now()
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Hour),
			ReasonCode: int(ReasonKeyCompromise)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: now.Add(-time.Duration(100-number) * time.Minute),
		NextUpdate: now.Add(time.Hour), RevokedCertificateEntries: entries, ExtraExtensions: exts,
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatalf("CreateRevocationList: %v", err)
	}
	crl, err := Parse(der, ca.Cert, now)
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	return crl
}

func issue(t *testing.T, ca *pki.CA, name string, dps ...string) *x509.Certificate {
	t.Helper()
	leaf, err := ca.Issue(pki.Request{CommonName: name, CRLDistributionPoints: dps})
	if err != nil {
		t.Fatalf("Issue(%q): %v", name, err)
	}
	return leaf.Cert
}

func TestChecker(t *testing.T) {
	const (
		urlA = "http://crl.example.test/a.crl"
		urlB = "http://crl.example.test/b.crl"
		urlC = "ldap://ldap.example.test/cn=Other%20CA?certificateRevocationList"
	)
	ca := newCA(t, "Partner CA", pki.ECDSAP256)
	other := newCA(t, "Other CA", pki.RSA2048)
	twin := newCA(t, "Partner CA", pki.ECDSAP256) // same name, other key

	good := issue(t, ca, "good.example.test", urlA)
	bad := issue(t, ca, "bad.example.test", urlA)
	held := issue(t, ca, "held.example.test", urlA)
	inB := issue(t, ca, "b.example.test", urlB)
	inBRevoked := issue(t, ca, "b-revoked.example.test", urlB)
	fromOther := issue(t, other, "other.example.test", urlC, urlC)
	fromTwin := issue(t, twin, "twin.example.test", urlA)
	sub, err := ca.IssueCA(pki.CAOptions{CommonName: "Partner Sub CA"})
	if err != nil {
		t.Fatal(err)
	}

	// CRL 1 lists bad and held; CRL 2 (newer, same scope) releases held.
	crl1 := signedCRL(t, ca, 1, []*big.Int{bad.SerialNumber, held.SerialNumber}, idpExtension(t, []string{urlA}, true))
	crl2 := signedCRL(t, ca, 2, []*big.Int{bad.SerialNumber, inBRevoked.SerialNumber}, idpExtension(t, []string{urlA}, true))

	for _, order := range [][]*CRL{{crl1, crl2}, {crl2, crl1}} {
		ch := NewChecker(append(order, nil)...)
		if got := len(ch.CRLs()); got != 1 {
			t.Fatalf("len(CRLs()) = %d, want 1 (the newer CRL replaces the older)", got)
		}
		tests := []struct {
			name   string
			cert   *x509.Certificate
			issuer *x509.Certificate
			want   Status
		}{
			{"good", good, ca.Cert, Good},
			{"good without issuer", good, nil, Good},
			{"revoked", bad, ca.Cert, Revoked},
			{"revoked without issuer", bad, nil, Revoked},
			{"released from hold by the newer CRL", held, ca.Cert, Good},
			{"other partition, not listed", inB, ca.Cert, NoCRL},
			{"other partition, listed", inBRevoked, ca.Cert, Revoked},
			{"CA certificate outside onlyContainsUserCerts", sub.Cert, ca.Cert, NoCRL},
			{"other CA", fromOther, other.Cert, NoCRL},
			{"same name, other key", fromTwin, twin.Cert, NoCRL},
			{"same name, other key, without issuer", fromTwin, nil, NoCRL},
		}
		for _, tt := range tests {
			res, err := ch.Lookup(tt.cert, tt.issuer)
			if err != nil {
				t.Fatalf("%s: Lookup() error = %v", tt.name, err)
			}
			if res.Status != tt.want {
				t.Errorf("%s: Lookup().Status = %v, want %v", tt.name, res.Status, tt.want)
			}
			if (res.CRL == nil) != (tt.want == NoCRL) {
				t.Errorf("%s: Lookup().CRL = %v, want nil only for NoCRL", tt.name, res.CRL)
			}
			if tt.want == Revoked && res.Reason != ReasonKeyCompromise {
				t.Errorf("%s: Lookup().Reason = %v, want keyCompromise", tt.name, res.Reason)
			}
			st, err := ch.Check(tt.cert, tt.issuer)
			if err != nil || st != tt.want {
				t.Errorf("%s: Check() = %v, %v, want %v, nil", tt.name, st, err, tt.want)
			}
		}
	}

	ch := NewChecker(crl2, signedCRL(t, other, 5, nil).WithURL("http://elsewhere.test/other.crl"))
	if _, err := ch.Check(good, other.Cert); err == nil {
		t.Error("Check(cert, wrong issuer) error = nil, want error")
	}
	if _, err := ch.Check(nil, ca.Cert); err == nil {
		t.Error("Check(nil, issuer) error = nil, want error")
	}
	if st, err := ch.Check(fromOther, other.Cert); err != nil || st != Good {
		t.Errorf("Check(fromOther) = %v, %v, want good, nil", st, err)
	}

	missing := []struct {
		name string
		ch   *Checker
		cert *x509.Certificate
		want []string
	}{
		{"covered by issuingDistributionPoint", ch, good, nil},
		{"not covered", ch, inB, []string{urlB}},
		{"duplicates once", ch, fromOther, []string{urlC}},
		{"covered by URL", NewChecker(crl2.WithURL(urlB)), inB, nil},
		{"no CRLs", NewChecker(), good, []string{urlA}},
		{"zero Checker", &Checker{}, good, []string{urlA}},
		{"certificate without distribution points", ch, ca.Cert, nil},
		{"nil certificate", ch, nil, nil},
	}
	for _, tt := range missing {
		if got := tt.ch.MissingDistributionPoints(tt.cert); !slices.Equal(got, tt.want) {
			t.Errorf("%s: MissingDistributionPoints() = %q, want %q", tt.name, got, tt.want)
		}
	}
	if st, err := (&Checker{}).Check(good, ca.Cert); err != nil || st != NoCRL {
		t.Errorf("zero Checker: Check() = %v, %v, want no-crl, nil", st, err)
	}
	if got := crl2.WithURL(urlB).URL(); got != urlB {
		t.Errorf("WithURL(%q).URL() = %q", urlB, got)
	}
	if crl2.URL() != "" {
		t.Errorf("URL() = %q after WithURL on a copy, want empty", crl2.URL())
	}
	if got := crl2.DistributionPoints(); !slices.Equal(got, []string{urlA}) {
		t.Errorf("DistributionPoints() = %q, want %q", got, []string{urlA})
	}
}

// TestCheckerConcurrent runs lookups from several goroutines; with -race it
// proves the Checker needs no locking.
func TestCheckerConcurrent(t *testing.T) {
	ca := newCA(t, "Busy CA", pki.ECDSAP256)
	var certs []*x509.Certificate
	for i := range 8 {
		certs = append(certs, issue(t, ca, "leaf"+string(rune('a'+i))+".example.test"))
	}
	ch := NewChecker(signedCRL(t, ca, 1, []*big.Int{certs[0].SerialNumber, certs[3].SerialNumber}))
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				c := certs[(g+i)%len(certs)]
				want := Good
				if c == certs[0] || c == certs[3] {
					want = Revoked
				}
				if st, err := ch.Check(c, ca.Cert); err != nil || st != want {
					select {
					case errs <- c.Subject.CommonName + ": " + st.String():
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent Check: %s", e)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{NoCRL: "no-crl", Good: "good", Revoked: "revoked", Status(9): "Status(9)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
