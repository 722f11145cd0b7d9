package configfile_test

import (
	"testing"
	"time"

	"smartproxy/client/clienttest"
	"smartproxy/internal/pki"
)

func pkiRequestExpired() pki.Request {
	return pki.Request{CommonName: "expired.test", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}
}

func pkiRequestSoon() pki.Request {
	return pki.Request{CommonName: "soon.test", NotAfter: time.Now().Add(5 * 24 * time.Hour)}
}

// foreignCRL returns a CRL of a CA the configuration does not trust.
func foreignCRL(t *testing.T) []byte {
	t.Helper()
	ca, err := pki.NewCA("Foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// foreignCRLOf returns a new, empty CRL of the fixture's partner CA.
func foreignCRLOf(t *testing.T, f *clienttest.Files) []byte {
	t.Helper()
	crl, err := f.PartnerCA.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return crl
}
