package license

import (
	"crypto/ed25519"
	"errors"
)

// Build-time settings, set with -ldflags -X (only string variables can be).
var (
	// productionKeys is a comma-separated list of "keyid:base64(raw Ed25519
	// public key)" trusted in addition to (or instead of) the development
	// key.
	productionKeys = ""
	// allowDevKey is "false" in release builds, which then ignore licenses
	// signed with the development key.
	allowDevKey = "true"
)

// TrustedKeys returns the public keys this binary accepts license
// signatures from, by key ID: the production keys compiled in with -ldflags
// and, unless the build disallows it, the development key. It panics when
// the compiled-in key list is malformed, which is a build defect.
func TrustedKeys() map[string]ed25519.PublicKey {
	return nil
}

// ParseKeySet parses a comma-separated list of "keyid:base64pubkey" entries,
// the format of the productionKeys build setting and of `smartproxy-license
// keygen` output.
func ParseKeySet(s string) (map[string]ed25519.PublicKey, error) {
	return nil, errors.New("license: ParseKeySet not implemented yet")
}

// DevSigningKey returns the development signing key and its key ID, for
// tests and the demo.
func DevSigningKey() (ed25519.PrivateKey, string) {
	return nil, ""
}

// DevKeyAllowed reports whether this binary accepts the development key.
func DevKeyAllowed() bool { return allowDevKey != "false" }
