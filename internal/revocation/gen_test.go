package revocation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"math/big"
	mrand "math/rand/v2"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"smartproxy/internal/pki"
)

// This file writes CRLs directly with cryptobyte. x509.CreateRevocationList
// holds a struct and a big.Int per entry, which is too slow and too heavy for
// the million-entry CRLs of the benchmarks, and it cannot write the odd
// encodings (non-minimal or negative serials) some real CRLs contain.

// rawSpec describes a CRL for buildCRL.
type rawSpec struct {
	ca         *pki.CA
	thisUpdate time.Time
	nextUpdate time.Time // zero: absent
	number     int64     // 0: no cRLNumber extension
	v1         bool      // omit version and all extensions
	// entries adds the revokedCertificates entries (each a SEQUENCE). If
	// nil, the revokedCertificates field is absent.
	entries func(b *cryptobyte.Builder)
	// exts adds further CRL extensions (each an Extension SEQUENCE).
	exts func(b *cryptobyte.Builder)
	// sizeHint is the expected DER size, to allocate once.
	sizeHint int
}

var (
	oidBytesECDSAWithSHA256 = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	oidBytesSHA256WithRSA   = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b}
)

func addUTCTime(b *cryptobyte.Builder, t time.Time) {
	b.AddASN1(asn1.UTCTime, func(b *cryptobyte.Builder) {
		b.AddBytes([]byte(t.UTC().Format("060102150405Z")))
	})
}

func addExtension(b *cryptobyte.Builder, oid []byte, critical bool, value func(b *cryptobyte.Builder)) {
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oid) })
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(asn1.OCTET_STRING, value)
	})
}

// addEntry adds one revoked certificate entry with the serial given as
// INTEGER content octets and, if reason >= 0, a reasonCode extension.
func addEntry(b *cryptobyte.Builder, serial []byte, at time.Time, reason int) {
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(serial) })
		addUTCTime(b, at)
		if reason >= 0 {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addExtension(b, oidExtReasonCode, false, func(b *cryptobyte.Builder) {
					b.AddASN1Enum(int64(reason))
				})
			})
		}
	})
}

// buildCRL writes and signs the CRL described by s.
func buildCRL(t testing.TB, s rawSpec) []byte {
	t.Helper()
	var algOID []byte
	var rsaKey bool
	switch s.ca.Key.(type) {
	case *ecdsa.PrivateKey:
		algOID = oidBytesECDSAWithSHA256
	case *rsa.PrivateKey:
		algOID, rsaKey = oidBytesSHA256WithRSA, true
	default:
		t.Fatalf("buildCRL: unsupported CA key %T", s.ca.Key)
	}
	addAlg := func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(algOID) })
			if rsaKey {
				b.AddASN1NULL()
			}
		})
	}
	tb := cryptobyte.NewBuilder(make([]byte, 0, s.sizeHint+1024))
	tb.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if !s.v1 {
			b.AddASN1Int64(1)
		}
		addAlg(b)
		b.AddBytes(s.ca.Cert.RawSubject)
		addUTCTime(b, s.thisUpdate)
		if !s.nextUpdate.IsZero() {
			addUTCTime(b, s.nextUpdate)
		}
		if s.entries != nil {
			b.AddASN1(asn1.SEQUENCE, s.entries)
		}
		if s.v1 {
			return
		}
		b.AddASN1(tagExtensions, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addExtension(b, oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(asn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddBytes(s.ca.Cert.SubjectKeyId)
						})
					})
				})
				if s.number > 0 {
					addExtension(b, oidExtCRLNumber, false, func(b *cryptobyte.Builder) {
						b.AddASN1Int64(s.number)
					})
				}
				if s.exts != nil {
					s.exts(b)
				}
			})
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		t.Fatalf("buildCRL: tbsCertList: %v", err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := s.ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("buildCRL: sign: %v", err)
	}
	ob := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+64))
	ob.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addAlg(b)
		b.AddASN1BitString(sig)
	})
	der, err := ob.Bytes()
	if err != nil {
		t.Fatalf("buildCRL: CertificateList: %v", err)
	}
	return der
}

// serialGen yields reproducible random 16-octet positive serial numbers in
// canonical form, like those of most public CAs.
type serialGen struct{ r *mrand.Rand }

func newSerialGen(seed uint64) *serialGen {
	return &serialGen{mrand.New(mrand.NewPCG(seed, seed^0x5eed))}
}

func (g *serialGen) next(buf *[16]byte) []byte {
	for i := range buf {
		buf[i] = byte(g.r.Uint32())
	}
	buf[0] = buf[0]&0x7f | 0x01 // positive, no redundant leading zero octet
	return buf[:]
}

// largeCRL builds a CRL with n random serials (seed decides them); every
// tenth entry has reason keyCompromise.
func largeCRL(t testing.TB, ca *pki.CA, n int, seed uint64) []byte {
	t.Helper()
	now := time.Now()
	at := now.Add(-time.Hour)
	return buildCRL(t, rawSpec{
		ca: ca, thisUpdate: now.Add(-time.Minute), nextUpdate: now.Add(24 * time.Hour), number: 42,
		sizeHint: n * 50,
		entries: func(b *cryptobyte.Builder) {
			g := newSerialGen(seed)
			var buf [16]byte
			for i := range n {
				reason := -1
				if i%10 == 0 {
					reason = int(ReasonKeyCompromise)
				}
				addEntry(b, g.next(&buf), at, reason)
			}
		},
	})
}

// newCA creates a root CA for tests.
func newCA(t testing.TB, name string, alg pki.KeyAlgorithm) *pki.CA {
	t.Helper()
	ca, err := pki.NewCAWithOptions(pki.CAOptions{CommonName: name, KeyAlgorithm: alg})
	if err != nil {
		t.Fatalf("NewCAWithOptions(%q): %v", name, err)
	}
	return ca
}

// customCA creates a self-signed CA certificate for key with the given key
// usage (0: none) for signature algorithms pki does not offer.
func customCA(t testing.TB, name string, key crypto.Signer, usage x509.KeyUsage) *x509.Certificate {
	t.Helper()
	pub := key.Public()
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var spki struct {
		Alg pkix.AlgorithmIdentifier
		Key encasn1.BitString
	}
	if _, err := encasn1.Unmarshal(pubDER, &spki); err != nil {
		t.Fatal(err)
	}
	skid := sha256.Sum256(spki.Key.Bytes)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              usage,
		SubjectKeyId:          skid[:20],
	}
	if _, ok := key.(ed25519.PrivateKey); !ok {
		if _, ok := key.(*rsa.PrivateKey); ok {
			tmpl.SignatureAlgorithm = x509.SHA256WithRSA
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatalf("CreateCertificate(%q): %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
