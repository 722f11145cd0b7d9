package revocation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Reason is the RFC 5280 §5.3.1 CRLReason of a revoked certificate.
type Reason uint8

// CRL reasons (RFC 5280 §5.3.1). Value 7 is not used.
const (
	ReasonUnspecified          Reason = 0
	ReasonKeyCompromise        Reason = 1
	ReasonCACompromise         Reason = 2
	ReasonAffiliationChanged   Reason = 3
	ReasonSuperseded           Reason = 4
	ReasonCessationOfOperation Reason = 5
	ReasonCertificateHold      Reason = 6
	ReasonRemoveFromCRL        Reason = 8
	ReasonPrivilegeWithdrawn   Reason = 9
	ReasonAACompromise         Reason = 10
)

// String returns the RFC 5280 name of r, for example "keyCompromise".
func (r Reason) String() string {
	switch r {
	case ReasonUnspecified:
		return "unspecified"
	case ReasonKeyCompromise:
		return "keyCompromise"
	case ReasonCACompromise:
		return "cACompromise"
	case ReasonAffiliationChanged:
		return "affiliationChanged"
	case ReasonSuperseded:
		return "superseded"
	case ReasonCessationOfOperation:
		return "cessationOfOperation"
	case ReasonCertificateHold:
		return "certificateHold"
	case ReasonRemoveFromCRL:
		return "removeFromCRL"
	case ReasonPrivilegeWithdrawn:
		return "privilegeWithdrawn"
	case ReasonAACompromise:
		return "aACompromise"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// StaleError reports a CRL whose nextUpdate lies before the time given to
// Parse. Parse returns it together with the parsed CRL: the list is still the
// best knowledge available, and the caller decides whether to use it (with a
// warning) or not.
type StaleError struct {
	// Issuer is the CRL issuer's distinguished name.
	Issuer string
	// NextUpdate is the CRL's nextUpdate.
	NextUpdate time.Time
	// Now is the time Parse compared it with.
	Now time.Time
}

// Error implements error.
func (e *StaleError) Error() string {
	return fmt.Sprintf("revocation: CRL of %q is stale: nextUpdate %s is %s before now (%s)",
		e.Issuer, e.NextUpdate.UTC().Format(time.RFC3339), e.Now.Sub(e.NextUpdate).Round(time.Second),
		e.Now.UTC().Format(time.RFC3339))
}

// ErrUnsupported is wrapped by the errors for CRL features this package
// deliberately does not implement (delta CRLs, indirect CRLs, CRLs partitioned
// by reason, SHA-1 signatures, unknown critical extensions).
var ErrUnsupported = errors.New("unsupported CRL feature")

// CRL is a parsed and verified certificate revocation list reduced to what
// revocation checks need. It is immutable and safe for concurrent use.
type CRL struct {
	rawIssuer  []byte // DER issuer Name (equal to the issuer cert's RawSubject)
	issuerName string // issuer Name in RFC 4514 form, for messages
	keyID      []byte // issuer SubjectKeyId, or the CRL's authorityKeyIdentifier
	number     *big.Int
	thisUpdate time.Time
	nextUpdate time.Time
	version    int
	sigAlg     x509.SignatureAlgorithm

	// Scope from the issuingDistributionPoint extension.
	idpURLs       []string
	onlyUserCerts bool
	onlyCACerts   bool

	url     string // where the caller fetched it from; set by WithURL
	removed int    // entries with reason removeFromCRL, not indexed

	idx index
}

// WithURL returns a copy of c that records the URL c was fetched from, which
// MissingDistributionPoints treats as covered. The copy shares c's index.
func (c *CRL) WithURL(url string) *CRL {
	cp := *c
	cp.url = url
	return &cp
}

// URL returns the URL set by WithURL, or "".
func (c *CRL) URL() string { return c.url }

// IsRevoked reports whether serial is listed as revoked in c.
func (c *CRL) IsRevoked(serial *big.Int) bool {
	_, ok := c.Lookup(serial)
	return ok
}

// Lookup reports whether serial is listed as revoked in c and, if so, the
// reason given in the CRL (ReasonUnspecified when none was given).
func (c *CRL) Lookup(serial *big.Int) (Reason, bool) {
	return c.idx.lookupBig(serial)
}

// IsRevokedBytes is IsRevoked for a serial number given as the content octets
// of its DER INTEGER (big-endian two's complement, as in the certificate).
// Redundant leading 0x00 or 0xFF octets are ignored.
func (c *CRL) IsRevokedBytes(serial []byte) bool {
	_, ok := c.LookupBytes(serial)
	return ok
}

// LookupBytes is Lookup for a serial number given as in IsRevokedBytes.
func (c *CRL) LookupBytes(serial []byte) (Reason, bool) {
	r, ok, _ := c.idx.search(canonicalSerial(serial))
	return r, ok
}

// Len returns the number of distinct revoked serial numbers in c.
func (c *CRL) Len() int { return c.idx.len() }

// Removed returns the number of entries with reason removeFromCRL, which
// are not treated as revoked.
func (c *CRL) Removed() int { return c.removed }

// ThisUpdate returns the CRL's thisUpdate.
func (c *CRL) ThisUpdate() time.Time { return c.thisUpdate }

// NextUpdate returns the CRL's nextUpdate, or the zero time when the CRL has
// none.
func (c *CRL) NextUpdate() time.Time { return c.nextUpdate }

// Number returns a copy of the CRL's cRLNumber, or nil when it has none.
func (c *CRL) Number() *big.Int {
	if c.number == nil {
		return nil
	}
	return new(big.Int).Set(c.number)
}

// Version returns the CRL version: 1 or 2.
func (c *CRL) Version() int { return c.version }

// SignatureAlgorithm returns the algorithm the CRL was signed with.
func (c *CRL) SignatureAlgorithm() x509.SignatureAlgorithm { return c.sigAlg }

// Issuer returns the CRL issuer's distinguished name in RFC 4514 form.
func (c *CRL) Issuer() string { return c.issuerName }

// RawIssuer returns the DER-encoded issuer name. The caller must not modify
// it.
func (c *CRL) RawIssuer() []byte { return c.rawIssuer }

// DistributionPoints returns the URLs of the CRL's issuingDistributionPoint
// extension, which limit the CRL to certificates naming one of them. It is
// empty for a CRL that covers every certificate of its issuer.
func (c *CRL) DistributionPoints() []string { return append([]string(nil), c.idpURLs...) }

// Size returns the approximate number of bytes c holds in memory.
func (c *CRL) Size() int { return c.idx.size() + len(c.rawIssuer) + len(c.keyID) + 256 }

// String returns a one-line description of c for logs.
func (c *CRL) String() string {
	return fmt.Sprintf("CRL issuer=%q number=%v entries=%d thisUpdate=%s nextUpdate=%s",
		c.issuerName, c.number, c.Len(), c.thisUpdate.UTC().Format(time.RFC3339),
		c.nextUpdate.UTC().Format(time.RFC3339))
}
