package license

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DevKeyID is the key ID of the development license key. Its private half is
// public (package devkey, linked only by smartproxy-license and tests).
const DevKeyID = "dev-1"

// devPublicKey is the public half of the development key (base64 of the raw
// Ed25519 key). Only the public half is compiled into the daemons: a daemon
// never links a private key.
const devPublicKey = "0fDShkDRSOBZfyRH8rCvZ/FhGZ/eWIqcDRdrICpASwA="

// Build-time settings, set with -ldflags -X (only string variables can be).
// They are never changed at run time.
var (
	// productionKeys is a comma-separated list of "keyid:base64(raw Ed25519
	// public key)" trusted in addition to the development key (if allowed).
	productionKeys = ""
	// allowDevKey is "true" in development builds. Release builds set it to
	// "false"; any value other than "true" rejects licenses signed with the
	// development key.
	allowDevKey = "true"
)

// TrustedKeys returns the public keys this binary accepts license
// signatures from, by key ID: the production keys compiled in with -ldflags
// and, unless the build disallows it, the development key. It panics when
// the compiled-in key list is malformed, which is a build defect that the
// first start of the binary reveals.
func TrustedKeys() map[string]ed25519.PublicKey {
	keys, err := ParseKeySet(productionKeys)
	if err != nil {
		panic(fmt.Sprintf("license: malformed productionKeys build setting: %v", err))
	}
	if DevKeyAllowed() {
		if _, dup := keys[DevKeyID]; dup {
			panic(fmt.Sprintf("license: production key ID %q clashes with the development key", DevKeyID))
		}
		keys[DevKeyID] = DevPublicKey()
	}
	return keys
}

// ParseKeySet parses a comma-separated list of "keyid:base64pubkey" entries
// (standard base64 of the 32-byte Ed25519 public key), the format of the
// productionKeys build setting and of `smartproxy-license keygen` output.
// Spaces around entries are ignored; an empty string is an empty set.
func ParseKeySet(s string) (map[string]ed25519.PublicKey, error) {
	keys := make(map[string]ed25519.PublicKey)
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		id, b64, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("key entry %q is not keyid:base64pubkey", entry)
		}
		if !keyIDPattern.MatchString(id) {
			return nil, fmt.Errorf("key ID %q is not 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'", id)
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("key %q: public key is not base64: %w", id, err)
		}
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %q: public key has %d bytes, want %d", id, len(raw), ed25519.PublicKeySize)
		}
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("key ID %q is listed twice", id)
		}
		keys[id] = ed25519.PublicKey(raw)
	}
	return keys, nil
}

// FormatKeySet is the inverse of ParseKeySet, with entries sorted by key ID.
func FormatKeySet(keys map[string]ed25519.PublicKey) string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(keys)) {
		parts = append(parts, id+":"+base64.StdEncoding.EncodeToString(keys[id]))
	}
	return strings.Join(parts, ",")
}

// KeyIDFor derives a key ID from a public key: "k-" and the first 12 hex
// digits of its SHA-256. Tools use it when the operator names no key ID.
func KeyIDFor(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "k-" + hex.EncodeToString(sum[:6])
}

// ParsePrivateKeyPEM reads an Ed25519 private key from a PKCS #8 PEM
// "PRIVATE KEY" block, as written by `smartproxy-license keygen` and
// `openssl genpkey -algorithm ed25519`.
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("license: no PEM \"PRIVATE KEY\" block (PKCS #8) found")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("license: parse PKCS #8 key: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("license: key is %T, want Ed25519", k)
	}
	return key, nil
}

// EncodePrivateKeyPEM returns key as a PKCS #8 PEM "PRIVATE KEY" block.
func EncodePrivateKeyPEM(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("license: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// DevPublicKey returns the public half of the development key (key ID
// DevKeyID), whether or not this build trusts it.
func DevPublicKey() ed25519.PublicKey {
	raw, err := base64.StdEncoding.DecodeString(devPublicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		panic("license: compiled-in development public key is broken")
	}
	return ed25519.PublicKey(raw)
}

// DevKeyAllowed reports whether this binary accepts the development key:
// only when built with allowDevKey "true", the default.
func DevKeyAllowed() bool { return allowDevKey == "true" }
