// Package devkey holds the DEVELOPMENT license signing key of SmartProxy.
//
// Its private half is public: it is committed here so that tests, the demo
// and developers can issue licenses (`smartproxy-license issue --dev`).
// Licenses signed with it carry the key ID DevKeyID and are accepted only by
// binaries built with the development key allowed, which is the default.
// Release builds switch it off and compile in the production keys:
//
//	go build -ldflags "-X smartproxy/internal/license.productionKeys=prod-1:BASE64PUB \
//	                   -X smartproxy/internal/license.allowDevKey=false" ./cmd/smartproxy-server
//
// Never use this key for a license a customer relies on.
package devkey

import _ "embed"

// DevKeyID is the key ID of the development key.
const DevKeyID = "dev-1"

// PrivateKeyPEM is the development Ed25519 private key in PKCS #8 PEM form.
//
//go:embed dev-license-key.pem
var PrivateKeyPEM []byte
