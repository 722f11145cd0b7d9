// Package revocation answers "is this certificate revoked?" from X.509
// certificate revocation lists (RFC 5280 §5) without ever scanning a list.
//
// CRLs of large certification authorities list a million serial numbers and
// more. crypto/x509.ParseRevocationList builds a big.Int and a struct for
// every entry, which costs many times the CRL's size in memory. Parse instead
// walks the DER once with golang.org/x/crypto/cryptobyte, verifies the
// signature against the issuing CA certificate and copies only the serial
// numbers into one packed, sorted byte arena. A lookup is a binary search over
// that arena: O(log n) comparisons and no allocation.
//
// A CRL is immutable after Parse and safe for concurrent use. A Checker
// groups the CRLs of several CAs by issuer and answers for a certificate
// whether it is Good, Revoked, or whether no CRL covers it (NoCRL), in which
// case the caller decides (the SmartProxy server accepts the partner, logs a
// warning and reports the certificate's CRL distribution points, see
// MissingDistributionPoints).
//
// Out of scope, and rejected with a clear error rather than half-supported:
// delta CRLs (deltaCRLIndicator), indirect CRLs (certificateIssuer entry
// extension, indirectCRL flag), CRLs limited to some revocation reasons
// (onlySomeReasons), attribute-certificate CRLs and SHA-1 signatures.
package revocation
