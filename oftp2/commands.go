package oftp2

import "strconv"

// Fixed command lengths in octets (RFC 5024 §5.3).
const (
	ssrmLen    = 19  // §5.3.1
	ssidLen    = 61  // §5.3.2
	sfidMinLen = 165 // §5.3.3, plus SFIDDESCL octets
	sfpaLen    = 18  // §5.3.4
	sfnaMinLen = 7   // §5.3.5, plus SFNAREASL octets
	cdtLen     = 3   // §5.3.7
	efidLen    = 35  // §5.3.8
	efpaLen    = 2   // §5.3.9
	efnaMinLen = 6   // §5.3.10, plus EFNAREASL octets
	esidMinLen = 7   // §5.3.11, plus ESIDREASL octets
	eerpMinLen = 110 // §5.3.13, plus EERPHSHL and EERPSIGL octets
	nerpMinLen = 135 // §5.3.14, plus NERPREASL, NERPHSHL and NERPSIGL octets
	auchMinLen = 3   // §5.3.17, plus AUCHCHLL octets
	aurpLen    = 21  // §5.3.18
)

// ssrmMessage is the fixed SSRMMSG text (§5.3.1).
const ssrmMessage = "ODETTE FTP READY "

// MaxExchangeBuffer is the largest exchange buffer RFC 5024 allows: SSIDSDEB
// is at most 99999 octets (§5.3.2), giving a stream transmission buffer of
// 100003 octets (§8.2).
const MaxExchangeBuffer = 99999

// MinExchangeBuffer is the smallest SSIDSDEB a location may offer (§5.3.2).
const MinExchangeBuffer = 128

// MaxCredit is the largest SSIDCRED (§5.3.2).
const MaxCredit = 999

// checkCode verifies that buf holds the command a Decode method expects
// (§5.2: the first octet is the command identifier).
func checkCode(buf []byte, want CommandCode) error {
	if len(buf) == 0 {
		return errorf(ESIDBufferSizeError, want, "", "empty exchange buffer")
	}
	if CommandCode(buf[0]) != want {
		return errorf(ESIDCommandNotRecognised, want, "", "buffer starts with %s, not %s", CommandCode(buf[0]), want)
	}
	return nil
}

// checkFixedLen verifies the exact length of a fixed-size command: a
// different length is an exchange buffer size error (§5.3.11 ESIDREAS 07).
func checkFixedLen(buf []byte, cmd CommandCode, want int) error {
	if err := checkCode(buf, cmd); err != nil {
		return err
	}
	if len(buf) != want {
		return errorf(ESIDBufferSizeError, cmd, "", "buffer of %d octets, the command has %d", len(buf), want)
	}
	return nil
}

// SSRM is the Start Session Ready Message (RFC 5024 §5.3.1), sent by the
// Responder as the first command of a session.
type SSRM struct {
	// HighBitCR records that SSRMCR was 0x8D rather than 0x0D.
	HighBitCR bool
}

// Code returns CodeSSRM.
func (*SSRM) Code() CommandCode { return CodeSSRM }

// Append appends the SSRM buffer to dst.
func (c *SSRM) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeSSRM, ssrmLen)
	e.b = append(e.b, ssrmMessage...)
	e.cr(c.HighBitCR)
	return e.result(dst)
}

// Decode parses an SSRM buffer into c.
func (c *SSRM) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkFixedLen(buf, CodeSSRM, ssrmLen); err != nil {
		return err
	}
	d := newDecoder(buf, CodeSSRM, opts)
	// §5.3.1 SSRMMSG: the fixed value 'ODETTE FTP READY '.
	if msg := d.take(len(ssrmMessage), "SSRMMSG"); string(msg) != ssrmMessage {
		d.fail(ESIDInvalidData, "SSRMMSG", "ready message %q, want %q", msg, ssrmMessage)
	}
	cr := d.cr("SSRMCR") // §5.3.1 SSRMCR: 0x0D or 0x8D.
	if err := d.end(); err != nil {
		return err
	}
	*c = SSRM{HighBitCR: cr}
	return nil
}

// Mode is the send/receive capability of a location (SSIDSR, RFC 5024 §5.3.2).
type Mode byte

// Mode values (§5.3.2 SSIDSR).
const (
	ModeSender   Mode = 'S' // The location can only send files.
	ModeReceiver Mode = 'R' // The location can only receive files.
	ModeBoth     Mode = 'B' // The location can send and receive files.
)

// String returns "sender-only", "receiver-only" or "both".
func (m Mode) String() string {
	switch m {
	case ModeSender:
		return "sender-only"
	case ModeReceiver:
		return "receiver-only"
	case ModeBoth:
		return "both"
	}
	return "Mode(" + strconv.Quote(string(rune(m))) + ")"
}

// Valid reports whether m is S, R or B.
func (m Mode) Valid() bool { return m == ModeSender || m == ModeReceiver || m == ModeBoth }

// Password is an SSIDPSWD value. Its String and GoString methods redact it,
// so that it never reaches a log through %v or %#v.
type Password string

// String returns a redacted placeholder.
func (p Password) String() string {
	if p == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns a redacted placeholder.
func (p Password) GoString() string { return strconv.Quote(p.String()) }

// SSID is the Start Session command (RFC 5024 §5.3.2), sent once by each side.
type SSID struct {
	// Level is SSIDLEV, the protocol release level: 5 for OFTP 2.0. Zero
	// means 5 when encoding.
	Level int
	// ID is SSIDCODE, the sender's identification code (Odette ID, §5.4).
	ID string
	// Password is SSIDPSWD. It may be empty.
	Password Password
	// BufferSize is SSIDSDEB, the largest data exchange buffer the location
	// accepts, command octet included: 128–99999.
	BufferSize int
	// Mode is SSIDSR.
	Mode Mode
	// Compression is SSIDCMPR: the location can handle buffer compression.
	Compression bool
	// Restart is SSIDREST: the location can restart interrupted transfers.
	Restart bool
	// SpecialLogic is SSIDSPEC (X.25 only; false on TCP).
	SpecialLogic bool
	// Credit is SSIDCRED, the credit window: 1–999.
	Credit int
	// SecureAuth is SSIDAUTH: the location requires secure authentication.
	SecureAuth bool
	// UserData is SSIDUSER, up to 8 characters; may be empty.
	UserData string
	// HighBitCR records that SSIDCR was 0x8D rather than 0x0D.
	HighBitCR bool
}

// Code returns CodeSSID.
func (*SSID) Code() CommandCode { return CodeSSID }

// Append appends the SSID buffer to dst.
func (c *SSID) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeSSID, ssidLen)
	lev := c.Level
	if lev == 0 {
		lev = 5
	}
	e.rangeNum(int64(lev), 1, "SSIDLEV", 1, 9)
	e.x(c.ID, 25, "SSIDCODE", xID)
	e.x(string(c.Password), 8, "SSIDPSWD", xOptional)
	e.rangeNum(int64(c.BufferSize), 5, "SSIDSDEB", MinExchangeBuffer, MaxExchangeBuffer)
	if !c.Mode.Valid() {
		e.fail(ESIDInvalidData, "SSIDSR", "mode %s, want S, R or B", c.Mode)
	}
	e.b = append(e.b, byte(c.Mode))
	e.yn(c.Compression)
	e.yn(c.Restart)
	e.yn(c.SpecialLogic)
	e.rangeNum(int64(c.Credit), 3, "SSIDCRED", 1, MaxCredit)
	e.yn(c.SecureAuth)
	e.spaces(4)
	e.x(c.UserData, 8, "SSIDUSER", xOptional)
	e.cr(c.HighBitCR)
	return e.result(dst)
}

// Decode parses an SSID buffer into c.
func (c *SSID) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkFixedLen(buf, CodeSSID, ssidLen); err != nil {
		return err
	}
	d := newDecoder(buf, CodeSSID, opts)
	var v SSID
	// §5.3.2 SSIDLEV: a release level digit; '5' is OFTP 2.0, higher levels
	// are future releases, '0' is undefined.
	v.Level = int(d.rangeNum(1, "SSIDLEV", 1, 9))
	v.ID = d.x(25, "SSIDCODE", xID)                           // §5.3.2, §5.4
	v.Password = Password(d.x(8, "SSIDPSWD", xOptional))      // §5.3.2 String(8)
	v.BufferSize = int(d.rangeNum(5, "SSIDSDEB", 128, 99999)) // §5.3.2 minimum 128, maximum 99999
	if b := d.take(1, "SSIDSR"); b != nil {                   // §5.3.2 SSIDSR: S, R or B
		v.Mode = Mode(b[0])
		if !v.Mode.Valid() {
			d.fail(ESIDInvalidData, "SSIDSR", "mode %q, want S, R or B", rune(b[0]))
		}
	}
	v.Compression = d.yn("SSIDCMPR")                  // §5.3.2 Y/N
	v.Restart = d.yn("SSIDREST")                      // §5.3.2 Y/N
	v.SpecialLogic = d.yn("SSIDSPEC")                 // §5.3.2 Y/N
	v.Credit = int(d.rangeNum(3, "SSIDCRED", 1, 999)) // §5.3.2 maximum 999; §9.7 Max-window 0 < n < 1000
	v.SecureAuth = d.yn("SSIDAUTH")                   // §5.3.2 Y/N
	d.reserved(4, "SSIDRSV1")                         // §5.3.2 reserved
	v.UserData = d.x(8, "SSIDUSER", xOptional)        // §5.3.2 String(8), spaces if unused
	v.HighBitCR = d.cr("SSIDCR")                      // §5.3.2 0x0D or 0x8D
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// FileFormat is the Virtual File format (SFIDFMT, RFC 5024 §5.3.3, §1.5.3).
type FileFormat byte

// File formats (§5.3.3 SFIDFMT).
const (
	FormatFixed        FileFormat = 'F' // Fixed-length records.
	FormatVariable     FileFormat = 'V' // Variable-length records.
	FormatUnstructured FileFormat = 'U' // A stream of octets.
	FormatText         FileFormat = 'T' // Text: ASCII lines separated by CR LF.
)

// String returns the format letter and name.
func (f FileFormat) String() string {
	switch f {
	case FormatFixed:
		return "F (fixed)"
	case FormatVariable:
		return "V (variable)"
	case FormatUnstructured:
		return "U (unstructured)"
	case FormatText:
		return "T (text)"
	}
	return "FileFormat(" + strconv.Quote(string(rune(f))) + ")"
}

// Valid reports whether f is F, V, U or T.
func (f FileFormat) Valid() bool {
	return f == FormatFixed || f == FormatVariable || f == FormatUnstructured || f == FormatText
}

// SecurityLevel is SFIDSEC (RFC 5024 §5.3.3).
type SecurityLevel uint8

// Security levels (§5.3.3 SFIDSEC).
const (
	SecurityNone            SecurityLevel = 0 // No security services.
	SecurityEncrypted       SecurityLevel = 1 // Encrypted.
	SecuritySigned          SecurityLevel = 2 // Signed.
	SecurityEncryptedSigned SecurityLevel = 3 // Encrypted and signed.
)

// String returns the two-digit code and its meaning.
func (s SecurityLevel) String() string {
	names := [...]string{"none", "encrypted", "signed", "encrypted and signed"}
	if int(s) < len(names) {
		return "0" + strconv.Itoa(int(s)) + " (" + names[s] + ")"
	}
	return "SecurityLevel(" + strconv.Itoa(int(s)) + ")"
}

// CipherSuite is SFIDCIPH (RFC 5024 §5.3.3, §10.2). 0 means no security
// services; 1 and 2 are defined in §10.2; ODETTE maintains further values
// outside the RFC (§10.3), so every two-digit value is accepted.
type CipherSuite uint8

// FileCompression is SFIDCOMP (RFC 5024 §5.3.3): 0 none, 1 ZLIB.
type FileCompression uint8

// File compression algorithms (§5.3.3 SFIDCOMP).
const (
	FileCompressionNone FileCompression = 0
	FileCompressionZLIB FileCompression = 1
)

// Envelope is SFIDENV (RFC 5024 §5.3.3): 0 no envelope, 1 CMS.
type Envelope uint8

// Envelope formats (§5.3.3 SFIDENV).
const (
	EnvelopeNone Envelope = 0
	EnvelopeCMS  Envelope = 1
)

// SFID is the Start File command (RFC 5024 §5.3.3), sent by the Speaker.
type SFID struct {
	// DatasetName is SFIDDSN, the Virtual File name (X(26), required).
	DatasetName string
	// Stamp is SFIDDATE and SFIDTIME.
	Stamp Timestamp
	// UserData is SFIDUSER (X(8), may be empty).
	UserData string
	// Destination is SFIDDEST, the final recipient's identification code.
	Destination string
	// Originator is SFIDORIG, the originator's identification code.
	Originator string
	// Format is SFIDFMT.
	Format FileFormat
	// MaxRecordSize is SFIDLRECL: 0–99999; 0 for formats T and U; at most
	// 65536 for V files that are signed, encrypted or compressed.
	MaxRecordSize int
	// FileSize is SFIDFSIZ, the transmitted size in 1K blocks.
	FileSize int64
	// OriginalFileSize is SFIDOSIZ, the original size in 1K blocks (0 if unknown).
	OriginalFileSize int64
	// RestartPosition is SFIDREST: a record number (F, V) or a 1K-block
	// offset (U, T, and any secured or compressed file).
	RestartPosition int64
	// Security is SFIDSEC.
	Security SecurityLevel
	// Cipher is SFIDCIPH.
	Cipher CipherSuite
	// Compression is SFIDCOMP.
	Compression FileCompression
	// Envelope is SFIDENV; it must be EnvelopeCMS when Security or
	// Compression is set.
	Envelope Envelope
	// SignedEERP is SFIDSIGN: the EERP for this file must be signed.
	SignedEERP bool
	// Description is SFIDDESC, UTF-8, at most 999 octets.
	Description string
}

// Code returns CodeSFID.
func (*SFID) Code() CommandCode { return CodeSFID }

// Unstructured reports whether the transmitted file must be treated as format
// U (RFC 5024 §5.3.3 SFIDFMT, SFIDREST): it is unstructured, text, or has been
// signed, encrypted, compressed or enveloped, so that restart positions are
// 1K blocks and records are not visible in the data.
func (c *SFID) Unstructured() bool {
	return c.Format == FormatUnstructured || c.Format == FormatText ||
		c.Security != SecurityNone || c.Compression != FileCompressionNone || c.Envelope != EnvelopeNone
}

// Append appends the SFID buffer to dst.
func (c *SFID) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeSFID, sfidMinLen+len(c.Description))
	e.x(c.DatasetName, 26, "SFIDDSN", xRequired)
	e.spaces(3)
	e.stamp(c.Stamp, "SFIDDATE", "SFIDTIME")
	e.x(c.UserData, 8, "SFIDUSER", xOptional)
	e.x(c.Destination, 25, "SFIDDEST", xID)
	e.x(c.Originator, 25, "SFIDORIG", xID)
	if !c.Format.Valid() {
		e.fail(ESIDInvalidData, "SFIDFMT", "format %s, want F, V, U or T", c.Format)
	}
	e.b = append(e.b, byte(c.Format))
	e.num(int64(c.MaxRecordSize), 5, "SFIDLRECL")
	e.num(c.FileSize, 13, "SFIDFSIZ")
	e.num(c.OriginalFileSize, 13, "SFIDOSIZ")
	e.num(c.RestartPosition, 17, "SFIDREST")
	e.rangeNum(int64(c.Security), 2, "SFIDSEC", 0, 3)
	e.num(int64(c.Cipher), 2, "SFIDCIPH")
	e.rangeNum(int64(c.Compression), 1, "SFIDCOMP", 0, 1)
	e.rangeNum(int64(c.Envelope), 1, "SFIDENV", 0, 1)
	e.yn(c.SignedEERP)
	e.text(c.Description, "SFIDDESCL", "SFIDDESC")
	if e.err == nil {
		if err := c.crossCheck(); err != nil {
			e.err = err
		}
	}
	return e.result(dst)
}

// crossCheck enforces the rules that relate several SFID fields.
func (c *SFID) crossCheck() error {
	// §5.3.3 SFIDLRECL: "If SFIDFMT is 'T' or 'U', then this attribute must
	// be set to '00000'."
	if (c.Format == FormatText || c.Format == FormatUnstructured) && c.MaxRecordSize != 0 {
		return errorf(ESIDInvalidData, CodeSFID, "SFIDLRECL", "must be 00000 for format %s, is %d", c.Format, c.MaxRecordSize)
	}
	secured := c.Security != SecurityNone || c.Compression != FileCompressionNone
	// §5.3.3 SFIDLRECL: a compressed, encrypted or signed V file has at most 65536.
	if c.Format == FormatVariable && secured && c.MaxRecordSize > 65536 {
		return errorf(ESIDInvalidData, CodeSFID, "SFIDLRECL", "%d exceeds 65536 for a secured or compressed V file", c.MaxRecordSize)
	}
	// §6.1: "Secured and/or compressed files must be enveloped"; §5.3.3
	// SFIDENV "must be set accordingly".
	if secured && c.Envelope != EnvelopeCMS {
		return errorf(ESIDInvalidData, CodeSFID, "SFIDENV", "a signed, encrypted or compressed file must be enveloped")
	}
	return nil
}

// Decode parses an SFID buffer into c.
func (c *SFID) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeSFID); err != nil {
		return err
	}
	if len(buf) < sfidMinLen {
		return errorf(ESIDBufferSizeError, CodeSFID, "", "buffer of %d octets, the command has at least %d", len(buf), sfidMinLen)
	}
	d := newDecoder(buf, CodeSFID, opts)
	var v SFID
	v.DatasetName = d.x(26, "SFIDDSN", xRequired) // §5.3.3 String(26)
	d.reserved(3, "SFIDRSV1")                     // §5.3.3 reserved
	v.Stamp = d.stamp("SFIDDATE", "SFIDTIME")     // §5.3.3 CCYYMMDD, HHMMSScccc
	v.UserData = d.x(8, "SFIDUSER", xOptional)    // §5.3.3 String(8)
	v.Destination = d.x(25, "SFIDDEST", xID)      // §5.3.3, §5.4
	v.Originator = d.x(25, "SFIDORIG", xID)       // §5.3.3, §5.4
	if b := d.take(1, "SFIDFMT"); b != nil {      // §5.3.3 F, V, U or T
		v.Format = FileFormat(b[0])
		if !v.Format.Valid() {
			d.fail(ESIDInvalidData, "SFIDFMT", "format %q, want F, V, U or T", rune(b[0]))
		}
	}
	v.MaxRecordSize = int(d.num(5, "SFIDLRECL"))                     // §5.3.3 00000–99999
	v.FileSize = d.num(13, "SFIDFSIZ")                               // §5.3.3 9(13)
	v.OriginalFileSize = d.num(13, "SFIDOSIZ")                       // §5.3.3 9(13)
	v.RestartPosition = d.num(17, "SFIDREST")                        // §5.3.3 9(17)
	v.Security = SecurityLevel(d.rangeNum(2, "SFIDSEC", 0, 3))       // §5.3.3 00–03
	v.Cipher = CipherSuite(d.num(2, "SFIDCIPH"))                     // §5.3.3, §10.3: list maintained by ODETTE
	v.Compression = FileCompression(d.rangeNum(1, "SFIDCOMP", 0, 1)) // §5.3.3 0 or 1
	v.Envelope = Envelope(d.rangeNum(1, "SFIDENV", 0, 1))            // §5.3.3 0 or 1
	v.SignedEERP = d.yn("SFIDSIGN")                                  // §5.3.3 Y/N
	n := d.num(3, "SFIDDESCL")                                       // §5.3.3 9(3), at most 999
	v.Description = d.text(int(n), "SFIDDESC")                       // §5.3.3 UTF-8
	if err := d.end(); err != nil {
		return err
	}
	if err := v.crossCheck(); err != nil {
		return err
	}
	*c = v
	return nil
}

// SFPA is the Start File Positive Answer (RFC 5024 §5.3.4), sent by the Listener.
type SFPA struct {
	// AnswerCount is SFPAACNT: the restart position the Listener accepts,
	// at most the SFID's RestartPosition (0 without restart).
	AnswerCount int64
}

// Code returns CodeSFPA.
func (*SFPA) Code() CommandCode { return CodeSFPA }

// Append appends the SFPA buffer to dst.
func (c *SFPA) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeSFPA, sfpaLen)
	e.num(c.AnswerCount, 17, "SFPAACNT")
	return e.result(dst)
}

// Decode parses an SFPA buffer into c.
func (c *SFPA) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkFixedLen(buf, CodeSFPA, sfpaLen); err != nil {
		return err
	}
	d := newDecoder(buf, CodeSFPA, opts)
	n := d.num(17, "SFPAACNT") // §5.3.4 9(17)
	if err := d.end(); err != nil {
		return err
	}
	*c = SFPA{AnswerCount: n}
	return nil
}

// SFNA is the Start File Negative Answer (RFC 5024 §5.3.5), sent by the Listener.
type SFNA struct {
	// Reason is SFNAREAS.
	Reason SFNAReason
	// Retry is SFNARRTR: the transmission may be retried later.
	Retry bool
	// Text is SFNAREAST, UTF-8, at most 999 octets; may be empty.
	Text string
}

// Code returns CodeSFNA.
func (*SFNA) Code() CommandCode { return CodeSFNA }

// Append appends the SFNA buffer to dst.
func (c *SFNA) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeSFNA, sfnaMinLen+len(c.Text))
	if !c.Reason.Valid() {
		e.fail(ESIDInvalidData, "SFNAREAS", "reason %s is not defined", c.Reason)
	}
	e.num(int64(c.Reason), 2, "SFNAREAS")
	e.yn(c.Retry)
	e.text(c.Text, "SFNAREASL", "SFNAREAST")
	return e.result(dst)
}

// Decode parses an SFNA buffer into c.
func (c *SFNA) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeSFNA); err != nil {
		return err
	}
	d := newDecoder(buf, CodeSFNA, opts)
	var v SFNA
	v.Reason = SFNAReason(d.num(2, "SFNAREAS")) // §5.3.5 enumerated reasons
	if d.err == nil && !v.Reason.Valid() {
		d.fail(ESIDInvalidData, "SFNAREAS", "reason %02d is not defined", v.Reason)
	}
	v.Retry = d.yn("SFNARRTR")           // §5.3.5 Y/N
	n := d.num(3, "SFNAREASL")           // §5.3.5 9(3)
	v.Text = d.text(int(n), "SFNAREAST") // §5.3.5 UTF-8
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// CDT is the Set Credit command (RFC 5024 §5.3.7), sent by the Listener.
type CDT struct{}

// Code returns CodeCDT.
func (*CDT) Code() CommandCode { return CodeCDT }

// Append appends the CDT buffer to dst.
func (c *CDT) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeCDT, cdtLen)
	e.spaces(2)
	return e.result(dst)
}

// Decode parses a CDT buffer into c.
func (c *CDT) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkFixedLen(buf, CodeCDT, cdtLen); err != nil {
		return err
	}
	d := newDecoder(buf, CodeCDT, opts)
	d.reserved(2, "CDTRSV1") // §5.3.7 reserved
	return d.end()
}

// EFID is the End File command (RFC 5024 §5.3.8), sent by the Speaker.
type EFID struct {
	// RecordCount is EFIDRCNT: the exact record count for F and V files,
	// zero for U and T files; always the total, even after a restart.
	RecordCount int64
	// UnitCount is EFIDUCNT: the exact number of octets of the file; always
	// the total, even after a restart.
	UnitCount int64
}

// Code returns CodeEFID.
func (*EFID) Code() CommandCode { return CodeEFID }

// Append appends the EFID buffer to dst.
func (c *EFID) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeEFID, efidLen)
	e.num(c.RecordCount, 17, "EFIDRCNT")
	e.num(c.UnitCount, 17, "EFIDUCNT")
	return e.result(dst)
}

// Decode parses an EFID buffer into c.
func (c *EFID) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkFixedLen(buf, CodeEFID, efidLen); err != nil {
		return err
	}
	d := newDecoder(buf, CodeEFID, opts)
	var v EFID
	v.RecordCount = d.num(17, "EFIDRCNT") // §5.3.8 9(17)
	v.UnitCount = d.num(17, "EFIDUCNT")   // §5.3.8 9(17)
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// EFPA is the End File Positive Answer (RFC 5024 §5.3.9), sent by the Listener.
type EFPA struct {
	// ChangeDirection is EFPACD: the Listener asks the Speaker for a CD.
	ChangeDirection bool
}

// Code returns CodeEFPA.
func (*EFPA) Code() CommandCode { return CodeEFPA }

// Append appends the EFPA buffer to dst.
func (c *EFPA) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeEFPA, efpaLen)
	e.yn(c.ChangeDirection)
	return e.result(dst)
}

// Decode parses an EFPA buffer into c.
func (c *EFPA) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkFixedLen(buf, CodeEFPA, efpaLen); err != nil {
		return err
	}
	d := newDecoder(buf, CodeEFPA, opts)
	cd := d.yn("EFPACD") // §5.3.9 Y/N
	if err := d.end(); err != nil {
		return err
	}
	*c = EFPA{ChangeDirection: cd}
	return nil
}

// EFNA is the End File Negative Answer (RFC 5024 §5.3.10), sent by the Listener.
type EFNA struct {
	// Reason is EFNAREAS.
	Reason EFNAReason
	// Text is EFNAREAST, UTF-8, at most 999 octets; may be empty.
	Text string
}

// Code returns CodeEFNA.
func (*EFNA) Code() CommandCode { return CodeEFNA }

// Append appends the EFNA buffer to dst.
func (c *EFNA) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeEFNA, efnaMinLen+len(c.Text))
	if !c.Reason.Valid() {
		e.fail(ESIDInvalidData, "EFNAREAS", "reason %s is not defined", c.Reason)
	}
	e.num(int64(c.Reason), 2, "EFNAREAS")
	e.text(c.Text, "EFNAREASL", "EFNAREAST")
	return e.result(dst)
}

// Decode parses an EFNA buffer into c.
func (c *EFNA) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeEFNA); err != nil {
		return err
	}
	d := newDecoder(buf, CodeEFNA, opts)
	var v EFNA
	v.Reason = EFNAReason(d.num(2, "EFNAREAS")) // §5.3.10 enumerated reasons
	if d.err == nil && !v.Reason.Valid() {
		d.fail(ESIDInvalidData, "EFNAREAS", "reason %02d is not defined", v.Reason)
	}
	n := d.num(3, "EFNAREASL")           // §5.3.10 9(3)
	v.Text = d.text(int(n), "EFNAREAST") // §5.3.10 UTF-8
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// ESID is the End Session command (RFC 5024 §5.3.11).
type ESID struct {
	// Reason is ESIDREAS.
	Reason ESIDReason
	// Text is ESIDREAST, UTF-8, at most 999 octets; may be empty.
	Text string
	// HighBitCR records that ESIDCR was 0x8D rather than 0x0D.
	HighBitCR bool
}

// Code returns CodeESID.
func (*ESID) Code() CommandCode { return CodeESID }

// Append appends the ESID buffer to dst.
func (c *ESID) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeESID, esidMinLen+len(c.Text))
	if !c.Reason.Valid() {
		e.fail(ESIDInvalidData, "ESIDREAS", "reason %s is not defined", c.Reason)
	}
	e.num(int64(c.Reason), 2, "ESIDREAS")
	e.text(c.Text, "ESIDREASL", "ESIDREAST")
	e.cr(c.HighBitCR)
	return e.result(dst)
}

// Decode parses an ESID buffer into c.
func (c *ESID) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeESID); err != nil {
		return err
	}
	d := newDecoder(buf, CodeESID, opts)
	var v ESID
	v.Reason = ESIDReason(d.num(2, "ESIDREAS")) // §5.3.11 enumerated reasons 00–12, 99
	if d.err == nil && !v.Reason.Valid() {
		d.fail(ESIDInvalidData, "ESIDREAS", "reason %02d is not defined", v.Reason)
	}
	n := d.num(3, "ESIDREASL")           // §5.3.11 9(3)
	v.Text = d.text(int(n), "ESIDREAST") // §5.3.11 UTF-8
	v.HighBitCR = d.cr("ESIDCR")         // §5.3.11 0x0D or 0x8D
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// CD is the Change Direction command (RFC 5024 §5.3.12).
type CD struct{}

// Code returns CodeCD.
func (*CD) Code() CommandCode { return CodeCD }

// Append appends the CD buffer to dst.
func (c *CD) Append(dst []byte) ([]byte, error) { return append(dst, byte(CodeCD)), nil }

// Decode parses a CD buffer into c.
func (c *CD) Decode(buf []byte, _ *ParseOptions) error { return checkFixedLen(buf, CodeCD, 1) } // §5.3.12

// RTR is the Ready To Receive command (RFC 5024 §5.3.15), the Listener's
// answer to EERP and NERP.
type RTR struct{}

// Code returns CodeRTR.
func (*RTR) Code() CommandCode { return CodeRTR }

// Append appends the RTR buffer to dst.
func (c *RTR) Append(dst []byte) ([]byte, error) { return append(dst, byte(CodeRTR)), nil }

// Decode parses an RTR buffer into c.
func (c *RTR) Decode(buf []byte, _ *ParseOptions) error { return checkFixedLen(buf, CodeRTR, 1) } // §5.3.15

// SECD is the Security Change Direction command (RFC 5024 §5.3.16).
type SECD struct{}

// Code returns CodeSECD.
func (*SECD) Code() CommandCode { return CodeSECD }

// Append appends the SECD buffer to dst.
func (c *SECD) Append(dst []byte) ([]byte, error) { return append(dst, byte(CodeSECD)), nil }

// Decode parses a SECD buffer into c.
func (c *SECD) Decode(buf []byte, _ *ParseOptions) error { return checkFixedLen(buf, CodeSECD, 1) } // §5.3.16

// EERP is the End to End Response (RFC 5024 §5.3.13), sent by the Speaker on
// behalf of a file's final recipient.
type EERP struct {
	// DatasetName is EERPDSN (X(26), required).
	DatasetName string
	// Stamp is EERPDATE and EERPTIME, those of the acknowledged file.
	Stamp Timestamp
	// UserData is EERPUSER (X(8), may be empty).
	UserData string
	// Destination is EERPDEST: the originator of the file, to whom the
	// response goes.
	Destination string
	// Originator is EERPORIG: the file's final recipient, which created the response.
	Originator string
	// Hash is EERPHSH, the hash of the transmitted file (empty if unsigned).
	Hash []byte
	// Signature is EERPSIG, the CMS signature (empty if unsigned).
	Signature []byte
}

// Code returns CodeEERP.
func (*EERP) Code() CommandCode { return CodeEERP }

// Append appends the EERP buffer to dst.
func (c *EERP) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeEERP, eerpMinLen+len(c.Hash)+len(c.Signature))
	e.x(c.DatasetName, 26, "EERPDSN", xRequired)
	e.spaces(3)
	e.stamp(c.Stamp, "EERPDATE", "EERPTIME")
	e.x(c.UserData, 8, "EERPUSER", xOptional)
	e.x(c.Destination, 25, "EERPDEST", xID)
	e.x(c.Originator, 25, "EERPORIG", xID)
	e.u16(len(c.Hash), "EERPHSHL")
	e.b = append(e.b, c.Hash...)
	e.u16(len(c.Signature), "EERPSIGL")
	e.b = append(e.b, c.Signature...)
	return e.result(dst)
}

// Decode parses an EERP buffer into c. Hash and Signature are copies.
func (c *EERP) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeEERP); err != nil {
		return err
	}
	d := newDecoder(buf, CodeEERP, opts)
	var v EERP
	v.DatasetName = d.x(26, "EERPDSN", xRequired) // §5.3.13 String(26)
	d.reserved(3, "EERPRSV1")                     // §5.3.13 reserved
	v.Stamp = d.stamp("EERPDATE", "EERPTIME")     // §5.3.13 CCYYMMDD, HHMMSScccc
	v.UserData = d.x(8, "EERPUSER", xOptional)    // §5.3.13 String(8)
	v.Destination = d.x(25, "EERPDEST", xID)      // §5.3.13, §5.4
	v.Originator = d.x(25, "EERPORIG", xID)       // §5.3.13, §5.4
	v.Hash = d.bin(d.u16("EERPHSHL"), "EERPHSH")  // §5.3.13 U(2) length, U(n)
	v.Signature = d.bin(d.u16("EERPSIGL"), "EERPSIG")
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// NERP is the Negative End Response (RFC 5024 §5.3.14), sent by the Speaker.
type NERP struct {
	// DatasetName is NERPDSN (X(26), required).
	DatasetName string
	// Stamp is NERPDATE and NERPTIME.
	Stamp Timestamp
	// Destination is NERPDEST: the originator of the file.
	Destination string
	// Originator is NERPORIG: the file's final recipient.
	Originator string
	// Creator is NERPCREA: the location that created the NERP.
	Creator string
	// Reason is NERPREAS.
	Reason NERPReason
	// Text is NERPREAST, UTF-8, at most 999 octets; may be empty.
	Text string
	// Hash is NERPHSH (empty if unsigned).
	Hash []byte
	// Signature is NERPSIG (empty if unsigned).
	Signature []byte
}

// Code returns CodeNERP.
func (*NERP) Code() CommandCode { return CodeNERP }

// Append appends the NERP buffer to dst.
func (c *NERP) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeNERP, nerpMinLen+len(c.Text)+len(c.Hash)+len(c.Signature))
	e.x(c.DatasetName, 26, "NERPDSN", xRequired)
	e.spaces(6)
	e.stamp(c.Stamp, "NERPDATE", "NERPTIME")
	e.x(c.Destination, 25, "NERPDEST", xID)
	e.x(c.Originator, 25, "NERPORIG", xID)
	e.x(c.Creator, 25, "NERPCREA", xID)
	if !c.Reason.Valid() {
		e.fail(ESIDInvalidData, "NERPREAS", "reason %s is not defined", c.Reason)
	}
	e.num(int64(c.Reason), 2, "NERPREAS")
	e.text(c.Text, "NERPREASL", "NERPREAST")
	e.u16(len(c.Hash), "NERPHSHL")
	e.b = append(e.b, c.Hash...)
	e.u16(len(c.Signature), "NERPSIGL")
	e.b = append(e.b, c.Signature...)
	return e.result(dst)
}

// Decode parses a NERP buffer into c. Hash and Signature are copies.
func (c *NERP) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeNERP); err != nil {
		return err
	}
	d := newDecoder(buf, CodeNERP, opts)
	var v NERP
	v.DatasetName = d.x(26, "NERPDSN", xRequired) // §5.3.14 String(26)
	d.reserved(6, "NERPRSV1")                     // §5.3.14 reserved
	v.Stamp = d.stamp("NERPDATE", "NERPTIME")     // §5.3.14 CCYYMMDD, HHMMSScccc
	v.Destination = d.x(25, "NERPDEST", xID)      // §5.3.14, §5.4
	v.Originator = d.x(25, "NERPORIG", xID)       // §5.3.14, §5.4
	v.Creator = d.x(25, "NERPCREA", xID)          // §5.3.14, §5.4
	v.Reason = NERPReason(d.num(2, "NERPREAS"))   // §5.3.14 enumerated reasons
	if d.err == nil && !v.Reason.Valid() {
		d.fail(ESIDInvalidData, "NERPREAS", "reason %02d is not defined", v.Reason)
	}
	n := d.num(3, "NERPREASL")                        // §5.3.14 9(3)
	v.Text = d.text(int(n), "NERPREAST")              // §5.3.14 UTF-8
	v.Hash = d.bin(d.u16("NERPHSHL"), "NERPHSH")      // §5.3.14 U(2) length, U(n)
	v.Signature = d.bin(d.u16("NERPSIGL"), "NERPSIG") // §5.3.14 U(2) length, U(n)
	if err := d.end(); err != nil {
		return err
	}
	*c = v
	return nil
}

// AUCH is the Authentication Challenge (RFC 5024 §5.3.17).
type AUCH struct {
	// Challenge is AUCHCHAL, a CMS envelope of a 20-byte random number; it
	// must not be empty. Decode copies it.
	Challenge []byte
}

// Code returns CodeAUCH.
func (*AUCH) Code() CommandCode { return CodeAUCH }

// Append appends the AUCH buffer to dst.
func (c *AUCH) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeAUCH, auchMinLen+len(c.Challenge))
	if len(c.Challenge) == 0 {
		e.fail(ESIDInvalidData, "AUCHCHAL", "empty challenge")
	}
	e.u16(len(c.Challenge), "AUCHCHLL")
	e.b = append(e.b, c.Challenge...)
	return e.result(dst)
}

// Decode parses an AUCH buffer into c.
func (c *AUCH) Decode(buf []byte, opts *ParseOptions) error {
	if err := checkCode(buf, CodeAUCH); err != nil {
		return err
	}
	d := newDecoder(buf, CodeAUCH, opts)
	n := d.u16("AUCHCHLL") // §5.3.17 U(2)
	if d.err == nil && n == 0 {
		// §5.3.17 AUCHCHAL: a CMS-encrypted 20-byte random number, never empty.
		d.fail(ESIDInvalidData, "AUCHCHLL", "empty challenge")
	}
	ch := d.bin(n, "AUCHCHAL")
	if err := d.end(); err != nil {
		return err
	}
	*c = AUCH{Challenge: ch}
	return nil
}

// AURP is the Authentication Response (RFC 5024 §5.3.18).
type AURP struct {
	// Response is AURPRSP, the decrypted 20-byte challenge.
	Response [20]byte
}

// Code returns CodeAURP.
func (*AURP) Code() CommandCode { return CodeAURP }

// Append appends the AURP buffer to dst.
func (c *AURP) Append(dst []byte) ([]byte, error) {
	e := newEncoder(dst, CodeAURP, aurpLen)
	e.b = append(e.b, c.Response[:]...)
	return e.result(dst)
}

// Decode parses an AURP buffer into c.
func (c *AURP) Decode(buf []byte, _ *ParseOptions) error {
	if err := checkFixedLen(buf, CodeAURP, aurpLen); err != nil { // §5.3.18 U(20)
		return err
	}
	copy(c.Response[:], buf[1:])
	return nil
}
