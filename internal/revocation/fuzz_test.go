package revocation

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"smartproxy/internal/pki"
)

var update = flag.Bool("update", false, "rewrite testdata (fuzz CA and seed corpus)")

const (
	fuzzCACert = "testdata/fuzz-ca.pem"
	fuzzCAKey  = "testdata/fuzz-ca-key.pem"
	corpusDir  = "testdata/fuzz/FuzzParse"
)

// fuzzCA loads the fixed CA whose signatures the seed corpus carries (a
// test-only key, committed on purpose).
func fuzzCA(t testing.TB) *pki.CA {
	t.Helper()
	certPEM, err1 := os.ReadFile(fuzzCACert)
	keyPEM, err2 := os.ReadFile(fuzzCAKey)
	if err1 != nil || err2 != nil {
		t.Fatalf("fuzz CA missing (run go test -run TestFuzzCorpus -update): %v %v", err1, err2)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca
}

// seedCRLs returns named CRLs of ca covering the parser's branches. Names
// starting with "valid-" must parse.
func seedCRLs(t testing.TB, ca *pki.CA) map[string][]byte {
	t.Helper()
	// Fixed times keep the seeds stable; the fuzz target parses with a zero now.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seeds := make(map[string][]byte)
	x := func(rl *x509.RevocationList) []byte {
		der, err := x509.CreateRevocationList(nil, rl, ca.Cert, ca.Key)
		if err != nil {
			// ECDSA needs randomness; CreateRevocationList takes rand.Reader
			// when given nil in recent Go versions.
			t.Fatalf("CreateRevocationList: %v", err)
		}
		return der
	}
	seeds["valid-x509"] = x(&x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: base, NextUpdate: base.Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: big.NewInt(1), RevocationTime: base},
			{SerialNumber: big.NewInt(300), RevocationTime: base, ReasonCode: 1},
			{SerialNumber: new(big.Int).Lsh(big.NewInt(1), 150), RevocationTime: base, ReasonCode: 8},
		},
	})
	seeds["valid-x509-empty"] = x(&x509.RevocationList{Number: big.NewInt(2), ThisUpdate: base, NextUpdate: base.Add(time.Hour)})
	idp := func(content []byte) pkix.Extension {
		v, _ := encasn1.Marshal(encasn1.RawValue{Tag: encasn1.TagSequence, IsCompound: true, Bytes: content})
		return pkix.Extension{Id: encasn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: v}
	}
	url := []byte("http://crl.example.test/x.crl")
	full := append([]byte{0xa0, byte(len(url) + 4), 0xa0, byte(len(url) + 2), 0x86, byte(len(url))}, url...)
	seeds["valid-idp"] = x(&x509.RevocationList{Number: big.NewInt(3), ThisUpdate: base, NextUpdate: base.Add(time.Hour),
		ExtraExtensions: []pkix.Extension{idp(append(full, 0x81, 0x01, 0xff))}})
	seeds["delta"] = x(&x509.RevocationList{Number: big.NewInt(4), ThisUpdate: base, NextUpdate: base.Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: encasn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 1}}}})
	seeds["valid-raw-odd-serials"] = buildCRL(t, rawSpec{ca: ca, thisUpdate: base, nextUpdate: base.Add(time.Hour), number: 5,
		entries: func(b *cryptobyte.Builder) {
			addEntry(b, []byte{0x00, 0x00, 0x7f}, base, -1)
			addEntry(b, []byte{0xff, 0x80}, base, 6)
			addEntry(b, []byte{0x01}, base, 8)
			addEntry(b, []byte{0x01}, base, 1)
		}})
	seeds["valid-raw-v1"] = buildCRL(t, rawSpec{ca: ca, thisUpdate: base, v1: true,
		entries: func(b *cryptobyte.Builder) { addEntry(b, []byte{0x42}, base, -1) }})
	seeds["valid-raw-100"] = largeCRLAt(t, ca, 100, 9, base)
	v := seeds["valid-x509"]
	seeds["truncated"] = v[:len(v)/2]
	return seeds
}

// largeCRLAt is largeCRL with fixed times.
func largeCRLAt(t testing.TB, ca *pki.CA, n int, seed uint64, at time.Time) []byte {
	return buildCRL(t, rawSpec{ca: ca, thisUpdate: at, nextUpdate: at.Add(time.Hour), number: 1,
		entries: func(b *cryptobyte.Builder) {
			g := newSerialGen(seed)
			var buf [16]byte
			for i := range n {
				addEntry(b, g.next(&buf), at, i%3-1)
			}
		}})
}

// TestFuzzCorpus checks that the committed seed corpus still parses as
// intended; with -update it rewrites the corpus (and creates the fuzz CA if
// missing).
func TestFuzzCorpus(t *testing.T) {
	if *update {
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(fuzzCACert); err != nil {
			ca, err := pki.NewCA("SmartProxy revocation fuzz CA")
			if err != nil {
				t.Fatal(err)
			}
			if err := pki.WriteCertFile(fuzzCACert, ca.CertPEM); err != nil {
				t.Fatal(err)
			}
			if err := pki.WriteKeyFile(fuzzCAKey, ca.KeyPEM); err != nil {
				t.Fatal(err)
			}
		}
		for name, der := range seedCRLs(t, fuzzCA(t)) {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(der)))
			if err := os.WriteFile(filepath.Join(corpusDir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ca := fuzzCA(t)
	entries, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	valid := 0
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(corpusDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(data), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a fuzz corpus file", e.Name())
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		_, err = Parse([]byte(s), ca.Cert, time.Time{})
		if strings.HasPrefix(e.Name(), "valid-") {
			valid++
			if err != nil {
				t.Errorf("Parse(%s) error = %v, want nil", e.Name(), err)
			}
		} else if err == nil {
			t.Errorf("Parse(%s) error = nil, want an error", e.Name())
		}
	}
	if valid < 5 {
		t.Errorf("corpus has %d valid seeds, want >= 5", valid)
	}
}

// FuzzParse feeds arbitrary bytes to Parse, and to the structural walk and
// indexer directly (so that mutated entries are explored even though their
// signature no longer verifies). Nothing may panic, and everything the
// walker accepts must be found by a lookup.
func FuzzParse(f *testing.F) {
	ca := fuzzCA(f)
	for _, der := range seedCRLs(f, ca) {
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		if crl, err := Parse(der, ca.Cert, time.Time{}); err == nil {
			_ = crl.String()
			crl.IsRevoked(big.NewInt(1))
		}
		raw, err := parseRaw(der)
		if err != nil {
			return
		}
		_, _ = raw.signatureAlgorithm()
		c, err := raw.build(ca.Cert, time.Time{})
		if err != nil {
			return
		}
		var keys [][]byte
		var removed int
		_ = walkEntries(raw.entries, raw.version, func(serial []byte, reason Reason) {
			if reason == ReasonRemoveFromCRL {
				removed++
				return
			}
			keys = append(keys, bytes.Clone(serial))
		})
		if c.Removed() != removed {
			t.Fatalf("Removed() = %d, want %d", c.Removed(), removed)
		}
		for _, k := range keys {
			if !c.IsRevokedBytes(k) {
				t.Fatalf("IsRevokedBytes(%x) = false for a listed serial", k)
			}
			if !c.IsRevoked(serialToBig(k)) {
				t.Fatalf("IsRevoked(%x as big.Int) = false for a listed serial", k)
			}
		}
		if c.Len() > len(keys) {
			t.Fatalf("Len() = %d > %d listed serials", c.Len(), len(keys))
		}
	})
}

// serialToBig decodes two's complement INTEGER content octets.
func serialToBig(b []byte) *big.Int {
	n := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return n
}
