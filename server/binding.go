package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/netip"
	"strings"
)

// oidSerialNumber is the subject attribute serialNumber (X.520, OID 2.5.4.5), where the Odette
// certificate policy puts the partner's Odette ID.
var oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}

// subjectSerialNumber returns the certificate subject's serialNumber attribute, or "".
func subjectSerialNumber(cert *x509.Certificate) string {
	if cert.Subject.SerialNumber != "" {
		return cert.Subject.SerialNumber
	}
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidSerialNumber) {
			if s, ok := atv.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// certMatches reports whether cert is bound to p: one of p's bindings matches every field it
// sets, or, without bindings, the subject serialNumber equals the Odette ID.
func (p *Partner) certMatches(cert *x509.Certificate) bool {
	if len(p.Bindings) == 0 {
		return strings.TrimSpace(subjectSerialNumber(cert)) == p.OdetteID
	}
	var fp [sha256.Size]byte
	fpDone := false
	subject := ""
	for _, b := range p.Bindings {
		if b.SubjectSerialNumber != "" && subjectSerialNumber(cert) != b.SubjectSerialNumber {
			continue
		}
		if b.Fingerprint != nil {
			if !fpDone {
				fp = sha256.Sum256(cert.Raw)
				fpDone = true
			}
			if !bytes.Equal(fp[:], b.Fingerprint) {
				continue
			}
		}
		if b.Subject != "" {
			if subject == "" {
				n, err := normalizeDN(cert.Subject.String())
				if err != nil {
					continue
				}
				subject = n
			}
			if subject != b.Subject {
				continue
			}
		}
		return true
	}
	return false
}

// networkAllowed reports whether addr lies in one of p's networks (any address when none).
func (p *Partner) networkAllowed(addr netip.Addr) bool {
	if len(p.Networks) == 0 {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, n := range p.Networks {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// normalizeDN brings a distinguished name in RFC 4514 string form into a canonical form for
// comparison: relative distinguished names split at unescaped commas (multi-valued ones at
// unescaped plus signs), spaces around separators and '=' removed, attribute types upper-case
// (with the long names Go prints mapped to their short forms), values compared as written
// (escapes kept). "cn=Foo, O=Bar" and "CN=Foo,O=Bar" are equal; "CN=Foo,O=Bar" and
// "O=Bar,CN=Foo" are not (RDN order is significant).
func normalizeDN(s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("empty distinguished name")
	}
	var rdns []string
	for _, rdn := range splitUnescaped(s, ',') {
		var atvs []string
		for _, atv := range splitUnescaped(rdn, '+') {
			typ, val, ok := strings.Cut(atv, "=")
			typ = strings.ToUpper(strings.TrimSpace(typ))
			val = strings.TrimSpace(val)
			if !ok || typ == "" {
				return "", fmt.Errorf("%q is not a distinguished name in RFC 4514 form (attribute %q has no type=value)", s, strings.TrimSpace(atv))
			}
			if short, ok := dnTypeAliases[typ]; ok {
				typ = short
			}
			atvs = append(atvs, typ+"="+val)
		}
		rdns = append(rdns, strings.Join(atvs, "+"))
	}
	return strings.Join(rdns, ","), nil
}

// dnTypeAliases maps long attribute type names and numeric forms to the short names of
// RFC 4514 §3 as Go's pkix.Name.String prints them.
var dnTypeAliases = map[string]string{
	"COMMONNAME":             "CN",
	"2.5.4.3":                "CN",
	"COUNTRYNAME":            "C",
	"2.5.4.6":                "C",
	"LOCALITYNAME":           "L",
	"2.5.4.7":                "L",
	"STATEORPROVINCENAME":    "ST",
	"2.5.4.8":                "ST",
	"STREETADDRESS":          "STREET",
	"2.5.4.9":                "STREET",
	"ORGANIZATIONNAME":       "O",
	"2.5.4.10":               "O",
	"ORGANIZATIONALUNITNAME": "OU",
	"2.5.4.11":               "OU",
	"2.5.4.5":                "SERIALNUMBER",
	"POSTALCODE":             "POSTALCODE",
	"2.5.4.17":               "POSTALCODE",
}

// splitUnescaped splits s at every sep not preceded by an odd number of backslashes.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	escaped := false
	for i := 0; i < len(s); i++ {
		switch {
		case escaped:
			escaped = false
		case s[i] == '\\':
			escaped = true
		case s[i] == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
