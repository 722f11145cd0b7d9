package revocation

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"smartproxy/internal/pki"
)

func mustCRL(t *testing.T, ca *pki.CA, revoked []pki.RevokedCert, thisUpdate, nextUpdate time.Time) []byte {
	t.Helper()
	der, err := ca.CRL(revoked, thisUpdate, nextUpdate)
	if err != nil {
		t.Fatalf("CRL: %v", err)
	}
	return der
}

// TestParseGoCRLs parses CRLs written by crypto/x509 (through internal/pki)
// for ECDSA and RSA CAs and checks every accessor.
func TestParseGoCRLs(t *testing.T) {
	now := time.Now()
	for _, alg := range []pki.KeyAlgorithm{pki.ECDSAP256, pki.RSA2048} {
		t.Run(alg.String(), func(t *testing.T) {
			ca := newCA(t, "Test CA "+alg.String(), alg)
			revoked := []pki.RevokedCert{
				{SerialNumber: big.NewInt(1000)},
				{SerialNumber: big.NewInt(255), ReasonCode: int(ReasonKeyCompromise)}, // 0x00ff on the wire
				{SerialNumber: new(big.Int).Lsh(big.NewInt(1), 158), ReasonCode: int(ReasonSuperseded)},
			}
			thisUpdate := now.Add(-time.Hour).Truncate(time.Second)
			nextUpdate := now.Add(time.Hour).Truncate(time.Second)
			der := mustCRL(t, ca, revoked, thisUpdate, nextUpdate)
			crl, err := Parse(der, ca.Cert, now)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if got, want := crl.Len(), 3; got != want {
				t.Errorf("Len() = %d, want %d", got, want)
			}
			if got := crl.Number(); got == nil || got.Int64() != 1 {
				t.Errorf("Number() = %v, want 1", got)
			}
			if got := crl.ThisUpdate(); !got.Equal(thisUpdate) {
				t.Errorf("ThisUpdate() = %v, want %v", got, thisUpdate)
			}
			if got := crl.NextUpdate(); !got.Equal(nextUpdate) {
				t.Errorf("NextUpdate() = %v, want %v", got, nextUpdate)
			}
			if got, want := crl.Version(), 2; got != want {
				t.Errorf("Version() = %d, want %d", got, want)
			}
			if got, want := crl.Issuer(), ca.Cert.Subject.String(); got != want {
				t.Errorf("Issuer() = %q, want %q", got, want)
			}
			if !bytes.Equal(crl.RawIssuer(), ca.Cert.RawSubject) {
				t.Errorf("RawIssuer() = %x, want %x", crl.RawIssuer(), ca.Cert.RawSubject)
			}
			if crl.Size() <= 0 {
				t.Errorf("Size() = %d, want > 0", crl.Size())
			}
			for _, r := range revoked {
				reason, ok := crl.Lookup(r.SerialNumber)
				if !ok || reason != Reason(r.ReasonCode) {
					t.Errorf("Lookup(%v) = %v, %t, want %v, true", r.SerialNumber, reason, ok, Reason(r.ReasonCode))
				}
				if !crl.IsRevoked(r.SerialNumber) {
					t.Errorf("IsRevoked(%v) = false, want true", r.SerialNumber)
				}
				// Certificate encoding of the serial: minimal two's complement.
				enc, err := encasn1.Marshal(r.SerialNumber)
				if err != nil {
					t.Fatal(err)
				}
				if !crl.IsRevokedBytes(enc[2:]) {
					t.Errorf("IsRevokedBytes(%x) = false, want true", enc[2:])
				}
			}
			for _, s := range []*big.Int{big.NewInt(999), big.NewInt(1001), big.NewInt(0), big.NewInt(-1000), nil,
				new(big.Int).Lsh(big.NewInt(1), 159), new(big.Int).Lsh(big.NewInt(1), 5000)} {
				if crl.IsRevoked(s) {
					t.Errorf("IsRevoked(%v) = true, want false", s)
				}
			}
		})
	}
}

// TestParseSignatureAlgorithms covers every signature algorithm Parse maps.
func TestParseSignatureAlgorithms(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key crypto.Signer
		alg x509.SignatureAlgorithm
	}{
		{rsaKey, x509.SHA256WithRSA},
		{rsaKey, x509.SHA384WithRSA},
		{rsaKey, x509.SHA512WithRSA},
		{rsaKey, x509.SHA256WithRSAPSS},
		{rsaKey, x509.SHA384WithRSAPSS},
		{rsaKey, x509.SHA512WithRSAPSS},
		{p384, x509.ECDSAWithSHA384},
		{p521, x509.ECDSAWithSHA512},
		{edKey, x509.PureEd25519},
	}
	now := time.Now()
	for _, tt := range tests {
		t.Run(tt.alg.String(), func(t *testing.T) {
			ca := customCA(t, "CA "+tt.alg.String(), tt.key, x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
			der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
				SignatureAlgorithm: tt.alg,
				Number:             big.NewInt(7),
				ThisUpdate:         now.Add(-time.Minute),
				NextUpdate:         now.Add(time.Hour),
				RevokedCertificateEntries: []x509.RevocationListEntry{
					{SerialNumber: big.NewInt(77), RevocationTime: now.Add(-time.Hour)},
				},
			}, ca, tt.key)
			if err != nil {
				t.Fatalf("CreateRevocationList: %v", err)
			}
			crl, err := Parse(der, ca, now)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if got := crl.SignatureAlgorithm(); got != tt.alg {
				t.Errorf("SignatureAlgorithm() = %v, want %v", got, tt.alg)
			}
			if !crl.IsRevoked(big.NewInt(77)) || crl.IsRevoked(big.NewInt(78)) {
				t.Errorf("IsRevoked(77), IsRevoked(78) = %t, %t, want true, false",
					crl.IsRevoked(big.NewInt(77)), crl.IsRevoked(big.NewInt(78)))
			}
			// One flipped bit anywhere in the signed part must be detected.
			bad := bytes.Clone(der)
			i := bytes.Index(bad, []byte{0x02, 0x01, 77})
			if i < 0 {
				t.Fatal("serial 77 not found in DER")
			}
			bad[i+2] ^= 0x01
			if _, err := Parse(bad, ca, now); err == nil || !strings.Contains(err.Error(), "does not verify") {
				t.Errorf("Parse(tampered serial) error = %v, want signature failure", err)
			}
		})
	}
}

// TestParseErrors is the table of CRLs Parse must refuse.
func TestParseErrors(t *testing.T) {
	now := time.Now()
	ca := newCA(t, "Main CA", pki.ECDSAP256)
	other := newCA(t, "Other CA", pki.ECDSAP256)
	sameName := newCA(t, "Main CA", pki.ECDSAP256) // same subject, different key
	good := mustCRL(t, ca, []pki.RevokedCert{{SerialNumber: big.NewInt(5)}}, now.Add(-time.Hour), now.Add(time.Hour))

	flipLast := bytes.Clone(good)
	flipLast[len(flipLast)-1] ^= 0xff

	noCRLSignKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	noCRLSign := customCA(t, "No CRL Sign", noCRLSignKey, x509.KeyUsageCertSign)
	noCRLSignDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
	}, customCA(t, "No CRL Sign", noCRLSignKey, x509.KeyUsageCertSign|x509.KeyUsageCRLSign), noCRLSignKey)
	if err != nil {
		t.Fatal(err)
	}

	withExt := func(ext pkix.Extension) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(2), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			ExtraExtensions: []pkix.Extension{ext},
		}, ca.Cert, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	withEntryExt := func(ext pkix.Extension) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(3), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{
				SerialNumber: big.NewInt(9), RevocationTime: now, ExtraExtensions: []pkix.Extension{ext},
			}},
		}, ca.Cert, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	deltaValue, _ := encasn1.Marshal(big.NewInt(1))
	idp := func(content []byte) []byte {
		v, _ := encasn1.Marshal(encasn1.RawValue{Class: encasn1.ClassUniversal, Tag: encasn1.TagSequence, IsCompound: true, Bytes: content})
		return v
	}
	entryRaw := func(f func(b *cryptobyte.Builder)) []byte {
		return buildCRL(t, rawSpec{ca: ca, thisUpdate: now, nextUpdate: now.Add(time.Hour), number: 4, entries: f})
	}
	// sha1WithRSAEncryption in both AlgorithmIdentifiers: refused before the
	// signature is looked at.
	rsaCA := newCA(t, "RSA CA", pki.RSA2048)
	sha1DER := bytes.ReplaceAll(buildCRL(t, rawSpec{ca: rsaCA, thisUpdate: now, nextUpdate: now.Add(time.Hour)}),
		oidBytesSHA256WithRSA, []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05})

	tests := []struct {
		name    string
		der     []byte
		issuer  *x509.Certificate
		want    string // substring of the error
		unsupp  bool   // errors.Is(err, ErrUnsupported)
		wantNil bool
	}{
		{name: "empty", der: nil, issuer: ca.Cert, want: "not a DER SEQUENCE"},
		{name: "PEM", der: pki.EncodeCRLPEM(good), issuer: ca.Cert, want: "is it PEM"},
		{name: "truncated", der: good[:len(good)-10], issuer: ca.Cert, want: "malformed"},
		{name: "trailing bytes", der: append(bytes.Clone(good), 0), issuer: ca.Cert, want: "trailing"},
		{name: "certificate, not CRL", der: ca.Cert.Raw, issuer: ca.Cert, want: "malformed"},
		{name: "wrong issuer", der: good, issuer: other.Cert, want: "is not the certificate subject"},
		{name: "same name other key", der: good, issuer: sameName.Cert, want: "authority key ID"},
		{name: "bad signature", der: flipLast, issuer: ca.Cert, want: "does not verify"},
		{name: "no cRLSign", der: noCRLSignDER, issuer: noCRLSign, want: "may not sign CRLs"},
		{name: "nil issuer", der: good, issuer: nil, want: "needs the issuer"},
		{name: "delta CRL", der: withExt(pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: deltaValue}),
			issuer: ca.Cert, want: "delta CRL", unsupp: true},
		{name: "unknown critical CRL extension", der: withExt(pkix.Extension{Id: encasn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}),
			issuer: ca.Cert, want: "unknown critical CRL extension 1.2.3.4", unsupp: true},
		{name: "unknown non-critical CRL extension", der: withExt(pkix.Extension{Id: encasn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{5, 0}}),
			issuer: ca.Cert, wantNil: true},
		{name: "indirect CRL", der: withExt(pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: idp([]byte{0x84, 0x01, 0xff})}),
			issuer: ca.Cert, want: "indirect CRL", unsupp: true},
		{name: "only some reasons", der: withExt(pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: idp([]byte{0x83, 0x02, 0x07, 0x80})}),
			issuer: ca.Cert, want: "partitioned by reason", unsupp: true},
		{name: "user and CA only", der: withExt(pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: idp([]byte{0x81, 0x01, 0xff, 0x82, 0x01, 0xff})}),
			issuer: ca.Cert, want: "both onlyContainsUserCerts"},
		{name: "unknown critical entry extension", der: withEntryExt(pkix.Extension{Id: encasn1.ObjectIdentifier{1, 2, 3, 5}, Critical: true, Value: []byte{5, 0}}),
			issuer: ca.Cert, want: "unknown critical extension 1.2.3.5 in revoked certificate entry 0", unsupp: true},
		{name: "certificateIssuer entry extension", der: withEntryExt(pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 29}, Critical: true, Value: []byte{0x30, 0}}),
			issuer: ca.Cert, want: "certificateIssuer", unsupp: true},
		{name: "undefined reason 7", der: entryRaw(func(b *cryptobyte.Builder) { addEntry(b, []byte{1}, now, 7) }),
			issuer: ca.Cert, want: "reasonCode 7 is not defined"},
		{name: "empty serial", der: entryRaw(func(b *cryptobyte.Builder) { addEntry(b, nil, now, -1) }),
			issuer: ca.Cert, want: "entry 0: bad serial number"},
		{name: "bad revocation date", der: entryRaw(func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes([]byte{1}) })
				b.AddASN1(asn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte("991332000000Z")) })
			})
		}), issuer: ca.Cert, want: "revocationDate: invalid date"},
		{name: "SHA-1", der: sha1DER, issuer: rsaCA.Cert, want: "SHA-1", unsupp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crl, err := Parse(tt.der, tt.issuer, now)
			if tt.wantNil {
				if err != nil {
					t.Fatalf("Parse() error = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() error = %v, want one containing %q", err, tt.want)
			}
			if crl != nil {
				t.Errorf("Parse() CRL = %v, want nil with error", crl)
			}
			if got := errors.Is(err, ErrUnsupported); got != tt.unsupp {
				t.Errorf("errors.Is(%v, ErrUnsupported) = %t, want %t", err, got, tt.unsupp)
			}
		})
	}
}

// TestStale checks that an expired nextUpdate yields the CRL and a
// *StaleError.
func TestStale(t *testing.T) {
	now := time.Now()
	ca := newCA(t, "Stale CA", pki.ECDSAP256)
	next := now.Add(-time.Hour).Truncate(time.Second)
	der := mustCRL(t, ca, []pki.RevokedCert{{SerialNumber: big.NewInt(3)}}, now.Add(-48*time.Hour), next)
	crl, err := Parse(der, ca.Cert, now)
	var stale *StaleError
	if !errors.As(err, &stale) {
		t.Fatalf("Parse() error = %v, want *StaleError", err)
	}
	if !stale.NextUpdate.Equal(next) || !stale.Now.Equal(now) || stale.Issuer != ca.Cert.Subject.String() {
		t.Errorf("StaleError = %+v, want NextUpdate %v, Now %v, Issuer %q", stale, next, now, ca.Cert.Subject.String())
	}
	if !strings.Contains(err.Error(), "stale") {
		t.Errorf("Error() = %q, want it to say stale", err.Error())
	}
	if crl == nil || !crl.IsRevoked(big.NewInt(3)) {
		t.Fatalf("Parse() CRL = %v, want the CRL with serial 3", crl)
	}
	// A zero now skips the check.
	if _, err := Parse(der, ca.Cert, time.Time{}); err != nil {
		t.Errorf("Parse(zero now) error = %v, want nil", err)
	}
}

// TestEmptyAndV1 checks CRLs without entries, without revokedCertificates
// and without version and extensions.
func TestEmptyAndV1(t *testing.T) {
	now := time.Now()
	ca := newCA(t, "Empty CA", pki.ECDSAP256)
	tests := []struct {
		name        string
		der         []byte
		wantVersion int
		wantNumber  bool
	}{
		{"x509 empty list", mustCRL(t, ca, nil, now.Add(-time.Minute), now.Add(time.Hour)), 2, true},
		{"empty SEQUENCE", buildCRL(t, rawSpec{ca: ca, thisUpdate: now, nextUpdate: now.Add(time.Hour), number: 1,
			entries: func(b *cryptobyte.Builder) {}}), 2, true},
		{"v1 without nextUpdate", buildCRL(t, rawSpec{ca: ca, thisUpdate: now, v1: true}), 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crl, err := Parse(tt.der, ca.Cert, now)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if crl.Len() != 0 || crl.IsRevoked(big.NewInt(1)) || crl.IsRevokedBytes([]byte{0}) {
				t.Errorf("Len() = %d, want 0 and nothing revoked", crl.Len())
			}
			if got := crl.Version(); got != tt.wantVersion {
				t.Errorf("Version() = %d, want %d", got, tt.wantVersion)
			}
			if got := crl.Number() != nil; got != tt.wantNumber {
				t.Errorf("Number() != nil = %t, want %t", got, tt.wantNumber)
			}
		})
	}
}

// TestSerialEncodings checks non-minimal and negative serial numbers,
// duplicates and removeFromCRL.
func TestSerialEncodings(t *testing.T) {
	now := time.Now()
	ca := newCA(t, "Odd CA", pki.RSA2048)
	der := buildCRL(t, rawSpec{ca: ca, thisUpdate: now, nextUpdate: now.Add(time.Hour), number: 9,
		entries: func(b *cryptobyte.Builder) {
			addEntry(b, []byte{0x00, 0x00, 0x12, 0x34}, now, -1)        // non-minimal 0x1234
			addEntry(b, []byte{0xff, 0x80}, now, int(ReasonSuperseded)) // non-minimal -128
			addEntry(b, []byte{0xfe, 0xd4}, now, -1)                    // -300
			addEntry(b, []byte{0x05}, now, int(ReasonCACompromise))     // 5, listed twice
			addEntry(b, []byte{0x05}, now, int(ReasonKeyCompromise))
			addEntry(b, []byte{0x06}, now, int(ReasonRemoveFromCRL))
		}})
	crl, err := Parse(der, ca.Cert, now)
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if got, want := crl.Len(), 4; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	if got, want := crl.Removed(), 1; got != want {
		t.Errorf("Removed() = %d, want %d", got, want)
	}
	tests := []struct {
		serial *big.Int
		reason Reason
		want   bool
	}{
		{big.NewInt(0x1234), 0, true},
		{big.NewInt(-128), ReasonSuperseded, true},
		{big.NewInt(128), 0, false},
		{big.NewInt(-300), 0, true},
		{big.NewInt(300), 0, false},
		{big.NewInt(5), ReasonKeyCompromise, true}, // lowest reason of the duplicates
		{big.NewInt(6), 0, false},                  // removeFromCRL
		{big.NewInt(-5), 0, false},
	}
	for _, tt := range tests {
		reason, ok := crl.Lookup(tt.serial)
		if ok != tt.want || reason != tt.reason {
			t.Errorf("Lookup(%v) = %v, %t, want %v, %t", tt.serial, reason, ok, tt.reason, tt.want)
		}
	}
	for _, b := range [][]byte{{0x12, 0x34}, {0x00, 0x12, 0x34}, {0x80}, {0xff, 0xff, 0x80}} {
		if !crl.IsRevokedBytes(b) {
			t.Errorf("IsRevokedBytes(%x) = false, want true", b)
		}
	}
}

// TestReasonString checks the names of the reasons.
func TestReasonString(t *testing.T) {
	tests := map[Reason]string{
		ReasonUnspecified: "unspecified", ReasonKeyCompromise: "keyCompromise", ReasonCACompromise: "cACompromise",
		ReasonAffiliationChanged: "affiliationChanged", ReasonSuperseded: "superseded",
		ReasonCessationOfOperation: "cessationOfOperation", ReasonCertificateHold: "certificateHold",
		ReasonRemoveFromCRL: "removeFromCRL", ReasonPrivilegeWithdrawn: "privilegeWithdrawn",
		ReasonAACompromise: "aACompromise", Reason(7): "Reason(7)",
	}
	for r, want := range tests {
		if got := r.String(); got != want {
			t.Errorf("Reason(%d).String() = %q, want %q", uint8(r), got, want)
		}
	}
}

// TestParseFrom checks the choice of the issuer among candidates.
func TestParseFrom(t *testing.T) {
	now := time.Now()
	ca := newCA(t, "Chosen CA", pki.ECDSAP256)
	twin := newCA(t, "Chosen CA", pki.ECDSAP256) // same name, other key
	other := newCA(t, "Other CA", pki.RSA2048)
	der := mustCRL(t, ca, []pki.RevokedCert{{SerialNumber: big.NewInt(12)}}, now.Add(-time.Hour), now.Add(time.Hour))
	stale := mustCRL(t, ca, nil, now.Add(-time.Hour), now.Add(-time.Minute))

	crl, err := ParseFrom(der, []*x509.Certificate{nil, other.Cert, twin.Cert, ca.Cert}, now)
	if err != nil {
		t.Fatalf("ParseFrom() error = %v", err)
	}
	if !crl.IsRevoked(big.NewInt(12)) || crl.Issuer() != ca.Cert.Subject.String() {
		t.Errorf("ParseFrom() = %v, want the CRL of %q listing 12", crl, ca.Cert.Subject)
	}
	// A twin without subject key ID cannot be told apart by name and key
	// ID: its signature check fails, and the next candidate is tried.
	twinNoSKI := *twin.Cert
	twinNoSKI.SubjectKeyId = nil
	if _, err := ParseFrom(der, []*x509.Certificate{&twinNoSKI, ca.Cert}, now); err != nil {
		t.Errorf("ParseFrom(twin without SKI, issuer) error = %v, want nil", err)
	}
	if _, err := ParseFrom(der, []*x509.Certificate{&twinNoSKI}, now); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("ParseFrom(twin without SKI) error = %v, want a signature failure", err)
	}
	for _, cands := range [][]*x509.Certificate{nil, {other.Cert}, {twin.Cert}} {
		if _, err := ParseFrom(der, cands, now); err == nil || !strings.Contains(err.Error(), "no trusted CA certificate is the issuer") {
			t.Errorf("ParseFrom(%d unrelated candidates) error = %v, want no issuer", len(cands), err)
		}
	}
	if _, err := ParseFrom([]byte{1, 2, 3}, []*x509.Certificate{ca.Cert}, now); err == nil {
		t.Error("ParseFrom(garbage) error = nil")
	}
	var se *StaleError
	if crl, err := ParseFrom(stale, []*x509.Certificate{ca.Cert}, now); !errors.As(err, &se) || crl == nil {
		t.Errorf("ParseFrom(stale) = %v, %v, want the CRL and *StaleError", crl, err)
	}
}

// TestReadTime covers the Time forms of RFC 5280 §4.1.2.5.
func TestReadTime(t *testing.T) {
	tests := []struct {
		tag  asn1.Tag
		s    string
		want time.Time // zero: error
	}{
		{asn1.UTCTime, "491231235959Z", time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)},
		{asn1.UTCTime, "500101000000Z", time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)},
		{asn1.UTCTime, "240229120000Z", time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)},
		{asn1.GeneralizedTime, "20500101000000Z", time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)},
		{asn1.GeneralizedTime, "20000229000000Z", time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC)},
		{asn1.UTCTime, "230229120000Z", time.Time{}},           // no 29 February in 2023
		{asn1.GeneralizedTime, "21000229000000Z", time.Time{}}, // 2100 is no leap year
		{asn1.UTCTime, "240431120000Z", time.Time{}},           // 31 April
		{asn1.UTCTime, "241301000000Z", time.Time{}},           // month 13
		{asn1.UTCTime, "240101240000Z", time.Time{}},           // hour 24
		{asn1.UTCTime, "240101006000Z", time.Time{}},           // minute 60
		{asn1.UTCTime, "240101000060Z", time.Time{}},           // second 60
		{asn1.UTCTime, "2401010000Z", time.Time{}},             // no seconds
		{asn1.UTCTime, "240101000000+0100", time.Time{}},       // offset
		{asn1.UTCTime, "24010100000aZ", time.Time{}},
		{asn1.GeneralizedTime, "20240101000000.5Z", time.Time{}},
		{asn1.GeneralizedTime, "2O240101000000Z", time.Time{}},
		{asn1.OCTET_STRING, "240101000000Z", time.Time{}},
	}
	for _, tt := range tests {
		b := cryptobyte.NewBuilder(nil)
		b.AddASN1(tt.tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(tt.s)) })
		s := cryptobyte.String(b.BytesOrPanic())
		got, err := readTime(&s)
		if tt.want.IsZero() {
			if err == nil {
				t.Errorf("readTime(%v %q) = %v, want error", tt.tag, tt.s, got)
			}
			continue
		}
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("readTime(%v %q) = %v, %v, want %v", tt.tag, tt.s, got, err, tt.want)
		}
	}
}
