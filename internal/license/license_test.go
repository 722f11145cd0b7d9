package license

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"smartproxy/internal/license/devkey"
)

const testProxyID = "SPX-0123-4567-89AB-CDEF"

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func testLicense(now time.Time) License {
	return License{
		ProxyID:     testProxyID,
		Customer:    "Example Automotive GmbH",
		IssuedAt:    now.Add(-time.Hour),
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(30 * 24 * time.Hour),
		MaxSessions: 250,
		Features:    []string{"outgoing", "ha"},
	}
}

func mustSign(t *testing.T, l License, key ed25519.PrivateKey, id string) []byte {
	t.Helper()
	file, err := Sign(l, key, id)
	if err != nil {
		t.Fatalf("Sign() error = %v", err)
	}
	return file
}

// signRaw signs arbitrary payload bytes, to reach the payload checks that
// only a correctly signed file gets to.
func signRaw(t *testing.T, payload []byte, key ed25519.PrivateKey, id string) []byte {
	t.Helper()
	out, err := json.Marshal(fileJSON{Format: Format, KeyID: id,
		Payload:   base64.StdEncoding.EncodeToString(payload),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, signedMessage(payload)))})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSignParseRoundTrip(t *testing.T) {
	now := time.Now()
	pub, priv := newKey(t)
	devKey, devID := devkey.SigningKey()
	for _, tc := range []struct {
		name string
		key  ed25519.PrivateKey
		id   string
		keys map[string]ed25519.PublicKey
	}{
		{"fresh key", priv, "prod-1", map[string]ed25519.PublicKey{"prod-1": pub}},
		{"development key", devKey, devID, TrustedKeys()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testLicense(now)
			in.ProxyID = "spx 0123 4567 89ab cdef" // Sign canonicalises
			file := mustSign(t, in, tc.key, tc.id)
			got, err := Parse(file, tc.keys)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			want := testLicense(now)
			want.KeyID = tc.id
			want.IssuedAt = want.IssuedAt.UTC().Truncate(time.Second)
			want.NotBefore = want.NotBefore.UTC().Truncate(time.Second)
			want.NotAfter = want.NotAfter.UTC().Truncate(time.Second)
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("Parse(Sign(l)) mismatch (-want +got):\n%s", diff)
			}
			if err := got.Check(testProxyID, now); err != nil {
				t.Errorf("Check() error = %v, want nil", err)
			}
			if !got.HasFeature("ha") || got.HasFeature("other") {
				t.Errorf("HasFeature(ha), HasFeature(other) = %t, %t, want true, false", got.HasFeature("ha"), got.HasFeature("other"))
			}
			// DecodeUnverified shows the same fields without a key.
			u, err := DecodeUnverified(file)
			if err != nil || !cmp.Equal(u, got) {
				t.Errorf("DecodeUnverified() = %+v, %v, want %+v", u, err, got)
			}
		})
	}
}

func TestSignDefaults(t *testing.T) {
	_, priv := newKey(t)
	before := time.Now().Add(-time.Second)
	file := mustSign(t, License{ProxyID: testProxyID, Customer: "C", NotAfter: time.Now().Add(time.Hour)}, priv, "k")
	l, err := DecodeUnverified(file)
	if err != nil {
		t.Fatal(err)
	}
	if l.IssuedAt.Before(before) || !l.NotBefore.Equal(l.IssuedAt) || l.IssuedAt.Location() != time.UTC {
		t.Errorf("IssuedAt, NotBefore = %v, %v, want now in UTC twice", l.IssuedAt, l.NotBefore)
	}
	if l.Features == nil || len(l.Features) != 0 || l.MaxSessions != 0 {
		t.Errorf("Features, MaxSessions = %#v, %d, want empty, 0", l.Features, l.MaxSessions)
	}
}

func TestSignErrors(t *testing.T) {
	now := time.Now()
	_, priv := newKey(t)
	tests := []struct {
		name   string
		modify func(l *License)
		key    ed25519.PrivateKey
		id     string
		want   string
	}{
		{"short key", nil, priv[:10], "k", "Ed25519 private key"},
		{"bad proxy id", func(l *License) { l.ProxyID = "host-1" }, priv, "k", "not a Proxy ID"},
		{"empty customer", func(l *License) { l.Customer = " " }, priv, "k", "customer is empty"},
		{"control character", func(l *License) { l.Customer = "a\nb" }, priv, "k", "control characters"},
		{"long customer", func(l *License) { l.Customer = strings.Repeat("x", 300) }, priv, "k", "longer than"},
		{"no end", func(l *License) { l.NotAfter = time.Time{} }, priv, "k", "must all be set"},
		{"end before start", func(l *License) { l.NotAfter = l.NotBefore.Add(-time.Hour) }, priv, "k", "is not after"},
		{"negative sessions", func(l *License) { l.MaxSessions = -1 }, priv, "k", "negative"},
		{"bad feature", func(l *License) { l.Features = []string{"Outgoing"} }, priv, "k", "lower-case name"},
		{"duplicate feature", func(l *License) { l.Features = []string{"a", "a"} }, priv, "k", "listed twice"},
		{"bad key id", nil, priv, "key id", "key_id"},
		{"empty key id", nil, priv, "", "key_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLicense(now)
			if tt.modify != nil {
				tt.modify(&l)
			}
			if _, err := Sign(l, tt.key, tt.id); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Sign() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	now := time.Now()
	pubA, privA := newKey(t)
	pubB, _ := newKey(t)
	keys := map[string]ed25519.PublicKey{"a": pubA}
	good := mustSign(t, testLicense(now), privA, "a")

	var doc fileJSON
	if err := json.Unmarshal(good, &doc); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(doc.Payload)
	reencode := func(f func(d *fileJSON)) []byte {
		d := doc
		f(&d)
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tamperedPayload := reencode(func(d *fileJSON) {
		d.Payload = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"max_sessions":250`, `"max_sessions":0`, 1)))
	})
	sig, _ := base64.StdEncoding.DecodeString(doc.Signature)
	sig[0] ^= 1
	tamperedSig := reencode(func(d *fileJSON) { d.Signature = base64.StdEncoding.EncodeToString(sig) })
	payloadWith := func(mod func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		mod(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return signRaw(t, b, privA, "a")
	}

	type errKind int
	const (
		malformed errKind = iota
		unknownKey
		badSignature
	)
	tests := []struct {
		name string
		file []byte
		keys map[string]ed25519.PublicKey
		kind errKind
		want string
	}{
		{"tampered payload", tamperedPayload, keys, badSignature, "does not verify"},
		{"tampered signature", tamperedSig, keys, badSignature, "does not verify"},
		{"other key of the same ID", good, map[string]ed25519.PublicKey{"a": pubB}, badSignature, "does not verify"},
		{"unknown key", good, map[string]ed25519.PublicKey{"b": pubB}, unknownKey, `unknown key "a"`},
		{"no keys", good, nil, unknownKey, "unknown key"},
		{"empty", nil, keys, malformed, "not a license file"},
		{"not JSON", []byte("SPX license\n"), keys, malformed, "not a license file"},
		{"trailing data", append(append([]byte{}, good...), []byte("{}")...), keys, malformed, "after the JSON"},
		{"too large", append(append([]byte{}, good...), make([]byte, MaxFileSize)...), keys, malformed, "larger than"},
		{"unknown member", []byte(strings.Replace(string(good), `"format"`, `"extra": 1, "format"`, 1)), keys, malformed, "unknown field"},
		{"wrong format", reencode(func(d *fileJSON) { d.Format = "smartproxy-license-v0" }), keys, malformed, "format"},
		{"missing signature", reencode(func(d *fileJSON) { d.Signature = "" }), keys, malformed, "must all be present"},
		{"payload not base64", reencode(func(d *fileJSON) { d.Payload = "!!!" }), keys, malformed, "payload is not base64"},
		{"signature not base64", reencode(func(d *fileJSON) { d.Signature = "%%" }), keys, malformed, "signature is not base64"},
		{"short signature", reencode(func(d *fileJSON) { d.Signature = "AAAA" }), keys, malformed, "signature has 3 bytes"},
		{"payload not JSON", signRaw(t, []byte("hello"), privA, "a"), keys, malformed, "payload is not license JSON"},
		{"payload extra field", payloadWith(func(m map[string]any) { m["unlimited"] = true }), keys, malformed, "unknown field"},
		{"payload key id differs", payloadWith(func(m map[string]any) { m["key_id"] = "b" }), keys, malformed, "differs"},
		{"payload bad proxy id", payloadWith(func(m map[string]any) { m["proxy_id"] = "spx-0123-4567-89ab-cdef" }), keys, malformed, "canonical form"},
		{"payload bad time", payloadWith(func(m map[string]any) { m["not_after"] = "tomorrow" }), keys, malformed, "payload is not license JSON"},
		{"payload negative sessions", payloadWith(func(m map[string]any) { m["max_sessions"] = -5 }), keys, malformed, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse(tt.file, tt.keys)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() = %v, %v, want error containing %q", l, err, tt.want)
			}
			var me *MalformedError
			var uk *UnknownKeyError
			var se *SignatureError
			got := map[errKind]bool{malformed: errors.As(err, &me), unknownKey: errors.As(err, &uk), badSignature: errors.As(err, &se)}
			for k, ok := range got {
				if ok != (k == tt.kind) {
					t.Errorf("Parse() error %T %v: kind %d matched = %t, want kind %d", err, err, k, ok, tt.kind)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	now := time.Now()
	_, priv := newKey(t)
	l, err := DecodeUnverified(mustSign(t, testLicense(now), priv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		proxyID string
		at      time.Time
		want    InvalidReason // 0: valid
		msg     string
	}{
		{"valid", testProxyID, now, 0, ""},
		{"valid, other spelling", "spx-0123-4567-89ab-cdef", now, 0, ""},
		{"valid at not_before", testProxyID, l.NotBefore, 0, ""},
		{"wrong proxy", "SPX-0123-4567-89AB-CDEE", now, WrongProxy, "issued for proxy ID " + testProxyID + ", this proxy is SPX-0123-4567-89AB-CDEE"},
		{"garbage proxy", "nonsense", now, WrongProxy, "this proxy is nonsense"},
		{"not yet valid", testProxyID, l.NotBefore.Add(-time.Second), NotYetValid, "not valid before"},
		{"expired at not_after", testProxyID, l.NotAfter, Expired, "expired at"},
		{"expired later", testProxyID, l.NotAfter.Add(time.Hour), Expired, "expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Check(tt.proxyID, tt.at)
			if tt.want == 0 {
				if err != nil {
					t.Fatalf("Check(%q, %v) = %v, want nil", tt.proxyID, tt.at, err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Reason != tt.want {
				t.Fatalf("Check(%q, %v) = %v, want *InvalidError %v", tt.proxyID, tt.at, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Check() error = %q, want it to contain %q", err, tt.msg)
			}
		})
	}
	for r, want := range map[InvalidReason]string{WrongProxy: "wrong-proxy-id", NotYetValid: "not-yet-valid", Expired: "expired", 9: "InvalidReason(9)"} {
		if got := r.String(); got != want {
			t.Errorf("InvalidReason(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}

func TestStatusOf(t *testing.T) {
	now := time.Now()
	_, priv := newKey(t)
	l, err := DecodeUnverified(mustSign(t, testLicense(now), priv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	loadErr := &SignatureError{KeyID: "a"}
	tests := []struct {
		name      string
		l         *License
		err       error
		at        time.Time
		wantValid bool
		reason    string
	}{
		{"valid", l, nil, now, true, ""},
		{"expired", l, nil, l.NotAfter, false, "expired"},
		{"load error", nil, loadErr, now, false, "signature does not verify"},
		{"none", nil, nil, now, false, "no license installed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := StatusOf(tt.l, tt.err, testProxyID, tt.at)
			if s.Valid != tt.wantValid || !strings.Contains(s.Reason, tt.reason) || (tt.reason == "") != (s.Reason == "") {
				t.Errorf("StatusOf() = %+v, want valid %t, reason containing %q", s, tt.wantValid, tt.reason)
			}
			if s.ProxyID != testProxyID {
				t.Errorf("StatusOf().ProxyID = %q, want %q", s.ProxyID, testProxyID)
			}
			if tt.l != nil && (!s.NotAfter.Equal(l.NotAfter) || s.Customer != l.Customer || s.MaxSessions != 250) {
				t.Errorf("StatusOf() = %+v, want the license's customer, expiry and limit", s)
			}
			str := s.String()
			if tt.wantValid != strings.HasPrefix(str, "license valid") {
				t.Errorf("Status.String() = %q", str)
			}
		})
	}
}
