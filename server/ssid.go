package server

import (
	"errors"
	"strings"

	"smartproxy/oftp2"
)

// fieldError is a problem of one configured SSID field.
type fieldError struct {
	field string // configuration field name: "odette_id" or "password"
	msg   string
}

// checkSSIDFields checks that a configured Odette ID and password could appear in an SSID
// under the partner's charset policy, using the OFTP2 codec's own field rules (RFC 5024 §5.3.2,
// §5.4), so that a partner the configuration names can actually be matched.
func checkSSIDFields(id, password string, cs oftp2.Charset) *fieldError {
	ssid := &oftp2.SSID{
		Level:      5,
		ID:         id,
		Password:   oftp2.Password(password),
		BufferSize: 99999,
		Mode:       oftp2.ModeBoth,
		Credit:     999,
	}
	err := oftp2.Validate(ssid, &oftp2.ParseOptions{Charset: cs})
	if err == nil {
		return nil
	}
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		switch pe.Field {
		case "SSIDCODE":
			return &fieldError{"odette_id", "not a valid Odette ID (" + cs.String() + " charset): " + pe.Msg}
		case "SSIDPSWD":
			// The message of the codec names the offending character class, never the value.
			return &fieldError{"password", "not a valid SSID password (" + cs.String() + " charset, at most 8 characters): " + pe.Msg}
		}
	}
	return &fieldError{"odette_id", err.Error()}
}

// ssidCode returns the Odette ID of an SSID exchange buffer without trailing padding, read
// leniently, so that the partner entry (and its charset policy) can be found before the SSID is
// checked strictly. It returns "" when buf is too short to hold SSIDCODE.
func ssidCode(buf []byte) string {
	const start, end = 2, 27 // RFC 5024 §5.3.2: SSIDCODE at positions 2–26
	if len(buf) < end || buf[0] != byte(oftp2.CodeSSID) {
		return ""
	}
	return strings.TrimRight(string(buf[start:end]), " ")
}
