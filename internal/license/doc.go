// Package license reads, verifies, checks and stores the signed license
// files of the SmartProxy DMZ server, and computes the host's Proxy ID that
// a license is bound to.
//
// A license file is a small JSON document holding a payload (the license
// fields as JSON, base64-encoded so that the signed bytes are exactly the
// bytes stored) and an Ed25519 signature over a domain-separated form of that
// payload; docs/license.md specifies the format. Parse verifies a file with a
// set of trusted public keys, License.Check tells whether a verified license
// is valid for a proxy at a time, and Store replaces the license file
// atomically after verifying the new one.
//
// The trusted keys are compiled into the binary (TrustedKeys): production
// keys set at link time with -ldflags -X, plus the public half of the
// development key unless the build disallows it (release builds do: `make
// release`, docs/license.md). The development private key lives in package
// devkey, which only smartproxy-license and tests may import.
package license
