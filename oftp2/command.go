package oftp2

import "strconv"

// CommandCode is the first octet of an exchange buffer, which names the
// command it carries (RFC 5024 §5.2).
type CommandCode byte

// The command codes of RFC 5024 §5.3.
const (
	CodeSSRM CommandCode = 'I' // Start Session Ready Message (§5.3.1).
	CodeSSID CommandCode = 'X' // Start Session (§5.3.2).
	CodeSFID CommandCode = 'H' // Start File (§5.3.3).
	CodeSFPA CommandCode = '2' // Start File Positive Answer (§5.3.4).
	CodeSFNA CommandCode = '3' // Start File Negative Answer (§5.3.5).
	CodeDATA CommandCode = 'D' // Data Exchange Buffer (§5.3.6).
	CodeCDT  CommandCode = 'C' // Set Credit (§5.3.7).
	CodeEFID CommandCode = 'T' // End File (§5.3.8).
	CodeEFPA CommandCode = '4' // End File Positive Answer (§5.3.9).
	CodeEFNA CommandCode = '5' // End File Negative Answer (§5.3.10).
	CodeESID CommandCode = 'F' // End Session (§5.3.11).
	CodeCD   CommandCode = 'R' // Change Direction (§5.3.12).
	CodeEERP CommandCode = 'E' // End to End Response (§5.3.13).
	CodeNERP CommandCode = 'N' // Negative End Response (§5.3.14).
	CodeRTR  CommandCode = 'P' // Ready To Receive (§5.3.15).
	CodeSECD CommandCode = 'J' // Security Change Direction (§5.3.16).
	CodeAUCH CommandCode = 'A' // Authentication Challenge (§5.3.17).
	CodeAURP CommandCode = 'S' // Authentication Response (§5.3.18).
)

var codeNames = [256]string{
	CodeSSRM: "SSRM", CodeSSID: "SSID", CodeSFID: "SFID", CodeSFPA: "SFPA",
	CodeSFNA: "SFNA", CodeDATA: "DATA", CodeCDT: "CDT", CodeEFID: "EFID",
	CodeEFPA: "EFPA", CodeEFNA: "EFNA", CodeESID: "ESID", CodeCD: "CD",
	CodeEERP: "EERP", CodeNERP: "NERP", CodeRTR: "RTR", CodeSECD: "SECD",
	CodeAUCH: "AUCH", CodeAURP: "AURP",
}

// String returns the RFC name of the command ("SSID"), or
// "CommandCode(0x..)" for an octet that names no command.
func (c CommandCode) String() string {
	if n := codeNames[c]; n != "" {
		return n
	}
	return "CommandCode(0x" + strconv.FormatUint(uint64(c), 16) + ")"
}

// Known reports whether c is one of the command codes of RFC 5024 §5.3.
func (c CommandCode) Known() bool { return codeNames[c] != "" }

// Command is one decoded OFTP2 command: the content of one exchange buffer.
// Every command type of this package (*SSRM, *SSID, ..., *Data) implements it.
type Command interface {
	// Code returns the command's code.
	Code() CommandCode
	// Append appends the command's exchange buffer (without the stream
	// transmission header) to dst and returns the extended slice. It
	// validates every field first and appends nothing on error; it
	// allocates only when dst must grow. Append accepts the lenient
	// character set (see Charset), so that anything Parse accepts can be
	// encoded again; use Validate to check a command against strict rules.
	Append(dst []byte) ([]byte, error)
}

// Charset selects how strictly the X(n) alphanumeric fields (RFC 5024 §5.3,
// Appendix B) are checked. Lengths, padding, numeric fields and enumerated
// values are enforced whatever the Charset.
type Charset uint8

const (
	// CharsetStrict accepts only the RFC 5024 §5.3 X(n) set: the digits 0–9,
	// the upper-case letters A–Z and / - . & ( ) and space, left-justified,
	// with no embedded space (identification codes, whose §5.4 subfields are
	// space padded, may contain embedded spaces). Reserved fields must be
	// spaces.
	CharsetStrict Charset = iota
	// CharsetLenient accepts every printable ASCII character 0x20–0x7E
	// (lower case, underscore, @, and others seen in real traffic), embedded
	// and leading spaces included, in X(n) and reserved fields. Trailing
	// spaces are always padding.
	CharsetLenient
)

// String returns "strict" or "lenient".
func (c Charset) String() string {
	switch c {
	case CharsetStrict:
		return "strict"
	case CharsetLenient:
		return "lenient"
	}
	return "Charset(" + strconv.Itoa(int(c)) + ")"
}

// ParseOptions tunes decoding. A nil *ParseOptions and the zero value both
// mean: strict RFC 5024 rules.
type ParseOptions struct {
	// Charset is the X(n) character-set policy. The zero value is CharsetStrict.
	Charset Charset
	// AllowZeroTimeCounter accepts the counter "0000" in HHMMSScccc time
	// stamps (SFIDTIME, EERPTIME, NERPTIME), which RFC 5024 §5.3.3 defines as
	// 0001–9999. If false, "0000" is rejected.
	AllowZeroTimeCounter bool
}

var strictOptions ParseOptions

func (o *ParseOptions) orDefault() *ParseOptions {
	if o == nil {
		return &strictOptions
	}
	return o
}

// lenientOptions are the broadest rules: Append validates with them, so that
// anything Parse can accept can be encoded again.
var lenientOptions = ParseOptions{Charset: CharsetLenient, AllowZeroTimeCounter: true}

// Parse decodes one exchange buffer (the stream transmission header already
// removed). The first octet selects the command (RFC 5024 §5.2). Every field
// is checked per §5.3 and Appendix B; the error is a *ProtocolError whose
// Reason is ESIDCommandNotRecognised (01) for an unknown command code,
// ESIDBufferSizeError (07) for a buffer whose length does not match the
// command, and ESIDInvalidData (06) for a bad field.
//
// The returned command does not reference buf, except *Data, whose Payload
// is a sub-slice of buf.
func Parse(buf []byte, opts *ParseOptions) (Command, error) {
	if len(buf) == 0 {
		return nil, errorf(ESIDBufferSizeError, 0, "", "empty exchange buffer")
	}
	var c interface {
		Command
		Decode([]byte, *ParseOptions) error
	}
	switch CommandCode(buf[0]) {
	case CodeSSRM:
		c = new(SSRM)
	case CodeSSID:
		c = new(SSID)
	case CodeSFID:
		c = new(SFID)
	case CodeSFPA:
		c = new(SFPA)
	case CodeSFNA:
		c = new(SFNA)
	case CodeDATA:
		c = new(Data)
	case CodeCDT:
		c = new(CDT)
	case CodeEFID:
		c = new(EFID)
	case CodeEFPA:
		c = new(EFPA)
	case CodeEFNA:
		c = new(EFNA)
	case CodeESID:
		c = new(ESID)
	case CodeCD:
		c = new(CD)
	case CodeEERP:
		c = new(EERP)
	case CodeNERP:
		c = new(NERP)
	case CodeRTR:
		c = new(RTR)
	case CodeSECD:
		c = new(SECD)
	case CodeAUCH:
		c = new(AUCH)
	case CodeAURP:
		c = new(AURP)
	default:
		// §5.3.11 ESIDREAS 01: invalid command code (1st octet of the buffer).
		return nil, errorf(ESIDCommandNotRecognised, 0, "", "unknown command code 0x%02x", buf[0])
	}
	if err := c.Decode(buf, opts); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks cmd against the rules of opts (nil means strict) exactly as
// Parse would check its encoding: it reports the first field that a peer
// decoding with opts would reject.
func Validate(cmd Command, opts *ParseOptions) error {
	var scratch [512]byte
	buf, err := cmd.Append(scratch[:0])
	if err != nil {
		return err
	}
	_, err = Parse(buf, opts)
	return err
}
