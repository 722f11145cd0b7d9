package backend_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	mrand "math/rand/v2"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"smartproxy/internal/pki"
)

// OIDs the CRL generator writes (RFC 5280, RFC 5758).
var (
	oidECDSAWithSHA256   = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	oidAuthorityKeyID    = []byte{0x55, 0x1d, 0x23}
	oidCRLNumber         = []byte{0x55, 0x1d, 0x14}
	tagCRLExtensions     = asn1.Tag(0).ContextSpecific().Constructed()
	tagKeyIdentifier     = asn1.Tag(0).ContextSpecific()
	largeCRLEntryAverage = 37 // bytes per entry with a 16-octet serial, for the size hint
)

// largeCRL writes and signs a CRL of ca with n random 16-octet serials and the given revoked
// serials, directly with cryptobyte: x509.CreateRevocationList holds a big.Int and a struct per
// entry, far too heavy for a million of them.
func largeCRL(t testing.TB, ca *pki.CA, n int, seed uint64, revoked ...*big.Int) []byte {
	t.Helper()
	if _, ok := ca.Key.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("largeCRL: CA key %T, want ECDSA", ca.Key)
	}
	now := time.Now().UTC()
	utc := func(b *cryptobyte.Builder, at time.Time) {
		b.AddASN1(asn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(at.Format("060102150405Z"))) })
	}
	addAlg := func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidECDSAWithSHA256) })
		})
	}
	entry := func(b *cryptobyte.Builder, serial []byte) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(serial) })
			utc(b, now.Add(-time.Hour))
		})
	}
	tb := cryptobyte.NewBuilder(make([]byte, 0, n*largeCRLEntryAverage+4096))
	tb.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // v2
		addAlg(b)
		b.AddBytes(ca.Cert.RawSubject)
		utc(b, now.Add(-time.Minute))
		utc(b, now.Add(7*24*time.Hour))
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			r := mrand.New(mrand.NewPCG(seed, seed^0x5eed))
			var buf [16]byte
			for range n {
				for i := range buf {
					buf[i] = byte(r.Uint32())
				}
				buf[0] = buf[0]&0x7f | 0x01 // positive, minimal
				entry(b, buf[:])
			}
			for _, s := range revoked {
				der := s.Bytes()
				if len(der) == 0 || der[0]&0x80 != 0 {
					der = append([]byte{0}, der...)
				}
				entry(b, der)
			}
		})
		b.AddASN1(tagCRLExtensions, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidAuthorityKeyID) })
					b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(tagKeyIdentifier, func(b *cryptobyte.Builder) { b.AddBytes(ca.Cert.SubjectKeyId) })
						})
					})
				})
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidCRLNumber) })
					b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1Int64(int64(seed) + 1) })
				})
			})
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		t.Fatalf("largeCRL: tbsCertList: %v", err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("largeCRL: sign: %v", err)
	}
	ob := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+64))
	ob.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addAlg(b)
		b.AddASN1BitString(sig)
	})
	der, err := ob.Bytes()
	if err != nil {
		t.Fatalf("largeCRL: CertificateList: %v", err)
	}
	return der
}
