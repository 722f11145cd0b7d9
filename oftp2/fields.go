package oftp2

import (
	"slices"
	"time"
	"unicode/utf8"
)

// xKind says which rules an X(n) field follows.
type xKind uint8

const (
	xOptional xKind = iota // may be all spaces (user data fields)
	xRequired              // must not be empty (dataset names, passwords are optional, see SSID)
	xID                    // identification code (§5.4): required; its subfields are space padded, so embedded spaces are allowed
)

// strictX reports whether c belongs to the RFC 5024 §5.3 X(n) set (Appendix B):
// 0–9, A–Z, / - . & ( ) and space.
var strictX = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "/-.&() " {
		t[c] = true
	}
	return t
}()

func printable(c byte) bool { return c >= 0x20 && c <= 0x7e }

// Timestamp is a Virtual File date and time stamp (RFC 5024 §1.5.2), sent as
// CCYYMMDD and HHMMSScccc (SFIDDATE/SFIDTIME, EERPDATE/EERPTIME,
// NERPDATE/NERPTIME).
type Timestamp struct {
	// Time holds the date and the time of day to the second. Append writes
	// the wall clock of Time's location; decoding yields UTC. The year must
	// be 0001–9999.
	Time time.Time
	// Counter is the cccc counter (1–9999; 0 only with
	// ParseOptions.AllowZeroTimeCounter) that gives higher resolution than a
	// second and makes the stamp unique.
	Counter int
}

// Equal reports whether t and u denote the same stamp as written on the wire.
func (t Timestamp) Equal(u Timestamp) bool {
	ty, tm, td := t.Time.Date()
	uy, um, ud := u.Time.Date()
	th, tmi, ts := t.Time.Clock()
	uh, umi, us := u.Time.Clock()
	return ty == uy && tm == um && td == ud && th == uh && tmi == umi && ts == us && t.Counter == u.Counter
}

// decoder reads the fields of one command buffer in order. The first error
// sticks; later calls return zero values.
type decoder struct {
	b    []byte
	off  int
	cmd  CommandCode
	opts *ParseOptions
	err  error
}

func newDecoder(buf []byte, cmd CommandCode, opts *ParseOptions) *decoder {
	return &decoder{b: buf, off: 1, cmd: cmd, opts: opts.orDefault()}
}

func (d *decoder) fail(reason ESIDReason, field, format string, args ...any) {
	if d.err == nil {
		d.err = errorf(reason, d.cmd, field, format, args...)
	}
}

// take returns the next n octets. A buffer too short for its fields is a
// buffer size error (§5.3.11 ESIDREAS 07).
func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || d.off+n > len(d.b) {
		d.fail(ESIDBufferSizeError, field, "buffer of %d octets ends inside the field", len(d.b))
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

// end checks that the buffer has no octets after the last field (§5.3.11 ESIDREAS 07).
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail(ESIDBufferSizeError, "", "buffer has %d octets, the command defines %d", len(d.b), d.off)
	}
	return d.err
}

// x decodes an X(n) alphanumeric field: left-justified and right-padded with
// spaces, characters from the §5.3 set (Appendix B) or, with CharsetLenient,
// printable ASCII.
func (d *decoder) x(n int, field string, kind xKind) string {
	b := d.take(n, field)
	if b == nil {
		return ""
	}
	end := len(b)
	for end > 0 && b[end-1] == ' ' {
		end--
	}
	v := b[:end]
	if len(v) == 0 {
		if kind != xOptional {
			// §5.2: all values are required except where explicitly indicated.
			d.fail(ESIDInvalidData, field, "required field is empty")
		}
		return ""
	}
	if d.opts.Charset == CharsetLenient {
		for _, c := range v {
			if !printable(c) {
				d.fail(ESIDInvalidData, field, "octet 0x%02x is not printable ASCII", c)
				return ""
			}
		}
		return string(v)
	}
	// §5.3: strings are left justified; space is not allowed as an embedded
	// character, except in identification codes whose §5.4 subfields
	// (SIOORG, SIOCSA) are themselves space padded.
	if v[0] == ' ' {
		d.fail(ESIDInvalidData, field, "value is not left-justified")
		return ""
	}
	for _, c := range v {
		if !strictX[c] {
			d.fail(ESIDInvalidData, field, "character %q is outside the X(n) set of RFC 5024 Appendix B", rune(c))
			return ""
		}
		if c == ' ' && kind != xID {
			d.fail(ESIDInvalidData, field, "embedded space")
			return ""
		}
	}
	return string(v)
}

// reserved checks a reserved field: §5.3 "Reserved fields should be padded
// with spaces" (printable ASCII with CharsetLenient).
func (d *decoder) reserved(n int, field string) {
	b := d.take(n, field)
	for _, c := range b {
		if c != ' ' && (d.opts.Charset != CharsetLenient || !printable(c)) {
			d.fail(ESIDInvalidData, field, "reserved field contains 0x%02x, want spaces", c)
			return
		}
	}
}

// num decodes a 9(n) numeric field: right-justified, zero-padded decimal
// digits (§5.3).
func (d *decoder) num(n int, field string) int64 {
	b := d.take(n, field)
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			d.fail(ESIDInvalidData, field, "octet %q in a numeric field", rune(c))
			return 0
		}
		v = v*10 + int64(c-'0')
	}
	return v
}

// rangeNum decodes a 9(n) field and checks lo <= v <= hi.
func (d *decoder) rangeNum(n int, field string, lo, hi int64) int64 {
	v := d.num(n, field)
	if d.err == nil && (v < lo || v > hi) {
		d.fail(ESIDInvalidData, field, "value %d outside %d..%d", v, lo, hi)
	}
	return v
}

// yn decodes a Y/N flag field (§5.3 format F X(1)).
func (d *decoder) yn(field string) bool {
	b := d.take(1, field)
	if b == nil {
		return false
	}
	switch b[0] {
	case 'Y':
		return true
	case 'N':
		return false
	}
	d.fail(ESIDInvalidData, field, "flag %q, want Y or N", rune(b[0]))
	return false
}

// u16 decodes a U(2) field: unsigned binary, network byte order (§5.3).
func (d *decoder) u16(field string) int {
	b := d.take(2, field)
	if b == nil {
		return 0
	}
	return int(b[0])<<8 | int(b[1])
}

// bin returns a copy of the next n octets of a U(n) field (nil for n == 0).
func (d *decoder) bin(n int, field string) []byte {
	b := d.take(n, field)
	if len(b) == 0 {
		return nil
	}
	return slices.Clone(b)
}

// text decodes a T(n) field: n octets of UTF-8 (§5.3); the RFC limits every
// T(n) field to 999 octets, which its 9(3) length field enforces already.
func (d *decoder) text(n int, field string) string {
	b := d.take(n, field)
	if b == nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.fail(ESIDInvalidData, field, "text is not valid UTF-8")
		return ""
	}
	return string(b)
}

// cr checks a carriage return field: hex 0D or 8D (§5.3.1, §5.3.2, §5.3.11).
// It reports whether the 8D variant was used.
func (d *decoder) cr(field string) bool {
	b := d.take(1, field)
	if b == nil {
		return false
	}
	switch b[0] {
	case 0x0d:
		return false
	case 0x8d:
		return true
	}
	d.fail(ESIDInvalidData, field, "octet 0x%02x, want carriage return 0x0D or 0x8D", b[0])
	return false
}

// stamp decodes CCYYMMDD and HHMMSScccc (§5.3.3 SFIDDATE, SFIDTIME): a real
// calendar date, a valid time of day and a counter 0001–9999.
func (d *decoder) stamp(dateField, timeField string) Timestamp {
	date := d.num(8, dateField)
	tod := d.num(10, timeField)
	if d.err != nil {
		return Timestamp{}
	}
	y, m, day := int(date/10000), int(date/100%100), int(date%100)
	t := time.Date(y, time.Month(m), day, 0, 0, 0, 0, time.UTC)
	if y < 1 || m < 1 || m > 12 || t.Day() != day || int(t.Month()) != m {
		d.fail(ESIDInvalidData, dateField, "%08d is not a calendar date CCYYMMDD", date)
		return Timestamp{}
	}
	hh, mm, ss, cc := int(tod/100000000), int(tod/1000000%100), int(tod/10000%100), int(tod%10000)
	if hh > 23 || mm > 59 || ss > 59 {
		d.fail(ESIDInvalidData, timeField, "%010d is not a time of day HHMMSScccc", tod)
		return Timestamp{}
	}
	if cc == 0 && !d.opts.AllowZeroTimeCounter {
		d.fail(ESIDInvalidData, timeField, "counter cccc is 0000, want 0001-9999")
		return Timestamp{}
	}
	return Timestamp{Time: t.Add(time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute + time.Duration(ss)*time.Second), Counter: cc}
}

// encoder appends the fields of one command. The first error sticks.
type encoder struct {
	b   []byte
	cmd CommandCode
	err error
}

func newEncoder(dst []byte, cmd CommandCode, size int) *encoder {
	e := &encoder{b: slices.Grow(dst, size), cmd: cmd}
	e.b = append(e.b, byte(cmd))
	return e
}

// result returns the appended buffer, or orig and the error.
func (e *encoder) result(orig []byte) ([]byte, error) {
	if e.err != nil {
		return orig, e.err
	}
	return e.b, nil
}

func (e *encoder) fail(reason ESIDReason, field, format string, args ...any) {
	if e.err == nil {
		e.err = errorf(reason, e.cmd, field, format, args...)
	}
}

// x appends an X(n) field, left-justified and space padded. It accepts the
// lenient set (printable ASCII) and rejects trailing spaces, which a decoder
// would take for padding.
func (e *encoder) x(v string, n int, field string, kind xKind) {
	if e.err != nil {
		return
	}
	switch {
	case len(v) > n:
		e.fail(ESIDInvalidData, field, "value of %d octets exceeds X(%d)", len(v), n)
		return
	case v == "" && kind != xOptional:
		e.fail(ESIDInvalidData, field, "required field is empty")
		return
	case v != "" && v[len(v)-1] == ' ':
		e.fail(ESIDInvalidData, field, "value ends with a space, which would be read as padding")
		return
	}
	for i := 0; i < len(v); i++ {
		if !printable(v[i]) {
			e.fail(ESIDInvalidData, field, "octet 0x%02x is not printable ASCII", v[i])
			return
		}
	}
	e.b = append(e.b, v...)
	e.spaces(n - len(v))
}

func (e *encoder) spaces(n int) {
	for range n {
		e.b = append(e.b, ' ')
	}
}

// num appends v as a 9(n) field: right-justified, zero padded.
func (e *encoder) num(v int64, n int, field string) {
	e.rangeNum(v, n, field, 0, pow10(n)-1)
}

func (e *encoder) rangeNum(v int64, n int, field string, lo, hi int64) {
	if e.err != nil {
		return
	}
	if v < lo || v > hi {
		e.fail(ESIDInvalidData, field, "value %d outside %d..%d", v, lo, hi)
		return
	}
	start := len(e.b)
	for range n {
		e.b = append(e.b, '0')
	}
	for i := len(e.b) - 1; i >= start && v > 0; i-- {
		e.b[i] = byte('0' + v%10)
		v /= 10
	}
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

func (e *encoder) yn(v bool) {
	if v {
		e.b = append(e.b, 'Y')
	} else {
		e.b = append(e.b, 'N')
	}
}

func (e *encoder) u16(v int, field string) {
	if e.err != nil {
		return
	}
	if v < 0 || v > 0xffff {
		e.fail(ESIDInvalidData, field, "length %d exceeds U(2)", v)
		return
	}
	e.b = append(e.b, byte(v>>8), byte(v))
}

// text appends a length-prefixed T(n) field: a 9(3) length and UTF-8 text of
// at most 999 octets.
func (e *encoder) text(v string, lenField, field string) {
	if e.err != nil {
		return
	}
	if !utf8.ValidString(v) {
		e.fail(ESIDInvalidData, field, "text is not valid UTF-8")
		return
	}
	if len(v) > 999 {
		e.fail(ESIDInvalidData, field, "text of %d octets exceeds 999", len(v))
		return
	}
	e.num(int64(len(v)), 3, lenField)
	e.b = append(e.b, v...)
}

func (e *encoder) cr(high bool) {
	if high {
		e.b = append(e.b, 0x8d)
	} else {
		e.b = append(e.b, 0x0d)
	}
}

// stamp appends CCYYMMDD and HHMMSScccc.
func (e *encoder) stamp(t Timestamp, dateField, timeField string) {
	if e.err != nil {
		return
	}
	y, m, d := t.Time.Date()
	if y < 1 || y > 9999 {
		e.fail(ESIDInvalidData, dateField, "year %d outside 0001..9999", y)
		return
	}
	if t.Counter < 0 || t.Counter > 9999 {
		e.fail(ESIDInvalidData, timeField, "counter %d outside 0..9999", t.Counter)
		return
	}
	hh, mm, ss := t.Time.Clock()
	e.num(int64(y)*10000+int64(m)*100+int64(d), 8, dateField)
	e.num(int64(hh)*100000000+int64(mm)*1000000+int64(ss)*10000+int64(t.Counter), 10, timeField)
}
