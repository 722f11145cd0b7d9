package license

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
)

// fileJSON is the outer document of a license file.
type fileJSON struct {
	// Format is always Format.
	Format string `json:"format"`
	// KeyID names the signing key; it repeats the payload's key_id so that
	// the key can be chosen before anything unverified is interpreted.
	KeyID string `json:"key_id"`
	// Payload is the license JSON, base64 (standard, padded).
	Payload string `json:"payload"`
	// Signature is the Ed25519 signature of signedMessage(payload), base64.
	Signature string `json:"signature"`
}

// signedMessage returns the bytes the signature covers: the format name, a
// NUL octet, then the payload bytes exactly as stored. The prefix keeps a
// license signature from being valid for any other kind of document signed
// with the same key.
func signedMessage(payload []byte) []byte {
	msg := make([]byte, 0, len(Format)+1+len(payload))
	msg = append(msg, Format...)
	msg = append(msg, 0)
	return append(msg, payload...)
}

var (
	keyIDPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	featurePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// maxCustomerLen limits License.Customer, in bytes.
const maxCustomerLen = 256

// validate checks the fields of a license (for Sign and Parse alike).
func (l *License) validate() error {
	if id, err := NormalizeProxyID(l.ProxyID); err != nil {
		return fmt.Errorf("proxy_id: %w", err)
	} else if id != l.ProxyID {
		return fmt.Errorf("proxy_id %q is not in canonical form %q", l.ProxyID, id)
	}
	c := l.Customer
	if strings.TrimSpace(c) == "" {
		return errors.New("customer is empty")
	}
	if len(c) > maxCustomerLen {
		return fmt.Errorf("customer is longer than %d bytes", maxCustomerLen)
	}
	if strings.IndexFunc(c, unicode.IsControl) >= 0 {
		return errors.New("customer contains control characters")
	}
	if l.IssuedAt.IsZero() || l.NotBefore.IsZero() || l.NotAfter.IsZero() {
		return errors.New("issued_at, not_before and not_after must all be set")
	}
	if !l.NotAfter.After(l.NotBefore) {
		return fmt.Errorf("not_after %s is not after not_before %s",
			l.NotAfter.Format(time.RFC3339), l.NotBefore.Format(time.RFC3339))
	}
	if l.MaxSessions < 0 {
		return fmt.Errorf("max_sessions %d is negative", l.MaxSessions)
	}
	for i, f := range l.Features {
		if !featurePattern.MatchString(f) {
			return fmt.Errorf("feature %q is not a lower-case name (a-z, 0-9, '-', '_')", f)
		}
		if slices.Contains(l.Features[:i], f) {
			return fmt.Errorf("feature %q is listed twice", f)
		}
	}
	if !keyIDPattern.MatchString(l.KeyID) {
		return fmt.Errorf("key_id %q is not 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'", l.KeyID)
	}
	return nil
}

// Sign returns a license file for l signed with key, which keyID names.
// It canonicalises the proxy ID, fills IssuedAt (now) and NotBefore
// (IssuedAt) when zero, normalises times to UTC with second precision and
// validates every field.
func Sign(l License, key ed25519.PrivateKey, keyID string) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("license: signing key has %d bytes, want an Ed25519 private key", len(key))
	}
	id, err := NormalizeProxyID(l.ProxyID)
	if err != nil {
		return nil, fmt.Errorf("license: %w", err)
	}
	l.ProxyID = id
	l.KeyID = keyID
	if l.IssuedAt.IsZero() {
		l.IssuedAt = time.Now()
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = l.IssuedAt
	}
	l.IssuedAt = l.IssuedAt.UTC().Truncate(time.Second)
	l.NotBefore = l.NotBefore.UTC().Truncate(time.Second)
	l.NotAfter = l.NotAfter.UTC().Truncate(time.Second)
	l.Features = slices.Clone(l.Features)
	if l.Features == nil {
		l.Features = []string{}
	}
	if err := l.validate(); err != nil {
		return nil, fmt.Errorf("license: cannot sign: %w", err)
	}
	payload, err := json.Marshal(&l)
	if err != nil {
		return nil, fmt.Errorf("license: encode payload: %w", err)
	}
	out, err := json.MarshalIndent(fileJSON{
		Format:    Format,
		KeyID:     keyID,
		Payload:   base64.StdEncoding.EncodeToString(payload),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, signedMessage(payload))),
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("license: encode file: %w", err)
	}
	return append(out, '\n'), nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// members and trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON document")
	}
	return nil
}

// decode splits a license file into its outer document and payload bytes.
func decode(file []byte) (*fileJSON, []byte, []byte, error) {
	if len(file) > MaxFileSize {
		return nil, nil, nil, &MalformedError{Reason: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	var f fileJSON
	if err := decodeStrict(file, &f); err != nil {
		return nil, nil, nil, &MalformedError{Reason: "not a license file (JSON)", Err: err}
	}
	if f.Format != Format {
		return nil, nil, nil, &MalformedError{Reason: fmt.Sprintf("format %q, want %q", f.Format, Format)}
	}
	if f.KeyID == "" || f.Payload == "" || f.Signature == "" {
		return nil, nil, nil, &MalformedError{Reason: "key_id, payload and signature must all be present"}
	}
	payload, err := base64.StdEncoding.Strict().DecodeString(f.Payload)
	if err != nil {
		return nil, nil, nil, &MalformedError{Reason: "payload is not base64", Err: err}
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(f.Signature)
	if err != nil {
		return nil, nil, nil, &MalformedError{Reason: "signature is not base64", Err: err}
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, nil, nil, &MalformedError{Reason: fmt.Sprintf("signature has %d bytes, want %d", len(sig), ed25519.SignatureSize)}
	}
	return &f, payload, sig, nil
}

// decodePayload decodes and validates the license fields.
func decodePayload(f *fileJSON, payload []byte) (*License, error) {
	var l License
	if err := decodeStrict(payload, &l); err != nil {
		return nil, &MalformedError{Reason: "payload is not license JSON", Err: err}
	}
	if l.KeyID != f.KeyID {
		return nil, &MalformedError{Reason: fmt.Sprintf("payload key_id %q differs from the file's %q", l.KeyID, f.KeyID)}
	}
	if err := l.validate(); err != nil {
		return nil, &MalformedError{Reason: "invalid field", Err: err}
	}
	return &l, nil
}

// Parse decodes a license file and verifies its signature with the key
// named by its key ID in keys. It returns a *MalformedError when the file is
// not a well-formed license, an *UnknownKeyError when keys has no key of that
// ID and a *SignatureError when the signature does not verify. Parse does not
// check validity for a host or time: see License.Check.
func Parse(file []byte, keys map[string]ed25519.PublicKey) (*License, error) {
	f, payload, sig, err := decode(file)
	if err != nil {
		return nil, err
	}
	pub, ok := keys[f.KeyID]
	if !ok {
		return nil, &UnknownKeyError{KeyID: f.KeyID}
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, signedMessage(payload), sig) {
		return nil, &SignatureError{KeyID: f.KeyID}
	}
	return decodePayload(f, payload)
}

// DecodeUnverified decodes a license file WITHOUT verifying its signature,
// for display by tools (`smartproxy-license inspect`). Nothing it returns may
// be trusted; use Parse for that.
func DecodeUnverified(file []byte) (*License, error) {
	f, payload, _, err := decode(file)
	if err != nil {
		return nil, err
	}
	return decodePayload(f, payload)
}

// Check returns nil when l is valid for proxyID at now, and otherwise an
// *InvalidError saying why: a different proxy ID, not yet valid, or expired
// (NotAfter is exclusive).
func (l *License) Check(proxyID string, now time.Time) error {
	if id, err := NormalizeProxyID(proxyID); err != nil || id != l.ProxyID {
		return &InvalidError{Reason: WrongProxy, ProxyID: proxyID, License: l, Now: now}
	}
	if now.Before(l.NotBefore) {
		return &InvalidError{Reason: NotYetValid, ProxyID: proxyID, License: l, Now: now}
	}
	if !now.Before(l.NotAfter) {
		return &InvalidError{Reason: Expired, ProxyID: proxyID, License: l, Now: now}
	}
	return nil
}

// StatusOf summarises the outcome of loading a license: l and loadErr as
// returned by Load or Parse (loadErr wins when not nil; a nil l without
// error means none is installed), checked for proxyID at now.
func StatusOf(l *License, loadErr error, proxyID string, now time.Time) Status {
	s := Status{ProxyID: proxyID}
	switch {
	case loadErr != nil:
		s.Reason = loadErr.Error()
		return s
	case l == nil:
		s.Reason = "no license installed"
		return s
	}
	s.Customer, s.NotAfter, s.MaxSessions = l.Customer, l.NotAfter, l.MaxSessions
	if err := l.Check(proxyID, now); err != nil {
		s.Reason = err.Error()
		return s
	}
	s.Valid = true
	return s
}
