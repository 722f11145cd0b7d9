package oftp2

import (
	"errors"
	"fmt"
	"strconv"
)

// ESIDReason is the reason code of an End Session (ESID) command
// (RFC 5024 §5.3.11, field ESIDREAS).
type ESIDReason uint8

// ESID reason codes (RFC 5024 §5.3.11).
const (
	ESIDNormal                 ESIDReason = 0  // Normal session termination.
	ESIDCommandNotRecognised   ESIDReason = 1  // An exchange buffer contains an invalid command code.
	ESIDProtocolViolation      ESIDReason = 2  // A command is invalid in the receiver's current state.
	ESIDUserCodeNotKnown       ESIDReason = 3  // SSID contains an unknown or invalid identification code.
	ESIDInvalidPassword        ESIDReason = 4  // SSID contains an invalid password.
	ESIDLocalEmergency         ESIDReason = 5  // Local site emergency close down.
	ESIDInvalidData            ESIDReason = 6  // A field of a command contains invalid data.
	ESIDBufferSizeError        ESIDReason = 7  // Exchange buffer length differs from the length implied by the command.
	ESIDResourcesNotAvailable  ESIDReason = 8  // Resources not available.
	ESIDTimeout                ESIDReason = 9  // Time out.
	ESIDModeIncompatible       ESIDReason = 10 // Mode or capabilities incompatible.
	ESIDInvalidChallenge       ESIDReason = 11 // Invalid challenge response.
	ESIDSecureAuthIncompatible ESIDReason = 12 // Secure authentication requirements incompatible.
	ESIDUnspecified            ESIDReason = 99 // Unspecified abort code.
)

var esidReasonNames = map[ESIDReason]string{
	ESIDNormal:                 "normal session termination",
	ESIDCommandNotRecognised:   "command not recognised",
	ESIDProtocolViolation:      "protocol violation",
	ESIDUserCodeNotKnown:       "user code not known",
	ESIDInvalidPassword:        "invalid password",
	ESIDLocalEmergency:         "local site emergency close down",
	ESIDInvalidData:            "command contained invalid data",
	ESIDBufferSizeError:        "exchange buffer size error",
	ESIDResourcesNotAvailable:  "resources not available",
	ESIDTimeout:                "time out",
	ESIDModeIncompatible:       "mode or capabilities incompatible",
	ESIDInvalidChallenge:       "invalid challenge response",
	ESIDSecureAuthIncompatible: "secure authentication requirements incompatible",
	ESIDUnspecified:            "unspecified abort code",
}

// Valid reports whether r is one of the reason codes defined in RFC 5024 §5.3.11.
func (r ESIDReason) Valid() bool { _, ok := esidReasonNames[r]; return ok }

// String returns the two-digit code and the RFC description, e.g. "02 (protocol violation)".
func (r ESIDReason) String() string { return reasonString(uint8(r), esidReasonNames[r]) }

// SFNAReason is the answer reason of a Start File Negative Answer
// (RFC 5024 §5.3.5, field SFNAREAS).
type SFNAReason uint8

// SFNA answer reasons (RFC 5024 §5.3.5).
const (
	SFNAInvalidFilename          SFNAReason = 1
	SFNAInvalidDestination       SFNAReason = 2
	SFNAInvalidOrigin            SFNAReason = 3
	SFNARecordFormatNotSupported SFNAReason = 4
	SFNARecordLengthNotSupported SFNAReason = 5
	SFNAFileTooBig               SFNAReason = 6
	SFNAInvalidRecordCount       SFNAReason = 10
	SFNAInvalidByteCount         SFNAReason = 11
	SFNAAccessMethodFailure      SFNAReason = 12
	SFNADuplicateFile            SFNAReason = 13
	SFNAFileDirectionRefused     SFNAReason = 14
	SFNACipherSuiteNotSupported  SFNAReason = 15
	SFNAEncryptedNotAllowed      SFNAReason = 16
	SFNAUnencryptedNotAllowed    SFNAReason = 17
	SFNACompressionNotAllowed    SFNAReason = 18
	SFNASignedNotAllowed         SFNAReason = 19
	SFNAUnsignedNotAllowed       SFNAReason = 20
	SFNAUnspecified              SFNAReason = 99
)

var fileReasonNames = map[uint8]string{
	1:  "invalid filename",
	2:  "invalid destination",
	3:  "invalid origin",
	4:  "storage record format not supported",
	5:  "maximum record length not supported",
	6:  "file size is too big",
	10: "invalid record count",
	11: "invalid byte count",
	12: "access method failure",
	13: "duplicate file",
	14: "file direction refused",
	15: "cipher suite not supported",
	16: "encrypted file not allowed",
	17: "unencrypted file not allowed",
	18: "compression not allowed",
	19: "signed file not allowed",
	20: "unsigned file not allowed",
	21: "invalid file signature",
	22: "file decryption failure",
	23: "file decompression failure",
	99: "unspecified reason",
}

// Valid reports whether r is one of the reasons defined in RFC 5024 §5.3.5.
func (r SFNAReason) Valid() bool {
	if r >= 21 && r <= 23 { // EFNA only (§5.3.10).
		return false
	}
	_, ok := fileReasonNames[uint8(r)]
	return ok
}

// String returns the two-digit code and the RFC description.
func (r SFNAReason) String() string {
	if !r.Valid() {
		return reasonString(uint8(r), "")
	}
	return reasonString(uint8(r), fileReasonNames[uint8(r)])
}

// EFNAReason is the answer reason of an End File Negative Answer
// (RFC 5024 §5.3.10, field EFNAREAS).
type EFNAReason uint8

// EFNA answer reasons (RFC 5024 §5.3.10).
const (
	EFNAInvalidFilename          EFNAReason = 1
	EFNAInvalidDestination       EFNAReason = 2
	EFNAInvalidOrigin            EFNAReason = 3
	EFNARecordFormatNotSupported EFNAReason = 4
	EFNARecordLengthNotSupported EFNAReason = 5
	EFNAFileTooBig               EFNAReason = 6
	EFNAInvalidRecordCount       EFNAReason = 10
	EFNAInvalidByteCount         EFNAReason = 11
	EFNAAccessMethodFailure      EFNAReason = 12
	EFNADuplicateFile            EFNAReason = 13
	EFNAFileDirectionRefused     EFNAReason = 14
	EFNACipherSuiteNotSupported  EFNAReason = 15
	EFNAEncryptedNotAllowed      EFNAReason = 16
	EFNAUnencryptedNotAllowed    EFNAReason = 17
	EFNACompressionNotAllowed    EFNAReason = 18
	EFNASignedNotAllowed         EFNAReason = 19
	EFNAUnsignedNotAllowed       EFNAReason = 20
	EFNAInvalidSignature         EFNAReason = 21
	EFNADecryptionFailure        EFNAReason = 22
	EFNADecompressionFailure     EFNAReason = 23
	EFNAUnspecified              EFNAReason = 99
)

// Valid reports whether r is one of the reasons defined in RFC 5024 §5.3.10.
func (r EFNAReason) Valid() bool { _, ok := fileReasonNames[uint8(r)]; return ok }

// String returns the two-digit code and the RFC description.
func (r EFNAReason) String() string { return reasonString(uint8(r), fileReasonNames[uint8(r)]) }

// NERPReason is the reason code of a Negative End Response
// (RFC 5024 §5.3.14, field NERPREAS).
type NERPReason uint8

// NERP reason codes (RFC 5024 §5.3.14).
const (
	NERPUserCodeNotKnown         NERPReason = 3  // ESID received with reason 03.
	NERPInvalidPassword          NERPReason = 4  // ESID received with reason 04.
	NERPESIDUnspecified          NERPReason = 9  // ESID received with reason 99.
	NERPInvalidFilename          NERPReason = 11 // SFNA(RETRY=N) received with reason 01.
	NERPInvalidDestination       NERPReason = 12 // SFNA(RETRY=N) received with reason 02.
	NERPInvalidOrigin            NERPReason = 13 // SFNA(RETRY=N) received with reason 03.
	NERPInvalidRecordFormat      NERPReason = 14 // SFNA(RETRY=N) received with reason 04.
	NERPRecordLengthNotSupported NERPReason = 15 // SFNA(RETRY=N) received with reason 05.
	NERPFileTooBig               NERPReason = 16 // SFNA(RETRY=N) received with reason 06.
	NERPInvalidRecordCount       NERPReason = 20 // SFNA(RETRY=N) received with reason 10.
	NERPInvalidByteCount         NERPReason = 21 // SFNA(RETRY=N) received with reason 11.
	NERPAccessMethodFailure      NERPReason = 22 // SFNA(RETRY=N) received with reason 12.
	NERPDuplicateFile            NERPReason = 23 // SFNA(RETRY=N) received with reason 13.
	NERPFileDirectionRefused     NERPReason = 24 // SFNA(RETRY=N) received with reason 14.
	NERPCipherSuiteNotSupported  NERPReason = 25 // SFNA(RETRY=N) received with reason 15.
	NERPEncryptedNotAllowed      NERPReason = 26 // SFNA(RETRY=N) received with reason 16.
	NERPUnencryptedNotAllowed    NERPReason = 27 // SFNA(RETRY=N) received with reason 17.
	NERPCompressionNotAllowed    NERPReason = 28 // SFNA(RETRY=N) received with reason 18.
	NERPSignedNotAllowed         NERPReason = 29 // SFNA(RETRY=N) received with reason 19.
	NERPUnsignedNotAllowed       NERPReason = 30 // SFNA(RETRY=N) received with reason 20.
	NERPInvalidSignature         NERPReason = 31 // File signature not valid.
	NERPDecompressionFailed      NERPReason = 32 // File decompression failed.
	NERPDecryptionFailed         NERPReason = 33 // File decryption failed.
	NERPProcessingFailed         NERPReason = 34 // File processing failed.
	NERPNotDelivered             NERPReason = 35 // Not delivered to recipient.
	NERPNotAcknowledged          NERPReason = 36 // Not acknowledged by recipient.
	NERPStoppedByOperator        NERPReason = 50 // Transmission stopped by the operator.
	NERPFileSizeIncompatible     NERPReason = 90 // File size incompatible with recipient's protocol version.
	NERPUnspecified              NERPReason = 99 // Unspecified reason.
)

var nerpReasonNames = map[NERPReason]string{
	NERPUserCodeNotKnown:         "user code not known",
	NERPInvalidPassword:          "invalid password",
	NERPESIDUnspecified:          "ESID with unspecified reason",
	NERPInvalidFilename:          "invalid file name",
	NERPInvalidDestination:       "invalid destination",
	NERPInvalidOrigin:            "invalid origin",
	NERPInvalidRecordFormat:      "invalid storage record format",
	NERPRecordLengthNotSupported: "maximum record length not supported",
	NERPFileTooBig:               "file size too big",
	NERPInvalidRecordCount:       "invalid record count",
	NERPInvalidByteCount:         "invalid byte count",
	NERPAccessMethodFailure:      "access method failure",
	NERPDuplicateFile:            "duplicate file",
	NERPFileDirectionRefused:     "file direction refused",
	NERPCipherSuiteNotSupported:  "cipher suite not supported",
	NERPEncryptedNotAllowed:      "encrypted file not allowed",
	NERPUnencryptedNotAllowed:    "unencrypted file not allowed",
	NERPCompressionNotAllowed:    "compression not allowed",
	NERPSignedNotAllowed:         "signed file not allowed",
	NERPUnsignedNotAllowed:       "unsigned file not allowed",
	NERPInvalidSignature:         "file signature not valid",
	NERPDecompressionFailed:      "file decompression failed",
	NERPDecryptionFailed:         "file decryption failed",
	NERPProcessingFailed:         "file processing failed",
	NERPNotDelivered:             "not delivered to recipient",
	NERPNotAcknowledged:          "not acknowledged by recipient",
	NERPStoppedByOperator:        "transmission stopped by the operator",
	NERPFileSizeIncompatible:     "file size incompatible with recipient's protocol version",
	NERPUnspecified:              "unspecified reason",
}

// Valid reports whether r is one of the reason codes defined in RFC 5024 §5.3.14.
func (r NERPReason) Valid() bool { _, ok := nerpReasonNames[r]; return ok }

// String returns the two-digit code and the RFC description.
func (r NERPReason) String() string { return reasonString(uint8(r), nerpReasonNames[r]) }

func reasonString(code uint8, name string) string {
	var b [2]byte
	b[0] = '0' + code/10%10
	b[1] = '0' + code%10
	if code >= 100 {
		return strconv.Itoa(int(code)) + " (undefined)"
	}
	if name == "" {
		name = "undefined"
	}
	return string(b[:]) + " (" + name + ")"
}

// ProtocolError reports an exchange buffer that violates RFC 5024: a malformed
// command, a bad field, or a command that is not legal in the session's
// current state. Reason is the ESID reason the violation maps to, so that the
// peer can be told with ESID(Reason) (see ProtocolError.ESID).
//
// Use errors.As to obtain it from an error returned by this package.
type ProtocolError struct {
	// Reason is the ESID reason code that fits the violation.
	Reason ESIDReason
	// Command is the command whose buffer was rejected, or zero if the
	// buffer could not be attributed to a command (framing errors).
	Command CommandCode
	// Field is the RFC 5024 field name (e.g. "SSIDSDEB"), or empty when the
	// error concerns the buffer or the session state as a whole.
	Field string
	// Msg describes the violation for the operator's log. It never contains
	// a password.
	Msg string
}

// Error implements the error interface.
func (e *ProtocolError) Error() string {
	s := "oftp2: "
	if e.Command != 0 {
		s += e.Command.String() + ": "
	}
	if e.Field != "" {
		s += e.Field + ": "
	}
	return s + e.Msg + " (ESID reason " + e.Reason.String() + ")"
}

// ESID returns the End Session command that reports this error to a peer:
// the error's reason with a short English text.
func (e *ProtocolError) ESID() *ESID {
	text := e.Msg
	if e.Field != "" {
		text = e.Field + ": " + text
	}
	if len(text) > 80 {
		text = text[:80]
	}
	return &ESID{Reason: e.Reason, Text: sanitizeText(text)}
}

// sanitizeText keeps an error text valid UTF-8 so that it can be sent in ESIDREAST.
func sanitizeText(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// ReasonOf returns the ESID reason carried by err when it is (or wraps) a
// *ProtocolError, and ESIDUnspecified otherwise.
func ReasonOf(err error) ESIDReason {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ESIDUnspecified
}

func errorf(reason ESIDReason, cmd CommandCode, field, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: reason, Command: cmd, Field: field, Msg: fmt.Sprintf(format, args...)}
}
