package revocation

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"errors"
	"fmt"
	"math"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// maxSerialLen is the longest serial number (content octets of the DER
// INTEGER) Parse accepts. RFC 5280 §4.1.2.2 allows 20 octets; some CAs
// exceed that, so the limit is what the index can store.
const maxSerialLen = 255

// Encoded object identifiers (content octets only) of the extensions the
// parser compares against without allocating.
var (
	oidExtAuthorityKeyID   = []byte{0x55, 0x1d, 0x23} // 2.5.29.35
	oidExtCRLNumber        = []byte{0x55, 0x1d, 0x14} // 2.5.29.20
	oidExtDeltaCRL         = []byte{0x55, 0x1d, 0x1b} // 2.5.29.27
	oidExtIssuingDP        = []byte{0x55, 0x1d, 0x1c} // 2.5.29.28
	oidExtReasonCode       = []byte{0x55, 0x1d, 0x15} // 2.5.29.21
	oidExtInvalidityDate   = []byte{0x55, 0x1d, 0x18} // 2.5.29.24
	oidExtCertificateIssue = []byte{0x55, 0x1d, 0x1d} // 2.5.29.29
)

// Signature algorithm identifiers (RFC 4055, RFC 5758, RFC 8410).
var (
	oidSHA1WithRSA     = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidSHA256WithRSA   = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSAPSS          = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1            = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidSHA256          = encasn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384          = encasn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512          = encasn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidECDSAWithSHA1   = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256 = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519         = encasn1.ObjectIdentifier{1, 3, 101, 112}
)

// tagExtensions is crlExtensions [0] EXPLICIT Extensions.
var tagExtensions = asn1.Tag(0).Constructed().ContextSpecific()

// rawCRL is the result of the structural walk of a CRL, before the signature
// is verified and the entries are indexed. Byte slices alias the input.
type rawCRL struct {
	tbs        []byte // tbsCertList, whole element: the signed bytes
	algRaw     []byte // outer signatureAlgorithm, whole element
	sig        []byte
	version    int
	issuer     []byte // issuer Name, whole element
	thisUpdate time.Time
	nextUpdate time.Time
	entries    cryptobyte.String // content of revokedCertificates
	hasEntries bool

	number        *big.Int
	akid          []byte
	idpURLs       []string
	onlyUserCerts bool
	onlyCACerts   bool
}

// malformed returns the error for a CRL whose DER cannot be decoded.
func malformed(format string, args ...any) error {
	return fmt.Errorf("revocation: malformed CRL: "+format, args...)
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("revocation: %w: "+format, append([]any{ErrUnsupported}, args...)...)
}

// Parse parses a DER-encoded CRL, checks that issuer issued and signed it
// and indexes its revoked serial numbers.
//
// It fails when the DER is malformed, the CRL's issuer name differs from
// issuer.RawSubject, the CRL names an authority key identifier different from
// issuer.SubjectKeyId, issuer's key usage (if present) lacks cRLSign, the
// signature does not verify, or the CRL uses a feature this package does not
// implement (see ErrUnsupported).
//
// If the CRL's nextUpdate lies before now, Parse returns the CRL and a
// *StaleError. A zero now skips that check.
func Parse(der []byte, issuer *x509.Certificate, now time.Time) (*CRL, error) {
	if issuer == nil {
		return nil, errors.New("revocation: Parse needs the issuer certificate")
	}
	raw, err := parseRaw(der)
	if err != nil {
		return nil, err
	}
	if err := raw.verify(issuer); err != nil {
		return nil, err
	}
	return raw.build(issuer, now)
}

// ParseFrom is Parse for a CRL whose issuer is one of candidates, as when a
// configuration carries trusted CA certificates and CRLs side by side. It
// picks the candidate whose subject equals the CRL's issuer name (and whose
// subject key identifier equals the CRL's authority key identifier when both
// are present) and whose key verifies the signature, and fails when none
// does.
func ParseFrom(der []byte, candidates []*x509.Certificate, now time.Time) (*CRL, error) {
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
		return raw.build(c, now)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("revocation: no trusted CA certificate is the issuer of the CRL of %q", nameString(raw.issuer))
}

// parseRaw walks the CRL structure (RFC 5280 §5.1) and its CRL extensions
// (§5.2) without touching the signature or the entries.
func parseRaw(der []byte) (*rawCRL, error) {
	var r rawCRL
	in := cryptobyte.String(der)
	var list cryptobyte.String
	if !in.ReadASN1(&list, asn1.SEQUENCE) {
		return nil, malformed("not a DER SEQUENCE (is it PEM? decode it first)")
	}
	if !in.Empty() {
		return nil, malformed("%d trailing bytes after the CertificateList", len(in))
	}
	// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }
	var tbs, alg cryptobyte.String
	if !list.ReadASN1Element(&tbs, asn1.SEQUENCE) {
		return nil, malformed("bad tbsCertList")
	}
	if !list.ReadASN1Element(&alg, asn1.SEQUENCE) {
		return nil, malformed("bad signatureAlgorithm")
	}
	var sigBits encasn1.BitString
	if !list.ReadASN1BitString(&sigBits) || sigBits.BitLength%8 != 0 {
		return nil, malformed("bad signatureValue")
	}
	if !list.Empty() {
		return nil, malformed("unexpected data after signatureValue")
	}
	r.tbs, r.algRaw, r.sig = tbs, alg, sigBits.Bytes

	var body cryptobyte.String
	if !tbs.ReadASN1(&body, asn1.SEQUENCE) {
		return nil, malformed("bad tbsCertList")
	}
	// version Version OPTIONAL -- if present, MUST be v2 (RFC 5280 §5.1.2.1)
	r.version = 1
	if body.PeekASN1Tag(asn1.INTEGER) {
		var v int64
		if !body.ReadASN1Integer(&v) {
			return nil, malformed("bad version")
		}
		if v != 1 {
			return nil, malformed("version %d, want v2 (1) or absent", v)
		}
		r.version = 2
	}
	// signature AlgorithmIdentifier -- MUST equal signatureAlgorithm (§5.1.1.2)
	var innerAlg cryptobyte.String
	if !body.ReadASN1Element(&innerAlg, asn1.SEQUENCE) {
		return nil, malformed("bad tbsCertList signature algorithm")
	}
	if !bytes.Equal(innerAlg, r.algRaw) {
		return nil, malformed("tbsCertList signature algorithm differs from signatureAlgorithm")
	}
	// issuer Name (§5.1.2.3)
	var issuer cryptobyte.String
	if !body.ReadASN1Element(&issuer, asn1.SEQUENCE) {
		return nil, malformed("bad issuer name")
	}
	r.issuer = issuer
	// thisUpdate Time, nextUpdate Time OPTIONAL (§5.1.2.4, §5.1.2.5)
	var err error
	if r.thisUpdate, err = readTime(&body); err != nil {
		return nil, malformed("thisUpdate: %v", err)
	}
	if body.PeekASN1Tag(asn1.UTCTime) || body.PeekASN1Tag(asn1.GeneralizedTime) {
		if r.nextUpdate, err = readTime(&body); err != nil {
			return nil, malformed("nextUpdate: %v", err)
		}
		if r.nextUpdate.Before(r.thisUpdate) {
			return nil, malformed("nextUpdate %s is before thisUpdate %s",
				r.nextUpdate.Format(time.RFC3339), r.thisUpdate.Format(time.RFC3339))
		}
	}
	// revokedCertificates SEQUENCE OF SEQUENCE {…} OPTIONAL (§5.1.2.6)
	if body.PeekASN1Tag(asn1.SEQUENCE) {
		if !body.ReadASN1(&r.entries, asn1.SEQUENCE) {
			return nil, malformed("bad revokedCertificates")
		}
		r.hasEntries = true
	}
	// crlExtensions [0] EXPLICIT Extensions OPTIONAL -- v2 only (§5.1.2.7)
	if body.PeekASN1Tag(tagExtensions) {
		if r.version != 2 {
			return nil, malformed("v1 CRL with extensions")
		}
		var wrap, exts cryptobyte.String
		if !body.ReadASN1(&wrap, tagExtensions) || !wrap.ReadASN1(&exts, asn1.SEQUENCE) || !wrap.Empty() {
			return nil, malformed("bad crlExtensions")
		}
		if err := r.parseExtensions(exts); err != nil {
			return nil, err
		}
	}
	if !body.Empty() {
		return nil, malformed("unexpected data at the end of tbsCertList")
	}
	return &r, nil
}

// readExtension reads one Extension ::= SEQUENCE { extnID, critical BOOLEAN
// DEFAULT FALSE, extnValue OCTET STRING }.
func readExtension(s *cryptobyte.String) (oid []byte, critical bool, value cryptobyte.String, ok bool) {
	var ext, id cryptobyte.String
	if !s.ReadASN1(&ext, asn1.SEQUENCE) || !ext.ReadASN1(&id, asn1.OBJECT_IDENTIFIER) || len(id) == 0 {
		return nil, false, nil, false
	}
	if ext.PeekASN1Tag(asn1.BOOLEAN) {
		if !ext.ReadASN1Boolean(&critical) {
			return nil, false, nil, false
		}
	}
	if !ext.ReadASN1(&value, asn1.OCTET_STRING) || !ext.Empty() {
		return nil, false, nil, false
	}
	return id, critical, value, true
}

// parseExtensions handles the CRL extensions of RFC 5280 §5.2.
func (r *rawCRL) parseExtensions(exts cryptobyte.String) error {
	var seen [][]byte
	for !exts.Empty() {
		oid, critical, val, ok := readExtension(&exts)
		if !ok {
			return malformed("bad CRL extension")
		}
		for _, s := range seen {
			if bytes.Equal(s, oid) {
				return malformed("CRL extension %s appears twice", oidString(oid))
			}
		}
		seen = append(seen, oid)
		switch {
		case bytes.Equal(oid, oidExtAuthorityKeyID):
			// AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT
			// OCTET STRING OPTIONAL, authorityCertIssuer [1], serial [2] }
			var aki cryptobyte.String
			if !val.ReadASN1(&aki, asn1.SEQUENCE) || !val.Empty() {
				return malformed("bad authorityKeyIdentifier")
			}
			var kid cryptobyte.String
			var present bool
			if !aki.ReadOptionalASN1(&kid, &present, asn1.Tag(0).ContextSpecific()) {
				return malformed("bad authorityKeyIdentifier keyIdentifier")
			}
			if present {
				r.akid = kid
			}
		case bytes.Equal(oid, oidExtCRLNumber):
			// CRLNumber ::= INTEGER (0..MAX), at most 20 octets (§5.2.3)
			n := new(big.Int)
			if !val.ReadASN1Integer(n) || !val.Empty() {
				return malformed("bad cRLNumber")
			}
			if n.Sign() < 0 || n.BitLen() > 160 {
				return malformed("cRLNumber %v out of range", n)
			}
			r.number = n
		case bytes.Equal(oid, oidExtDeltaCRL):
			return unsupported("delta CRL (deltaCRLIndicator extension): configure the complete base CRL instead")
		case bytes.Equal(oid, oidExtIssuingDP):
			if err := r.parseIDP(val); err != nil {
				return err
			}
		default:
			if critical {
				return unsupported("unknown critical CRL extension %s", oidString(oid))
			}
		}
	}
	return nil
}

// parseIDP handles the issuingDistributionPoint extension (§5.2.5):
//
//	IssuingDistributionPoint ::= SEQUENCE {
//	     distributionPoint          [0] DistributionPointName OPTIONAL,
//	     onlyContainsUserCerts      [1] BOOLEAN DEFAULT FALSE,
//	     onlyContainsCACerts        [2] BOOLEAN DEFAULT FALSE,
//	     onlySomeReasons            [3] ReasonFlags OPTIONAL,
//	     indirectCRL                [4] BOOLEAN DEFAULT FALSE,
//	     onlyContainsAttributeCerts [5] BOOLEAN DEFAULT FALSE }
func (r *rawCRL) parseIDP(val cryptobyte.String) error {
	var idp cryptobyte.String
	if !val.ReadASN1(&idp, asn1.SEQUENCE) || !val.Empty() {
		return malformed("bad issuingDistributionPoint")
	}
	if idp.PeekASN1Tag(asn1.Tag(0).Constructed().ContextSpecific()) {
		var dpName cryptobyte.String
		if !idp.ReadASN1(&dpName, asn1.Tag(0).Constructed().ContextSpecific()) {
			return malformed("bad issuingDistributionPoint distributionPoint")
		}
		// DistributionPointName ::= CHOICE { fullName [0] GeneralNames,
		// nameRelativeToCRLIssuer [1] RelativeDistinguishedName }
		if dpName.PeekASN1Tag(asn1.Tag(0).Constructed().ContextSpecific()) {
			var names cryptobyte.String
			if !dpName.ReadASN1(&names, asn1.Tag(0).Constructed().ContextSpecific()) {
				return malformed("bad issuingDistributionPoint fullName")
			}
			for !names.Empty() {
				var gn cryptobyte.String
				var tag asn1.Tag
				if !names.ReadAnyASN1(&gn, &tag) {
					return malformed("bad GeneralName in issuingDistributionPoint")
				}
				if tag == asn1.Tag(6).ContextSpecific() { // uniformResourceIdentifier
					r.idpURLs = append(r.idpURLs, string(gn))
				}
			}
			if len(r.idpURLs) == 0 {
				return unsupported("issuingDistributionPoint without a URI")
			}
		} else if dpName.PeekASN1Tag(asn1.Tag(1).Constructed().ContextSpecific()) {
			return unsupported("issuingDistributionPoint nameRelativeToCRLIssuer")
		} else {
			return malformed("bad issuingDistributionPoint distributionPoint name")
		}
	}
	readFlag := func(n uint8, out *bool) bool {
		tag := asn1.Tag(n).ContextSpecific()
		if !idp.PeekASN1Tag(tag) {
			return true
		}
		var b cryptobyte.String
		if !idp.ReadASN1(&b, tag) || len(b) != 1 || (b[0] != 0 && b[0] != 0xff) {
			return false
		}
		*out = b[0] == 0xff
		return true
	}
	var indirect, attrCerts bool
	if !readFlag(1, &r.onlyUserCerts) || !readFlag(2, &r.onlyCACerts) {
		return malformed("bad issuingDistributionPoint flags")
	}
	if idp.PeekASN1Tag(asn1.Tag(3).ContextSpecific()) {
		return unsupported("CRL partitioned by reason (issuingDistributionPoint onlySomeReasons)")
	}
	if !readFlag(4, &indirect) || !readFlag(5, &attrCerts) || !idp.Empty() {
		return malformed("bad issuingDistributionPoint flags")
	}
	if indirect {
		return unsupported("indirect CRL (issuingDistributionPoint indirectCRL)")
	}
	if attrCerts {
		return unsupported("attribute certificate CRL (issuingDistributionPoint onlyContainsAttributeCerts)")
	}
	if r.onlyUserCerts && r.onlyCACerts {
		return malformed("issuingDistributionPoint sets both onlyContainsUserCerts and onlyContainsCACerts")
	}
	return nil
}

// signatureAlgorithm maps the CRL's AlgorithmIdentifier to the x509
// constant CheckSignature understands.
func (r *rawCRL) signatureAlgorithm() (x509.SignatureAlgorithm, error) {
	in := cryptobyte.String(r.algRaw)
	var alg cryptobyte.String
	var oid encasn1.ObjectIdentifier
	if !in.ReadASN1(&alg, asn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return 0, malformed("bad signatureAlgorithm")
	}
	params := alg // what follows the OID
	noParams := params.Empty()
	nullParams := bytes.Equal(params, []byte{0x05, 0x00})
	switch {
	case oid.Equal(oidSHA256WithRSA) && (noParams || nullParams):
		return x509.SHA256WithRSA, nil
	case oid.Equal(oidSHA384WithRSA) && (noParams || nullParams):
		return x509.SHA384WithRSA, nil
	case oid.Equal(oidSHA512WithRSA) && (noParams || nullParams):
		return x509.SHA512WithRSA, nil
	case oid.Equal(oidECDSAWithSHA256) && noParams:
		return x509.ECDSAWithSHA256, nil
	case oid.Equal(oidECDSAWithSHA384) && noParams:
		return x509.ECDSAWithSHA384, nil
	case oid.Equal(oidECDSAWithSHA512) && noParams:
		return x509.ECDSAWithSHA512, nil
	case oid.Equal(oidEd25519) && noParams:
		return x509.PureEd25519, nil
	case oid.Equal(oidRSAPSS):
		return pssAlgorithm(params)
	case oid.Equal(oidSHA1WithRSA), oid.Equal(oidECDSAWithSHA1):
		return 0, unsupported("SHA-1 signature (%s) is not accepted", oid)
	}
	return 0, unsupported("signature algorithm %s with parameters %x", oid, []byte(params))
}

// pssAlgorithm reads RSASSA-PSS-params (RFC 4055 §3.1) and accepts the
// combinations crypto/x509 verifies: SHA-256/384/512, MGF1 with the same
// hash, salt length equal to the hash length, trailer field 1.
func pssAlgorithm(params cryptobyte.String) (x509.SignatureAlgorithm, error) {
	var p cryptobyte.String
	if !params.ReadASN1(&p, asn1.SEQUENCE) || !params.Empty() {
		return 0, malformed("bad RSASSA-PSS parameters")
	}
	readHash := func(s *cryptobyte.String) (encasn1.ObjectIdentifier, bool) {
		var ai cryptobyte.String
		var oid encasn1.ObjectIdentifier
		if !s.ReadASN1(&ai, asn1.SEQUENCE) || !ai.ReadASN1ObjectIdentifier(&oid) {
			return nil, false
		}
		if !ai.Empty() && !bytes.Equal(ai, []byte{0x05, 0x00}) {
			return nil, false
		}
		return oid, true
	}
	var hashWrap, mgfWrap cryptobyte.String
	var hashOK, mgfOK bool
	if !p.ReadOptionalASN1(&hashWrap, &hashOK, asn1.Tag(0).Constructed().ContextSpecific()) ||
		!p.ReadOptionalASN1(&mgfWrap, &mgfOK, asn1.Tag(1).Constructed().ContextSpecific()) || !hashOK || !mgfOK {
		return 0, unsupported("RSASSA-PSS with default (SHA-1) hash")
	}
	hash, ok := readHash(&hashWrap)
	if !ok || !hashWrap.Empty() {
		return 0, malformed("bad RSASSA-PSS hashAlgorithm")
	}
	var mgf cryptobyte.String
	var mgfOID encasn1.ObjectIdentifier
	if !mgfWrap.ReadASN1(&mgf, asn1.SEQUENCE) || !mgfWrap.Empty() || !mgf.ReadASN1ObjectIdentifier(&mgfOID) {
		return 0, malformed("bad RSASSA-PSS maskGenAlgorithm")
	}
	mgfHash, ok := readHash(&mgf)
	if !ok || !mgf.Empty() || !mgfOID.Equal(oidMGF1) || !mgfHash.Equal(hash) {
		return 0, unsupported("RSASSA-PSS mask generation other than MGF1 with the signature hash")
	}
	salt := int64(20)
	if !p.ReadOptionalASN1Integer(&salt, asn1.Tag(2).Constructed().ContextSpecific(), int64(20)) {
		return 0, malformed("bad RSASSA-PSS saltLength")
	}
	trailer := int64(1)
	if !p.ReadOptionalASN1Integer(&trailer, asn1.Tag(3).Constructed().ContextSpecific(), int64(1)) || trailer != 1 || !p.Empty() {
		return 0, malformed("bad RSASSA-PSS trailerField")
	}
	var alg x509.SignatureAlgorithm
	var want int64
	switch {
	case hash.Equal(oidSHA256):
		alg, want = x509.SHA256WithRSAPSS, 32
	case hash.Equal(oidSHA384):
		alg, want = x509.SHA384WithRSAPSS, 48
	case hash.Equal(oidSHA512):
		alg, want = x509.SHA512WithRSAPSS, 64
	default:
		return 0, unsupported("RSASSA-PSS with hash %s", hash)
	}
	if salt != want {
		return 0, unsupported("RSASSA-PSS salt length %d (only the hash length %d is supported)", salt, want)
	}
	return alg, nil
}

// verify checks that issuer is the CRL's issuer, may sign CRLs and signed
// this one.
func (r *rawCRL) verify(issuer *x509.Certificate) error {
	if !bytes.Equal(r.issuer, issuer.RawSubject) {
		return fmt.Errorf("revocation: CRL issuer %q is not the certificate subject %q",
			nameString(r.issuer), issuer.Subject.String())
	}
	if len(r.akid) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(r.akid, issuer.SubjectKeyId) {
		return fmt.Errorf("revocation: CRL authority key ID %x is not the subject key ID %x of %q",
			r.akid, issuer.SubjectKeyId, issuer.Subject.String())
	}
	if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return fmt.Errorf("revocation: certificate %q may not sign CRLs (no cRLSign key usage)", issuer.Subject.String())
	}
	alg, err := r.signatureAlgorithm()
	if err != nil {
		return err
	}
	if err := issuer.CheckSignature(alg, r.tbs, r.sig); err != nil {
		return fmt.Errorf("revocation: CRL signature of %q does not verify: %w", issuer.Subject.String(), err)
	}
	return nil
}

// build indexes the entries of a verified CRL.
func (r *rawCRL) build(issuer *x509.Certificate, now time.Time) (*CRL, error) {
	alg, err := r.signatureAlgorithm()
	if err != nil {
		return nil, err
	}
	c := &CRL{
		rawIssuer:     bytes.Clone(r.issuer),
		issuerName:    issuer.Subject.String(),
		keyID:         bytes.Clone(issuer.SubjectKeyId),
		number:        r.number,
		thisUpdate:    r.thisUpdate,
		nextUpdate:    r.nextUpdate,
		version:       r.version,
		sigAlg:        alg,
		idpURLs:       r.idpURLs,
		onlyUserCerts: r.onlyUserCerts,
		onlyCACerts:   r.onlyCACerts,
	}
	if len(c.keyID) == 0 {
		c.keyID = bytes.Clone(r.akid)
	}
	if r.hasEntries {
		if err := c.index(r.entries, r.version); err != nil {
			return nil, err
		}
	}
	if !now.IsZero() && !c.nextUpdate.IsZero() && c.nextUpdate.Before(now) {
		return c, &StaleError{Issuer: c.issuerName, NextUpdate: c.nextUpdate, Now: now}
	}
	return c, nil
}

// index walks the entries twice: once to validate them and size the arena
// exactly, once to copy the serial numbers. Neither pass allocates per
// entry.
func (c *CRL) index(entries cryptobyte.String, version int) error {
	var n, removed int
	var arenaLen uint64
	err := walkEntries(entries, version, func(serial []byte, reason Reason) {
		if reason == ReasonRemoveFromCRL {
			removed++
			return
		}
		n++
		arenaLen += uint64(2 + len(serial))
	})
	if err != nil {
		return err
	}
	if arenaLen > math.MaxUint32 {
		return fmt.Errorf("revocation: CRL too large to index (%d bytes of serial numbers)", arenaLen)
	}
	ix := index{arena: make([]byte, 0, arenaLen), offs: make([]uint32, 0, n)}
	_ = walkEntries(entries, version, func(serial []byte, reason Reason) {
		if reason == ReasonRemoveFromCRL {
			return
		}
		ix.offs = append(ix.offs, uint32(len(ix.arena)))
		ix.arena = append(ix.arena, byte(len(serial)), byte(reason))
		ix.arena = append(ix.arena, serial...)
	})
	ix.sortAndDedup()
	c.idx = ix
	c.removed = removed
	return nil
}

// walkEntries validates every entry of revokedCertificates (RFC 5280
// §5.1.2.6, §5.3) and calls fn with its canonical serial number and reason.
//
//	SEQUENCE { userCertificate CertificateSerialNumber,
//	           revocationDate  Time,
//	           crlEntryExtensions Extensions OPTIONAL }
func walkEntries(list cryptobyte.String, version int, fn func(serial []byte, reason Reason)) error {
	for i := 0; !list.Empty(); i++ {
		var entry, serial cryptobyte.String
		if !list.ReadASN1(&entry, asn1.SEQUENCE) {
			return malformed("revoked certificate entry %d: bad SEQUENCE", i)
		}
		if !entry.ReadASN1(&serial, asn1.INTEGER) || len(serial) == 0 {
			return malformed("revoked certificate entry %d: bad serial number", i)
		}
		key := canonicalSerial(serial)
		if len(key) > maxSerialLen {
			return malformed("revoked certificate entry %d: serial number of %d octets is too long", i, len(key))
		}
		if _, err := readTime(&entry); err != nil {
			return malformed("revoked certificate entry %d: revocationDate: %v", i, err)
		}
		reason := ReasonUnspecified
		if !entry.Empty() {
			if version != 2 {
				return malformed("revoked certificate entry %d: entry extensions in a v1 CRL", i)
			}
			var exts cryptobyte.String
			if !entry.ReadASN1(&exts, asn1.SEQUENCE) || !entry.Empty() {
				return malformed("revoked certificate entry %d: bad crlEntryExtensions", i)
			}
			var sawReason, sawInvalidity bool
			for !exts.Empty() {
				oid, critical, val, ok := readExtension(&exts)
				if !ok {
					return malformed("revoked certificate entry %d: bad extension", i)
				}
				switch {
				case bytes.Equal(oid, oidExtReasonCode):
					// CRLReason ::= ENUMERATED (§5.3.1)
					var v int
					if sawReason || !val.ReadASN1Enum(&v) || !val.Empty() {
						return malformed("revoked certificate entry %d: bad or repeated reasonCode", i)
					}
					if v < 0 || v > 10 || v == 7 {
						return malformed("revoked certificate entry %d: reasonCode %d is not defined", i, v)
					}
					sawReason, reason = true, Reason(v)
				case bytes.Equal(oid, oidExtInvalidityDate):
					if sawInvalidity {
						return malformed("revoked certificate entry %d: repeated invalidityDate", i)
					}
					sawInvalidity = true
				case bytes.Equal(oid, oidExtCertificateIssue):
					return unsupported("indirect CRL (certificateIssuer entry extension in entry %d)", i)
				default:
					if critical {
						return unsupported("unknown critical extension %s in revoked certificate entry %d", oidString(oid), i)
					}
				}
			}
		}
		fn(key, reason)
	}
	return nil
}

// canonicalSerial strips redundant leading octets from the content octets
// of a DER INTEGER, so that non-minimal encodings found in some CRLs match
// the certificate's serial number.
func canonicalSerial(b []byte) []byte {
	for len(b) > 1 && ((b[0] == 0x00 && b[1]&0x80 == 0) || (b[0] == 0xff && b[1]&0x80 != 0)) {
		b = b[1:]
	}
	return b
}

// readTime reads a Time (RFC 5280 §4.1.2.5): UTCTime "YYMMDDHHMMSSZ" or
// GeneralizedTime "YYYYMMDDHHMMSSZ", exactly as the profile requires. It
// does not allocate.
func readTime(s *cryptobyte.String) (time.Time, error) {
	var b cryptobyte.String
	var year int
	switch {
	case s.PeekASN1Tag(asn1.UTCTime):
		if !s.ReadASN1(&b, asn1.UTCTime) || len(b) != 13 {
			return time.Time{}, errors.New(`UTCTime is not "YYMMDDHHMMSSZ"`)
		}
		yy, ok := digits2(b[0], b[1])
		if !ok {
			return time.Time{}, errors.New("bad UTCTime year")
		}
		year = 1900 + yy
		if yy < 50 {
			year = 2000 + yy
		}
		b = b[2:]
	case s.PeekASN1Tag(asn1.GeneralizedTime):
		if !s.ReadASN1(&b, asn1.GeneralizedTime) || len(b) != 15 {
			return time.Time{}, errors.New(`GeneralizedTime is not "YYYYMMDDHHMMSSZ"`)
		}
		hi, ok1 := digits2(b[0], b[1])
		lo, ok2 := digits2(b[2], b[3])
		if !ok1 || !ok2 {
			return time.Time{}, errors.New("bad GeneralizedTime year")
		}
		year = hi*100 + lo
		b = b[4:]
	default:
		return time.Time{}, errors.New("missing or not a UTCTime or GeneralizedTime")
	}
	// b is now "MMDDHHMMSSZ".
	mon, ok1 := digits2(b[0], b[1])
	day, ok2 := digits2(b[2], b[3])
	hour, ok3 := digits2(b[4], b[5])
	minute, ok4 := digits2(b[6], b[7])
	sec, ok5 := digits2(b[8], b[9])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || b[10] != 'Z' ||
		mon < 1 || mon > 12 || day < 1 || day > daysIn(year, mon) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, errors.New("invalid date or time")
	}
	return time.Date(year, time.Month(mon), day, hour, minute, sec, 0, time.UTC), nil
}

func digits2(a, b byte) (int, bool) {
	if a < '0' || a > '9' || b < '0' || b > '9' {
		return 0, false
	}
	return int(a-'0')*10 + int(b-'0'), true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// nameString renders a DER Name for messages.
func nameString(der []byte) string {
	var seq pkix.RDNSequence
	if rest, err := encasn1.Unmarshal(der, &seq); err != nil || len(rest) > 0 {
		return fmt.Sprintf("<undecodable name %x>", der)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&seq)
	return n.String()
}

// oidString renders encoded OID content octets for messages.
func oidString(b []byte) string {
	var oid encasn1.ObjectIdentifier
	s := cryptobyte.String(append([]byte{0x06, byte(len(b))}, b...))
	if len(b) < 128 && s.ReadASN1ObjectIdentifier(&oid) {
		return oid.String()
	}
	return fmt.Sprintf("%x", b)
}
