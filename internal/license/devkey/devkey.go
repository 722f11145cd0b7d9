// Package devkey holds the private half of the DEVELOPMENT license signing key of SmartProxy.
//
// Its private half is public: it is committed here so that tests, the demo and developers can
// issue licenses (`smartproxy-license issue --dev`). Licenses signed with it carry the key ID
// license.DevKeyID and are accepted only by binaries built with the development key allowed,
// which is the default of `make build`; `make release` refuses it and compiles in the production
// public keys instead (docs/license.md).
//
// Only smartproxy-license and tests import this package (internal/archtest enforces it): the
// daemons link the public half alone (license.DevPublicKey). It imports nothing of this project,
// so that tests of package license can use it.
//
// Never use this key for a license a customer relies on.
package devkey

import (
	"crypto/ed25519"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
)

// KeyID is the key ID of the development key; it equals license.DevKeyID (a test checks it).
const KeyID = "dev-1"

// privateKeyPEM is the development Ed25519 private key in PKCS #8 PEM form.
//
//go:embed dev-license-key.pem
var privateKeyPEM []byte

// SigningKey returns the development signing key and its key ID.
func SigningKey() (ed25519.PrivateKey, string) {
	block, _ := pem.Decode(privateKeyPEM)
	if block == nil {
		panic("devkey: embedded development key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		panic("devkey: embedded development key is broken: " + err.Error())
	}
	return k.(ed25519.PrivateKey), KeyID
}
