package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"smartproxy/oftp2"
)

// maxText is the longest free text (names, descriptions, messages) stored.
const maxText = 4096

// checkText refuses text that is not UTF-8, contains NUL or is longer than max
// bytes. Everything else, quotes and SQL keywords included, is stored as
// given.
func checkText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return invalid(field, "contains a NUL character")
	}
	if len(s) > max {
		return invalid(field, "is %d bytes long; at most %d are allowed", len(s), max)
	}
	return nil
}

// checkAddress checks a "host:port" value. A listen address may have an
// empty host (all interfaces) and port 0 (any free port) and its host must
// be an IP address.
func checkAddress(field, s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return invalid(field, "%q is not host:port", s)
	}
	if host == "" && !listen {
		return invalid(field, "%q has no host", s)
	}
	if strings.ContainsAny(host, " /\x00") || !utf8.ValidString(host) {
		return invalid(field, "%q has an invalid host", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 && !listen {
		return invalid(field, "%q: port %q is not a number from 1 to 65535", s, port)
	}
	if listen && host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return invalid(field, "host %q is not an IP address (listen addresses are not resolved)", host)
		}
	}
	return nil
}

// checkIP checks an IP address without port.
func checkIP(field, s string) error {
	if _, err := netip.ParseAddr(s); err != nil {
		return invalid(field, "%q is not an IP address", s)
	}
	return nil
}

// normalizeCIDR checks a network in CIDR notation and returns it in canonical
// form (host bits cleared are refused, so that nothing is silently changed).
func normalizeCIDR(field, s string) (string, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return "", invalid(field, "%q is not a network in CIDR notation such as 192.0.2.0/24", s)
	}
	if p.Masked() != p {
		return "", invalid(field, "%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p.String(), nil
}

// checkURL checks a CRL distribution point: an absolute http or https URL.
func checkURL(field, s string) error {
	if err := checkText(field, s, 2048); err != nil {
		return err
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return invalid(field, "%q is not an absolute URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid(field, "%q: scheme %q is not http or https", s, u.Scheme)
	}
	if u.User != nil {
		return invalid(field, "%q contains user information", s)
	}
	return nil
}

// CheckOdetteID checks an Odette ID (SSIDCODE) with the OFTP2 codec's own
// field rules (RFC 5024 §5.3.2) under the partner's charset policy ("strict"
// or "lenient").
func CheckOdetteID(field, id, charset string) error {
	if id == "" {
		return invalid(field, "required")
	}
	return checkSSID(field, id, "", charset)
}

func checkSSID(field, id, password, charset string) error {
	cs := oftp2.CharsetStrict
	if charset == "lenient" {
		cs = oftp2.CharsetLenient
	}
	ssid := &oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: oftp2.MaxExchangeBuffer,
		Mode: oftp2.ModeBoth, Credit: oftp2.MaxCredit}
	err := oftp2.Validate(ssid, &oftp2.ParseOptions{Charset: cs})
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		return invalid(field, "%s", pe.Msg)
	}
	if err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// ParseFingerprint reads a SHA-256 fingerprint: 64 hexadecimal digits,
// optionally separated by colons or spaces. It returns lower-case hex.
func ParseFingerprint(field, s string) (string, error) {
	clean := strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(s))
	if len(clean) != 2*sha256.Size {
		return "", invalid(field, "want 64 hexadecimal digits (SHA-256), got %d characters", len(clean))
	}
	if _, err := hex.DecodeString(clean); err != nil {
		return "", invalid(field, "is not hexadecimal")
	}
	return clean, nil
}

// checkDN checks the outline of an RFC 4514 distinguished name:
// attribute=value pairs separated by unescaped commas or plus signs, with
// attribute types that are names or dotted OIDs.
func checkDN(field, s string) error {
	if err := checkText(field, s, 1024); err != nil {
		return err
	}
	var parts []string
	start, esc := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case esc:
			esc = false
		case s[i] == '\\':
			esc = true
		case s[i] == ',' || s[i] == '+':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if esc {
		return invalid(field, "%q ends with a lone backslash", s)
	}
	parts = append(parts, s[start:])
	for _, p := range parts {
		typ, _, ok := strings.Cut(p, "=")
		typ = strings.TrimSpace(typ)
		if !ok || typ == "" {
			return invalid(field, "%q is not attribute=value", p)
		}
		for _, r := range typ {
			if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
				return invalid(field, "attribute type %q is neither a name nor an OID", typ)
			}
		}
	}
	return nil
}

// checkServerName checks a TLS server name: a DNS name or an IP address.
func checkServerName(field, s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if len(s) > 253 {
		return invalid(field, "%q is longer than 253 characters", s)
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return invalid(field, "%q is not a DNS name", s)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '*') {
				return invalid(field, "%q is not a DNS name or IP address", s)
			}
		}
	}
	return nil
}

func fieldf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// likeEscape escapes the wildcards of a LIKE pattern (used with ESCAPE '\').
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
