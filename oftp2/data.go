package oftp2

import "slices"

// Subrecord header bits (RFC 5024 §7.2).
const (
	// SubrecordEndOfRecord is header bit 0 (0x80): the subrecord is the last
	// of its record; for U and T files it marks the end of the file.
	SubrecordEndOfRecord = 0x80
	// SubrecordCompressed is header bit 1 (0x40): the subrecord is one octet
	// to be repeated Count times.
	SubrecordCompressed = 0x40
	// SubrecordCountMask selects the count, bits 2–7: 0–63 octets.
	SubrecordCountMask = 0x3f
	// MaxSubrecord is the largest number of virtual-file octets one
	// subrecord represents.
	MaxSubrecord = 63
)

// Data is the Data Exchange Buffer (RFC 5024 §5.3.6, §7): the 'D' command
// octet followed by subrecords.
type Data struct {
	// Payload is DATABUF: subrecords, each a header octet (§7.2) and its
	// octets, which fill the payload exactly (§7.3). Decode sets Payload to a
	// sub-slice of the decoded buffer (no copy); Append copies it.
	Payload []byte
}

// Code returns CodeDATA.
func (*Data) Code() CommandCode { return CodeDATA }

// Append appends the DATA buffer to dst after checking that Payload is a
// well-formed sequence of subrecords.
func (c *Data) Append(dst []byte) ([]byte, error) {
	if _, err := ScanSubrecords(c.Payload); err != nil {
		return dst, err
	}
	dst = slices.Grow(dst, 1+len(c.Payload))
	dst = append(dst, byte(CodeDATA))
	return append(dst, c.Payload...), nil
}

// Decode parses a DATA buffer into c. The payload is checked for well-formed
// subrecords and referenced, not copied. Whether compression was negotiated
// is a session matter, checked by the Validator.
func (c *Data) Decode(buf []byte, _ *ParseOptions) error {
	if err := checkCode(buf, CodeDATA); err != nil {
		return err
	}
	if len(buf) > MaxExchangeBuffer {
		return errorf(ESIDBufferSizeError, CodeDATA, "", "buffer of %d octets exceeds %d", len(buf), MaxExchangeBuffer)
	}
	if _, err := ScanSubrecords(buf[1:]); err != nil {
		return err
	}
	c.Payload = buf[1:]
	return nil
}

// Subrecord is one subrecord of a DATA payload (RFC 5024 §7.2).
type Subrecord struct {
	// EndOfRecord is the End of Record flag.
	EndOfRecord bool
	// Compressed is the Compression flag: Data is one octet that stands for
	// Count copies of itself.
	Compressed bool
	// Count is the number of virtual-file octets the subrecord represents (0–63).
	Count int
	// Data is the subrecord's octets in the payload: Count octets, or one
	// octet if Compressed. It references the payload.
	Data []byte
}

// SubrecordIterator walks the subrecords of one DATA payload without
// allocating. Use it as
//
//	it := oftp2.NewSubrecordIterator(payload)
//	for it.Next() {
//		sr := it.Subrecord()
//		...
//	}
//	if err := it.Err(); err != nil { ... }
type SubrecordIterator struct {
	p   []byte
	off int
	cur Subrecord
	err error
}

// NewSubrecordIterator returns an iterator over payload (the DATA buffer
// without its command octet).
func NewSubrecordIterator(payload []byte) SubrecordIterator {
	return SubrecordIterator{p: payload}
}

// Next advances to the next subrecord and reports whether there is one. It
// returns false at the end of the payload or on a malformed subrecord (see Err).
func (it *SubrecordIterator) Next() bool {
	if it.err != nil || it.off >= len(it.p) {
		return false
	}
	h := it.p[it.off]
	n := int(h & SubrecordCountMask)
	size := n
	if h&SubrecordCompressed != 0 {
		size = 1 // §7.2: a compressed subrecord is the single octet to repeat.
	}
	start := it.off + 1
	if start+size > len(it.p) {
		// §7.3: a subrecord is never split between two exchange buffers, so
		// the subrecords fill the buffer exactly.
		it.err = errorf(ESIDBufferSizeError, CodeDATA, "DATABUF",
			"subrecord at offset %d needs %d octets, %d remain", it.off+1, size, len(it.p)-start)
		return false
	}
	it.cur = Subrecord{
		EndOfRecord: h&SubrecordEndOfRecord != 0,
		Compressed:  h&SubrecordCompressed != 0,
		Count:       n,
		Data:        it.p[start : start+size],
	}
	it.off = start + size
	return true
}

// Subrecord returns the current subrecord; valid after Next returned true.
func (it *SubrecordIterator) Subrecord() Subrecord { return it.cur }

// Err returns the error that stopped the iteration, or nil at a clean end.
func (it *SubrecordIterator) Err() error { return it.err }

// SubrecordStats summarises one DATA payload.
type SubrecordStats struct {
	// Subrecords is the number of subrecords.
	Subrecords int
	// Units is the number of virtual-file octets after expansion.
	Units int64
	// Records is the number of End of Record flags.
	Records int64
	// Compressed reports whether any subrecord is compressed.
	Compressed bool
}

// ScanSubrecords checks that payload is a well-formed sequence of subrecords
// that fills it exactly (RFC 5024 §7.2, §7.3) and summarises it. It does not
// allocate.
func ScanSubrecords(payload []byte) (SubrecordStats, error) {
	var s SubrecordStats
	i := 0
	for i < len(payload) {
		h := payload[i]
		n := int(h & SubrecordCountMask)
		size := n
		if h&SubrecordCompressed != 0 {
			size = 1
			s.Compressed = true
		}
		if i+1+size > len(payload) {
			// §7.3: subrecords are never split across buffers.
			return s, errorf(ESIDBufferSizeError, CodeDATA, "DATABUF",
				"subrecord at offset %d needs %d octets, %d remain", i+1, size, len(payload)-i-1)
		}
		i += 1 + size
		s.Subrecords++
		s.Units += int64(n)
		if h&SubrecordEndOfRecord != 0 {
			s.Records++
		}
	}
	return s, nil
}

// AppendExpanded appends the virtual-file octets that payload represents to
// dst (record boundaries are not marked).
func AppendExpanded(dst, payload []byte) ([]byte, error) {
	it := NewSubrecordIterator(payload)
	for it.Next() {
		sr := it.Subrecord()
		if sr.Compressed {
			for range sr.Count {
				dst = append(dst, sr.Data[0])
			}
		} else {
			dst = append(dst, sr.Data...)
		}
	}
	return dst, it.Err()
}

// Unpacker expands DATA payloads back into virtual-file octets and records.
// A record may span several buffers. The zero value is ready to use; it is
// not safe for concurrent use.
type Unpacker struct {
	// AllowCompression accepts compressed subrecords; set it when buffer
	// compression was negotiated (both SSIDCMPR = Y). If false, a compressed
	// subrecord is an error.
	AllowCompression bool

	scratch []byte // expansion buffer, reused between calls
	units   int64
	records int64
}

// Unpack expands payload and calls fn with the octets of each run of
// subrecords up to an End of Record flag (endOfRecord true) or up to the end
// of the payload (endOfRecord false: the record goes on in the next buffer).
// data is valid only until fn returns. For F and V files the records are
// the concatenations of data up to each endOfRecord; for U and T files
// the data is the file and endOfRecord marks its end (§7.2).
func (u *Unpacker) Unpack(payload []byte, fn func(data []byte, endOfRecord bool) error) error {
	u.scratch = u.scratch[:0]
	pending := false
	it := NewSubrecordIterator(payload)
	for it.Next() {
		sr := it.Subrecord()
		if sr.Compressed {
			if !u.AllowCompression {
				return errorf(ESIDInvalidData, CodeDATA, "DATABUF", "compressed subrecord but buffer compression was not negotiated")
			}
			for range sr.Count {
				u.scratch = append(u.scratch, sr.Data[0])
			}
		} else {
			u.scratch = append(u.scratch, sr.Data...)
		}
		u.units += int64(sr.Count)
		pending = true
		if sr.EndOfRecord {
			u.records++
			if err := fn(u.scratch, true); err != nil {
				return err
			}
			u.scratch = u.scratch[:0]
			pending = false
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	if pending && len(u.scratch) > 0 {
		return fn(u.scratch, false)
	}
	return nil
}

// Units returns the number of virtual-file octets unpacked so far.
func (u *Unpacker) Units() int64 { return u.units }

// Records returns the number of End of Record flags unpacked so far.
func (u *Unpacker) Records() int64 { return u.records }

// Packer packs virtual-file data into DATA exchange buffers (RFC 5024 §7):
// subrecords of at most 63 octets, optionally compressing runs of one octet
// (§7.2), each buffer at most MaxBuffer octets including the command octet.
// Full buffers are handed to the emit function given to NewPacker.
//
// For F and V files write each record and call EndRecord after it. For U
// and T files write the whole file and call EndRecord once at the end (the
// End of Record flag then marks the end of the file, §7.2). Call Flush to
// emit the last, partly filled buffer. Not safe for concurrent use.
type Packer struct {
	maxBuf   int                    // immutable
	compress bool                   // immutable
	emit     func(buf []byte) error // immutable

	buf     []byte // the buffer being filled: 'D' then subrecords
	lastHdr int    // index in buf of the current record's last subrecord header, or -1
	units   int64
	records int64
}

// minCompressRun is the shortest run of one octet that is sent as a
// compressed subrecord: a compressed subrecord costs 2 octets, and cutting a
// literal subrecord around it costs 1 more header.
const minCompressRun = 4

// NewPacker returns a Packer for buffers of at most maxBuffer octets
// (the negotiated SSIDSDEB, 2–99999; values outside are clamped). If compress
// is true (buffer compression negotiated), runs of at least four equal
// octets are sent as compressed subrecords. emit receives each complete DATA
// exchange buffer ('D' and its subrecords, without the stream header); the
// slice is reused after emit returns.
func NewPacker(maxBuffer int, compress bool, emit func(buf []byte) error) *Packer {
	maxBuffer = min(max(maxBuffer, 3), MaxExchangeBuffer)
	p := &Packer{maxBuf: maxBuffer, compress: compress, emit: emit, lastHdr: -1}
	p.buf = make([]byte, 1, maxBuffer)
	p.buf[0] = byte(CodeDATA)
	return p
}

// room returns the free octets in the current buffer.
func (p *Packer) room() int { return p.maxBuf - len(p.buf) }

// ensure emits the current buffer when it has fewer than n free octets.
func (p *Packer) ensure(n int) error {
	if p.room() >= n {
		return nil
	}
	return p.Flush()
}

// Write adds data to the current record. It implements io.Writer.
func (p *Packer) Write(data []byte) (int, error) {
	total := len(data)
	for len(data) > 0 {
		if p.compress {
			if run := runLength(data); run >= minCompressRun {
				n := min(run, MaxSubrecord)
				if err := p.ensure(2); err != nil {
					return total - len(data), err
				}
				p.lastHdr = len(p.buf)
				p.buf = append(p.buf, SubrecordCompressed|byte(n), data[0])
				p.units += int64(n)
				data = data[n:]
				continue
			}
		}
		// A literal subrecord up to the next compressible run.
		lit := len(data)
		if p.compress {
			lit = literalLength(data)
		}
		if err := p.ensure(2); err != nil {
			return total - len(data), err
		}
		n := min(lit, MaxSubrecord, p.room()-1)
		p.lastHdr = len(p.buf)
		p.buf = append(p.buf, byte(n))
		p.buf = append(p.buf, data[:n]...)
		p.units += int64(n)
		data = data[n:]
	}
	return total, nil
}

// runLength returns how many times data[0] repeats at the start of data.
func runLength(data []byte) int {
	n := 1
	for n < len(data) && data[n] == data[0] {
		n++
	}
	return n
}

// literalLength returns the length of the prefix of data before the first
// run of minCompressRun equal octets (at most MaxSubrecord is needed).
func literalLength(data []byte) int {
	limit := min(len(data), MaxSubrecord)
	run := 1
	for i := 1; i < len(data); i++ {
		if data[i] == data[i-1] {
			run++
			if run == minCompressRun {
				return i - minCompressRun + 1
			}
		} else {
			run = 1
			if i >= limit {
				return limit
			}
		}
	}
	return len(data)
}

// EndRecord ends the current record: it sets the End of Record flag on the
// record's last subrecord, or adds an empty subrecord with the flag when
// the record is empty or its last subrecord was already emitted.
func (p *Packer) EndRecord() error {
	if p.lastHdr < 0 {
		if err := p.ensure(1); err != nil {
			return err
		}
		p.lastHdr = len(p.buf)
		p.buf = append(p.buf, 0)
	}
	p.buf[p.lastHdr] |= SubrecordEndOfRecord
	p.lastHdr = -1
	p.records++
	return nil
}

// Flush emits the current buffer if it holds any subrecord.
func (p *Packer) Flush() error {
	if len(p.buf) <= 1 {
		return nil
	}
	err := p.emit(p.buf)
	p.buf = p.buf[:1]
	p.lastHdr = -1
	return err
}

// Units returns the number of virtual-file octets written so far (the EFID
// unit count when the file started at offset zero).
func (p *Packer) Units() int64 { return p.units }

// Records returns the number of records ended so far (the EFID record
// count of an F or V file).
func (p *Packer) Records() int64 { return p.records }
