package backend_test

import (
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
