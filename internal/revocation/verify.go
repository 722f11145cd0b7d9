package revocation

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"time"
)

// Verified describes a CRL that VerifyFrom checked.
type Verified struct {
	// Issuer is the candidate certificate that signed the CRL.
	Issuer *x509.Certificate
	// ThisUpdate and NextUpdate are the CRL's; NextUpdate is zero when the CRL has none.
	ThisUpdate, NextUpdate time.Time
}

// VerifyFrom checks a CRL as ParseFrom does — structure, CRL extensions, issuer among
// candidates, signature — without indexing its entries, so that it costs no memory per entry.
// It is for a party that passes the CRL on (the proxy client) and wants a clear error early;
// the entries themselves are checked by Parse where the CRL is used.
//
// If the CRL's nextUpdate lies before now, VerifyFrom returns the result and a *StaleError. A
// zero now skips that check.
func VerifyFrom(der []byte, candidates []*x509.Certificate, now time.Time) (*Verified, error) {
	raw, err := parseRaw(der)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, c := range candidates {
		if c == nil || !bytes.Equal(c.RawSubject, raw.issuer) {
			continue
		}
		if len(raw.akid) > 0 && len(c.SubjectKeyId) > 0 && !bytes.Equal(raw.akid, c.SubjectKeyId) {
			continue
		}
		if err := raw.verify(c); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		v := &Verified{Issuer: c, ThisUpdate: raw.thisUpdate, NextUpdate: raw.nextUpdate}
		if !now.IsZero() && !raw.nextUpdate.IsZero() && now.After(raw.nextUpdate) {
			return v, &StaleError{Issuer: c.Subject.String(), NextUpdate: raw.nextUpdate, Now: now}
		}
		return v, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("revocation: no trusted CA certificate is the issuer of the CRL of %q", nameString(raw.issuer))
}
