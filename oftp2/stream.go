package oftp2

import (
	"errors"
	"io"
	"net"
)

// Stream Transmission Header (RFC 5024 §8.2).
const (
	// STHLen is the length of the Stream Transmission Header.
	STHLen = 4
	// sthVersionFlags is version 1 in the high nibble and flags 0 in the low
	// nibble of the first header octet.
	sthVersionFlags = 0x10
)

// AppendSTBHeader appends the Stream Transmission Header for an exchange
// buffer of n octets to dst (RFC 5024 §8.2: version 1, flags 0, and the
// length of header plus buffer, big endian in 3 octets). n must be
// 1–MaxExchangeBuffer.
func AppendSTBHeader(dst []byte, n int) ([]byte, error) {
	if n < 1 || n > MaxExchangeBuffer {
		return dst, errorf(ESIDBufferSizeError, 0, "STH", "exchange buffer of %d octets outside 1..%d", n, MaxExchangeBuffer)
	}
	l := n + STHLen
	return append(dst, sthVersionFlags, byte(l>>16), byte(l>>8), byte(l)), nil
}

// ParseSTBHeader checks a Stream Transmission Header and returns the length
// of the exchange buffer that follows it, which is at most limit octets (limit
// values outside 1..MaxExchangeBuffer mean MaxExchangeBuffer).
func ParseSTBHeader(h [STHLen]byte, limit int) (int, error) {
	if limit <= 0 || limit > MaxExchangeBuffer {
		limit = MaxExchangeBuffer
	}
	// §8.2 Version: 0001; Flags: 0000 (reserved).
	if h[0]>>4 != 1 {
		return 0, errorf(ESIDProtocolViolation, 0, "STH", "stream transmission header version %d, want 1", h[0]>>4)
	}
	if h[0]&0x0f != 0 {
		return 0, errorf(ESIDProtocolViolation, 0, "STH", "stream transmission header flags 0x%x, want 0", h[0]&0x0f)
	}
	// §8.2 Length: 5–100003, header included.
	l := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if l < STHLen+1 {
		return 0, errorf(ESIDBufferSizeError, 0, "STH", "stream transmission buffer length %d below 5", l)
	}
	if l-STHLen > limit {
		return 0, errorf(ESIDBufferSizeError, 0, "STH", "exchange buffer of %d octets exceeds the maximum %d", l-STHLen, limit)
	}
	return l - STHLen, nil
}

// Reader reads Stream Transmission Buffers (RFC 5024 §8) from an underlying
// stream and returns the exchange buffers they carry. It is not safe for
// concurrent use.
type Reader struct {
	r     io.Reader // immutable
	limit int       // largest exchange buffer accepted; owned by the reading goroutine
	hdr   [STHLen]byte
	buf   []byte // reused between ReadBuffer calls
}

// NewReader returns a Reader on r that accepts exchange buffers of at most
// limit octets. If limit is zero or above MaxExchangeBuffer, MaxExchangeBuffer
// (99999) is used.
func NewReader(r io.Reader, limit int) *Reader {
	rd := &Reader{r: r}
	rd.SetMax(limit)
	return rd
}

// SetMax changes the largest exchange buffer accepted from the next
// ReadBuffer on; zero or a value above MaxExchangeBuffer means
// MaxExchangeBuffer.
func (r *Reader) SetMax(limit int) {
	if limit <= 0 || limit > MaxExchangeBuffer {
		limit = MaxExchangeBuffer
	}
	r.limit = limit
}

// ReadBuffer reads one Stream Transmission Buffer and returns its exchange
// buffer (header removed). The header is checked (version 1, flags 0, length
// 5 to limit+4) before any allocation. The returned slice is the Reader's
// internal buffer: it is valid only until the next call to ReadBuffer, and
// the caller must copy what it keeps.
//
// At a clean end of stream (no octet of a new header) ReadBuffer returns
// io.EOF; a stream that ends inside a buffer gives io.ErrUnexpectedEOF.
// A malformed header gives a *ProtocolError; the stream cannot be
// resynchronised after it.
func (r *Reader) ReadBuffer() ([]byte, error) {
	return r.ReadBufferInto(r.own)
}

// own returns the Reader's internal buffer with length n.
func (r *Reader) own(n int) []byte {
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	return r.buf
}

// ReadBufferInto is ReadBuffer reading the exchange buffer into get(n), a
// slice of length n that the caller provides (called once the header has
// been checked) and keeps: the Reader holds no reference to it. A relay uses
// it to pass buffers on without copying them.
func (r *Reader) ReadBufferInto(get func(n int) []byte) ([]byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return nil, err
	}
	n, err := ParseSTBHeader(r.hdr, r.limit)
	if err != nil {
		return nil, err
	}
	buf := get(n)
	if _, err := io.ReadFull(r.r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// Writer writes exchange buffers as Stream Transmission Buffers (RFC 5024
// §8). Each buffer goes to the underlying writer in exactly one Write call,
// header included, or, on a *net.TCPConn, in one writev of the header and the
// buffer as it is (no copy); in steady state no allocation happens. It is not
// safe for concurrent use.
type Writer struct {
	w    io.Writer    // immutable
	tcp  *net.TCPConn // immutable: w, when it is a TCP connection
	buf  []byte       // header and buffer, reused between calls
	hdr  [STHLen]byte // header of the buffer written to tcp
	vec  [2][]byte    // header and buffer for one writev
	bufs net.Buffers  // vec while it is written (a field, so that writing it allocates nothing)
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	tcp, _ := w.(*net.TCPConn)
	return &Writer{w: w, tcp: tcp}
}

// WriteBuffer writes one exchange buffer b (1–99999 octets) preceded by its
// Stream Transmission Header in a single Write call. It does not check that
// b is a valid command.
func (w *Writer) WriteBuffer(b []byte) error {
	if w.tcp != nil {
		// A TCP connection writes header and buffer with one writev: no copy of b.
		if _, err := AppendSTBHeader(w.hdr[:0], len(b)); err != nil {
			return err
		}
		w.vec = [2][]byte{w.hdr[:], b}
		w.bufs = w.vec[:]
		_, err := w.bufs.WriteTo(w.tcp)
		w.vec, w.bufs = [2][]byte{}, nil
		return err
	}
	var err error
	if w.buf, err = AppendSTBHeader(w.buf[:0], len(b)); err != nil {
		return err
	}
	w.buf = append(w.buf, b...)
	_, err = w.w.Write(w.buf)
	return err
}

// WriteCommand encodes c directly behind a Stream Transmission Header and
// writes both in a single Write call.
func (w *Writer) WriteCommand(c Command) error {
	b := append(w.buf[:0], 0, 0, 0, 0)
	b, err := c.Append(b)
	w.buf = b
	if err != nil {
		return err
	}
	n := len(b) - STHLen
	if _, err := AppendSTBHeader(b[:0], n); err != nil {
		return err
	}
	_, err = w.w.Write(b)
	return err
}
