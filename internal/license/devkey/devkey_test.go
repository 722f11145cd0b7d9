package devkey_test

import (
	"crypto/ed25519"
	"testing"

	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
)

// TestMatchesLicensePublicKey ties the private key here to the public half and key ID that the
// daemons compile in.
func TestMatchesLicensePublicKey(t *testing.T) {
	key, id := devkey.SigningKey()
	if id != license.DevKeyID {
		t.Errorf("SigningKey() key ID = %q, want license.DevKeyID %q", id, license.DevKeyID)
	}
	if !key.Public().(ed25519.PublicKey).Equal(license.DevPublicKey()) {
		t.Error("SigningKey()'s public half differs from license.DevPublicKey()")
	}
}
