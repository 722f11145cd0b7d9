package revocation

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Status is the revocation state of a certificate according to a Checker.
type Status int

// Revocation states.
const (
	// NoCRL means that no CRL of the checker covers the certificate. The
	// caller decides whether to accept it (soft-fail) and should report the
	// certificate's distribution points (MissingDistributionPoints).
	NoCRL Status = iota
	// Good means that a CRL covers the certificate and does not list it.
	Good
	// Revoked means that a CRL covering the certificate lists it.
	Revoked
)

// String returns "no-crl", "good" or "revoked".
func (s Status) String() string {
	switch s {
	case NoCRL:
		return "no-crl"
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the detailed answer of Checker.Lookup.
type Result struct {
	// Status is the revocation state.
	Status Status
	// Reason is the CRL's reason when Status is Revoked, else zero.
	Reason Reason
	// CRL is the list that decided, or nil when Status is NoCRL.
	CRL *CRL
}

// Checker answers revocation questions from a fixed set of CRLs. It is
// immutable and safe for concurrent use; build a new one when the CRLs
// change. It does not look at the clock: a CRL whose nextUpdate has passed
// keeps answering (it is still the best knowledge available), and callers
// that want to warn about that watch CRL.NextUpdate. The zero Checker has no
// CRLs and answers NoCRL.
type Checker struct {
	byIssuer map[string][]*CRL // DER issuer name → CRLs, one per key ID and scope
	covered  map[string]bool   // URLs the CRLs were fetched from or cover
	crls     []*CRL
}

// scopeKey identifies what a CRL replaces: the CRL of the same issuer, key
// and issuing distribution point.
func scopeKey(c *CRL) string {
	var b strings.Builder
	b.Write(c.rawIssuer)
	b.WriteString("\x00")
	b.Write(c.keyID)
	for _, u := range c.idpURLs {
		b.WriteString("\x00")
		b.WriteString(u)
	}
	fmt.Fprintf(&b, "\x00%t%t", c.onlyUserCerts, c.onlyCACerts)
	return b.String()
}

// newer reports whether a supersedes b (same scope).
func newer(a, b *CRL) bool {
	if a.number != nil && b.number != nil && a.number.Cmp(b.number) != 0 {
		return a.number.Cmp(b.number) > 0
	}
	return a.thisUpdate.After(b.thisUpdate)
}

// NewChecker returns a Checker over crls. Nil entries are ignored. When two
// CRLs have the same issuer, key and scope (issuing distribution point),
// only the newer one is used: the higher cRLNumber, or the later thisUpdate
// when either lacks a number.
func NewChecker(crls ...*CRL) *Checker {
	latest := make(map[string]*CRL)
	var order []string
	for _, c := range crls {
		if c == nil {
			continue
		}
		k := scopeKey(c)
		old, ok := latest[k]
		if !ok {
			order = append(order, k)
		}
		if !ok || newer(c, old) {
			latest[k] = c
		}
	}
	ch := &Checker{byIssuer: make(map[string][]*CRL), covered: make(map[string]bool)}
	for _, k := range order {
		c := latest[k]
		ch.crls = append(ch.crls, c)
		ch.byIssuer[string(c.rawIssuer)] = append(ch.byIssuer[string(c.rawIssuer)], c)
		if c.url != "" {
			ch.covered[c.url] = true
		}
		for _, u := range c.idpURLs {
			ch.covered[u] = true
		}
	}
	return ch
}

// CRLs returns the CRLs the checker uses, in the order given to NewChecker.
func (ch *Checker) CRLs() []*CRL { return slices.Clone(ch.crls) }

// Check returns the revocation state of cert, which issuer issued. If issuer
// is nil, cert's issuer name and authority key identifier select the CRL. It
// fails only on misuse: a nil cert, or an issuer whose subject is not cert's
// issuer.
func (ch *Checker) Check(cert, issuer *x509.Certificate) (Status, error) {
	r, err := ch.Lookup(cert, issuer)
	return r.Status, err
}

// Lookup is Check with the reason and the deciding CRL.
//
// A certificate is Revoked when any CRL of its issuer (same issuer name and,
// where both sides name one, the same key identifier) lists its serial
// number: a serial number identifies one certificate of an issuer, whatever
// partition of the issuer's CRLs lists it. It is Good when a CRL whose scope
// covers it does not list it: a CRL without issuingDistributionPoint, or one
// whose distribution point URLs include one of the certificate's and whose
// onlyContainsUserCerts / onlyContainsCACerts flags fit it. Otherwise the
// result is NoCRL.
func (ch *Checker) Lookup(cert, issuer *x509.Certificate) (Result, error) {
	if cert == nil {
		return Result{}, errors.New("revocation: Check of a nil certificate")
	}
	kid := cert.AuthorityKeyId
	if issuer != nil {
		if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) {
			return Result{}, fmt.Errorf("revocation: %q is not the issuer of %q (issued by %q)",
				issuer.Subject.String(), cert.Subject.String(), cert.Issuer.String())
		}
		if len(issuer.SubjectKeyId) > 0 {
			kid = issuer.SubjectKeyId
		}
	}
	var covering *CRL
	for _, c := range ch.byIssuer[string(cert.RawIssuer)] {
		if len(kid) > 0 && len(c.keyID) > 0 && !bytes.Equal(kid, c.keyID) {
			continue
		}
		if reason, ok := c.Lookup(cert.SerialNumber); ok {
			return Result{Status: Revoked, Reason: reason, CRL: c}, nil
		}
		if covering == nil && c.covers(cert) {
			covering = c
		}
	}
	if covering == nil {
		return Result{Status: NoCRL}, nil
	}
	return Result{Status: Good, CRL: covering}, nil
}

// covers reports whether cert is in the scope of c (RFC 5280 §5.2.5).
func (c *CRL) covers(cert *x509.Certificate) bool {
	if (c.onlyUserCerts && cert.IsCA) || (c.onlyCACerts && !cert.IsCA) {
		return false
	}
	if len(c.idpURLs) == 0 {
		return true
	}
	for _, u := range cert.CRLDistributionPoints {
		if slices.Contains(c.idpURLs, u) {
			return true
		}
	}
	return false
}

// MissingDistributionPoints returns the CRL distribution point URLs of cert
// that no CRL of the checker covers: none was fetched from that URL
// (CRL.WithURL) and none names it in its issuing distribution point. The
// result keeps cert's order, without duplicates; it is empty when every URL
// is covered or cert names none.
func (ch *Checker) MissingDistributionPoints(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	var missing []string
	for _, u := range cert.CRLDistributionPoints {
		if !ch.covered[u] && !slices.Contains(missing, u) {
			missing = append(missing, u)
		}
	}
	return missing
}
