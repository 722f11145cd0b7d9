package configfile

import (
	"fmt"
)

// strictX reports whether c belongs to the RFC 5024 §5.3 X(n) character set (Appendix B): the
// digits, the upper-case letters, space and / - . & ( ).
func strictX(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c == ' ' || c == '/' || c == '-' || c == '.' || c == '&' || c == '(' || c == ')'
}

// checkX checks a value of an X(n) field (RFC 5024 §5.3): at most n characters, left-justified
// (no leading space; trailing spaces would be padding and are not allowed in the value), from
// the X(n) set (strict) or printable ASCII (lenient). Embedded spaces are allowed only where
// embeddedSpace is true (identification codes, §5.4) or the policy is lenient.
func checkX(s string, n int, lenient, embeddedSpace bool) error {
	if len(s) > n {
		return fmt.Errorf("%d characters, at most %d allowed", len(s), n)
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return fmt.Errorf("leading or trailing space (the field is space-padded on the wire)")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c > 0x7e:
			return fmt.Errorf("character %q is not printable ASCII", rune(c))
		case lenient:
		case c == ' ' && !embeddedSpace:
			return fmt.Errorf("embedded space is not allowed")
		case !strictX(c):
			return fmt.Errorf("character %q is outside the RFC 5024 X(n) set (A-Z 0-9 space / - . & ( )); set the partner's charset to lenient to allow it", rune(c))
		}
	}
	return nil
}

// CheckOdetteID checks an Odette ID (SSIDCODE, RFC 5024 §5.3.2 and §5.4): 1 to 25 characters,
// no leading or trailing space, from the X(n) set (embedded spaces allowed, the §5.4 subfields
// are space padded) or, if lenient, printable ASCII.
func CheckOdetteID(id string, lenient bool) error {
	if id == "" {
		return fmt.Errorf("empty")
	}
	return checkX(id, maxOdetteIDLen, lenient, true)
}
