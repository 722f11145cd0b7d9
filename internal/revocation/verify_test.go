package revocation

import (
	"crypto/x509"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"smartproxy/internal/pki"
)

func TestVerifyFrom(t *testing.T) {
	ca := newCA(t, "Verify CA", pki.ECDSAP256)
	other := newCA(t, "Other CA", pki.ECDSAP256)
	now := time.Now()
	der := largeCRL(t, ca, 100, 1)
	tampered := append([]byte(nil), der...)
	tampered[len(tampered)/2] ^= 0x01 // inside the entries: the signature no longer matches
	stale := buildCRL(t, rawSpec{ca: ca, thisUpdate: now.Add(-48 * time.Hour), nextUpdate: now.Add(-24 * time.Hour)})
	tests := []struct {
		name       string
		der        []byte
		candidates []*x509.Certificate
		wantErr    string
		wantStale  bool
	}{
		{"issuer among candidates", der, []*x509.Certificate{other.Cert, ca.Cert}, "", false},
		{"no candidate is the issuer", der, []*x509.Certificate{other.Cert}, "no trusted CA certificate is the issuer", false},
		{"signature does not verify", tampered, []*x509.Certificate{ca.Cert}, "does not verify", false},
		{"not a CRL", []byte("garbage"), []*x509.Certificate{ca.Cert}, "not a DER SEQUENCE", false},
		{"stale", stale, []*x509.Certificate{ca.Cert}, "stale", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := VerifyFrom(tt.der, tt.candidates, now)
			var se *StaleError
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("VerifyFrom() = %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("VerifyFrom() = %v, want an error containing %q", err, tt.wantErr)
			case errors.As(err, &se) != tt.wantStale:
				t.Fatalf("VerifyFrom() = %v, stale %v, want stale %v", err, se != nil, tt.wantStale)
			}
			if (err == nil || tt.wantStale) && (v == nil || v.Issuer != ca.Cert || v.NextUpdate.IsZero()) {
				t.Errorf("VerifyFrom() = %+v, want the CA as issuer with the next update", v)
			}
		})
	}
}

// TestVerifyFromMemory verifies a CRL of 200,000 serials and checks that it allocates a small
// fraction of the CRL's size, unlike Parse, which indexes every serial.
func TestVerifyFromMemory(t *testing.T) {
	ca := newCA(t, "Memory CA", pki.ECDSAP256)
	der := largeCRL(t, ca, 200_000, 2)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := VerifyFrom(der, []*x509.Certificate{ca.Cert}, time.Now()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > uint64(len(der))/20 {
		t.Errorf("VerifyFrom allocated %d bytes for a CRL of %d bytes, want under 5%%", got, len(der))
	}
}
