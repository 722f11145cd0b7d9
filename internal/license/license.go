package license

import (
	"fmt"
	"time"
)

// Format is the value of the "format" member of every license file this
// package writes and the only one it reads.
const Format = "smartproxy-license-v1"

// MaxFileSize is the largest license file Parse and Load accept.
const MaxFileSize = 64 << 10

// License is the content of a license file.
type License struct {
	// ProxyID is the Proxy ID (see ProxyID) of the one host the license is
	// for, in canonical form "SPX-XXXX-XXXX-XXXX-XXXX".
	ProxyID string `json:"proxy_id"`
	// Customer names the licensee. It must not be empty.
	Customer string `json:"customer"`
	// IssuedAt is when the license was signed. If zero, Sign uses the
	// current time.
	IssuedAt time.Time `json:"issued_at"`
	// NotBefore is the start of validity. If zero, Sign uses IssuedAt.
	NotBefore time.Time `json:"not_before"`
	// NotAfter is the end of validity (exclusive). It must be after
	// NotBefore.
	NotAfter time.Time `json:"not_after"`
	// MaxSessions limits concurrent partner sessions; 0 means unlimited.
	MaxSessions int `json:"max_sessions"`
	// Features lists licensed optional features by name (lower case
	// letters, digits, '-' and '_'). Empty means none.
	Features []string `json:"features"`
	// KeyID identifies the key that signed the license. Sign sets it.
	KeyID string `json:"key_id"`
}

// HasFeature reports whether the license lists feature name.
func (l *License) HasFeature(name string) bool {
	for _, f := range l.Features {
		if f == name {
			return true
		}
	}
	return false
}

// MalformedError reports a license file that cannot be decoded or whose
// fields are invalid.
type MalformedError struct {
	// Reason says what is wrong, in words.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

// Error implements error.
func (e *MalformedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("license: malformed license file: %s: %v", e.Reason, e.Err)
	}
	return "license: malformed license file: " + e.Reason
}

// Unwrap returns the underlying error.
func (e *MalformedError) Unwrap() error { return e.Err }

// UnknownKeyError reports a license signed with a key that is not trusted.
type UnknownKeyError struct {
	// KeyID is the key ID named by the license.
	KeyID string
}

// Error implements error.
func (e *UnknownKeyError) Error() string {
	if e.KeyID == DevKeyID {
		return fmt.Sprintf("license: signed with unknown key %q: the development key, which this release build refuses; a customer license is signed with a production key", e.KeyID)
	}
	return fmt.Sprintf("license: signed with unknown key %q (not among the keys this binary trusts)", e.KeyID)
}

// SignatureError reports a license whose signature does not verify: it was
// altered after signing or signed with a different key of the same ID.
type SignatureError struct {
	// KeyID is the key ID named by the license.
	KeyID string
}

// Error implements error.
func (e *SignatureError) Error() string {
	return fmt.Sprintf("license: signature does not verify with key %q: the file was altered or not signed by that key", e.KeyID)
}

// InvalidReason says why a correctly signed license is not valid.
type InvalidReason int

// Reasons for InvalidError.
const (
	// WrongProxy means the license is for another Proxy ID.
	WrongProxy InvalidReason = iota + 1
	// NotYetValid means the license's NotBefore is in the future.
	NotYetValid
	// Expired means the license's NotAfter has passed.
	Expired
)

// String returns "wrong-proxy-id", "not-yet-valid" or "expired".
func (r InvalidReason) String() string {
	switch r {
	case WrongProxy:
		return "wrong-proxy-id"
	case NotYetValid:
		return "not-yet-valid"
	case Expired:
		return "expired"
	}
	return fmt.Sprintf("InvalidReason(%d)", int(r))
}

// InvalidError reports a correctly signed license that is not valid for
// this proxy now.
type InvalidError struct {
	// Reason says why.
	Reason InvalidReason
	// ProxyID is the proxy ID the license was checked for.
	ProxyID string
	// License is the license checked.
	License *License
	// Now is the time it was checked at.
	Now time.Time
}

// Error implements error.
func (e *InvalidError) Error() string {
	l := e.License
	switch e.Reason {
	case WrongProxy:
		return fmt.Sprintf("license: issued for proxy ID %s, this proxy is %s", l.ProxyID, e.ProxyID)
	case NotYetValid:
		return fmt.Sprintf("license: not valid before %s", l.NotBefore.UTC().Format(time.RFC3339))
	case Expired:
		return fmt.Sprintf("license: expired at %s", l.NotAfter.UTC().Format(time.RFC3339))
	}
	return "license: invalid: " + e.Reason.String()
}

// Status is a summary of the license state, as reported over the tunnel
// (LicenseStatus) and by `smartproxy-server -V`.
type Status struct {
	// ProxyID is the Proxy ID of this host.
	ProxyID string
	// Valid is true when a license is installed, verified and valid now.
	Valid bool
	// Customer is the licensee, or "" without a license.
	Customer string
	// NotAfter is the end of validity, or zero without a license.
	NotAfter time.Time
	// MaxSessions is the licensed session limit (0 unlimited).
	MaxSessions int
	// Reason says why the license is not valid; "" when Valid.
	Reason string
}

// String returns a one-line summary of s for logs and `-V`.
func (s Status) String() string {
	if s.Valid {
		return fmt.Sprintf("license valid for proxy %s (customer %q) until %s, max sessions %s",
			s.ProxyID, s.Customer, s.NotAfter.UTC().Format(time.RFC3339), sessionsString(s.MaxSessions))
	}
	return fmt.Sprintf("no valid license for proxy %s: %s", s.ProxyID, s.Reason)
}

func sessionsString(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}
