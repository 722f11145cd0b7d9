package revocation

import (
	"crypto/x509"
	"math/big"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"smartproxy/internal/pki"
)

// benchCRL holds one generated million-entry CRL shared by the benchmarks,
// so that `go test -bench .` writes it once.
var benchCRL struct {
	once sync.Once
	ca   *pki.CA
	der  []byte
}

const benchEntries = 1_000_000

func loadBenchCRL(b *testing.B) (*pki.CA, []byte) {
	benchCRL.once.Do(func() {
		benchCRL.ca = newCA(b, "Bench CA", pki.ECDSAP256)
		benchCRL.der = largeCRL(b, benchCRL.ca, benchEntries, 11)
	})
	return benchCRL.ca, benchCRL.der
}

// BenchmarkParse1M parses a 1,000,000-entry CRL (≈36 MB DER, ECDSA P-256).
// Besides ns/op, B/op and allocs/op it reports the DER size and the peak
// heap during Parse relative to it (DER plus everything Parse allocated,
// measured with the collector off).
func BenchmarkParse1M(b *testing.B) {
	ca, der := loadBenchCRL(b)
	now := time.Now()
	b.SetBytes(int64(len(der)))
	b.ReportAllocs()
	var crl *CRL
	for b.Loop() {
		var err error
		if crl, err = Parse(der, ca.Cert, now); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	old := debug.SetGCPercent(-1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Parse(der, ca.Cert, now); err != nil {
		b.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	debug.SetGCPercent(old)
	b.ReportMetric(float64(len(der)), "der-bytes")
	b.ReportMetric(float64(uint64(len(der))+after.TotalAlloc-before.TotalAlloc)/float64(len(der)), "peak/der")
	b.ReportMetric(float64(crl.Size()), "index-bytes")
}

// BenchmarkStdlibParse1M is the same CRL through x509.ParseRevocationList,
// for comparison.
func BenchmarkStdlibParse1M(b *testing.B) {
	_, der := loadBenchCRL(b)
	b.SetBytes(int64(len(der)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x509.ParseRevocationList(der); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIsRevoked looks up listed and absent serials in the 1M CRL.
func BenchmarkIsRevoked(b *testing.B) {
	ca, der := loadBenchCRL(b)
	crl, err := Parse(der, ca.Cert, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	var listed, absent []*big.Int
	g, h := newSerialGen(11), newSerialGen(12)
	var buf [16]byte
	for range 1024 {
		listed = append(listed, new(big.Int).SetBytes(g.next(&buf)))
		absent = append(absent, new(big.Int).SetBytes(h.next(&buf)))
	}
	for _, bc := range []struct {
		name    string
		serials []*big.Int
		want    bool
	}{{"listed", listed, true}, {"absent", absent, false}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if crl.IsRevoked(bc.serials[i&1023]) != bc.want {
					b.Fatalf("IsRevoked(%v) != %t", bc.serials[i&1023], bc.want)
				}
				i++
			}
		})
	}
	b.Run("bytes", func(b *testing.B) {
		key := newSerialGen(11).next(&buf)
		b.ReportAllocs()
		for b.Loop() {
			if !crl.IsRevokedBytes(key) {
				b.Fatal("IsRevokedBytes = false")
			}
		}
	})
}

// BenchmarkCheck is a Checker lookup for a leaf certificate, as the server
// does per TLS handshake.
func BenchmarkCheck(b *testing.B) {
	ca, der := loadBenchCRL(b)
	crl, err := Parse(der, ca.Cert, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "bench.example.test"})
	if err != nil {
		b.Fatal(err)
	}
	ch := NewChecker(crl)
	b.ReportAllocs()
	for b.Loop() {
		if st, err := ch.Check(leaf.Cert, ca.Cert); err != nil || st != Good {
			b.Fatal(st, err)
		}
	}
}
