package revocation

import (
	"crypto/x509"
	"errors"
	"fmt"
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
// change.
type Checker struct {
	byIssuer map[string][]*CRL // issuerKey → CRLs, one per scope
	covered  map[string]bool   // URLs the CRLs were fetched from or cover
	crls     []*CRL
}

// NewChecker returns a Checker over crls. Nil entries are ignored. When two
// CRLs have the same issuer and scope (issuing distribution point), the newer
// one wins: the higher cRLNumber, or the later thisUpdate when a number is
// missing.
func NewChecker(crls ...*CRL) *Checker {
	return &Checker{}
}

// CRLs returns the CRLs the checker uses, in no particular order.
func (ch *Checker) CRLs() []*CRL { return append([]*CRL(nil), ch.crls...) }

// Check returns the revocation state of cert, which issuer issued. If issuer
// is nil, cert's issuer name and authority key identifier select the CRL. It
// fails only on misuse: a nil cert, or an issuer whose subject is not cert's
// issuer.
func (ch *Checker) Check(cert, issuer *x509.Certificate) (Status, error) {
	r, err := ch.Lookup(cert, issuer)
	return r.Status, err
}

// Lookup is Check with the reason and the deciding CRL.
func (ch *Checker) Lookup(cert, issuer *x509.Certificate) (Result, error) {
	return Result{}, errors.New("revocation: Lookup not implemented yet")
}

// MissingDistributionPoints returns the CRL distribution point URLs of cert
// that no CRL of the checker covers: none was fetched from that URL
// (CRL.WithURL) and none names it in its issuing distribution point. The
// result keeps cert's order, without duplicates; it is empty when every URL
// is covered or cert names none.
func (ch *Checker) MissingDistributionPoints(cert *x509.Certificate) []string {
	return nil
}
