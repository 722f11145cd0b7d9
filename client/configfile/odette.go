package configfile

import (
	"errors"

	"smartproxy/oftp2"
)

// checkSSIDField checks that an Odette ID (field "SSIDCODE") or password ("SSIDPSWD") can appear
// in an SSID under the given charset policy, with the OFTP2 codec's own field rules (RFC 5024
// §5.3.2, §5.4), so that the client, the DMZ server and the wire agree on what is valid. The
// message never repeats the value (passwords are secret).
func checkSSIDField(id, password string, cs oftp2.Charset) error {
	ssid := &oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: oftp2.MaxExchangeBuffer,
		Mode: oftp2.ModeBoth, Credit: oftp2.MaxCredit}
	err := oftp2.Validate(ssid, &oftp2.ParseOptions{Charset: cs})
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		return errors.New(pe.Msg)
	}
	return err
}

// placeholderID is a valid Odette ID used to check a password on its own.
const placeholderID = "O0000"
