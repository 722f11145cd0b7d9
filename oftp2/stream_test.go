package oftp2

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// countingWriter records the size of each Write call.
type countingWriter struct {
	bytes.Buffer
	writes []int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, len(p))
	return w.Buffer.Write(p)
}

func TestStreamRoundTrip(t *testing.T) {
	var w countingWriter
	sw := NewWriter(&w)
	bufs := [][]byte{[]byte("R"), []byte("IODETTE FTP READY \r"), append([]byte("D"), bytes.Repeat([]byte{0x3f}, MaxExchangeBuffer-1)...)}
	for _, b := range bufs {
		if err := sw.WriteBuffer(b); err != nil {
			t.Fatalf("WriteBuffer(%d octets) error = %v", len(b), err)
		}
	}
	if err := sw.WriteCommand(&EFPA{ChangeDirection: true}); err != nil {
		t.Fatalf("WriteCommand() error = %v", err)
	}
	want := []int{5, 23, 100003, 6}
	if len(w.writes) != len(want) {
		t.Fatalf("Write calls = %v, want %v", w.writes, want)
	}
	for i := range want {
		if w.writes[i] != want[i] {
			t.Errorf("Write call %d = %d octets, want %d", i, w.writes[i], want[i])
		}
	}
	if got := w.Bytes()[:5]; !bytes.Equal(got, []byte{0x10, 0, 0, 5, 'R'}) {
		t.Errorf("first STB = %x, want 1000000552", got)
	}
	if got := w.Bytes()[28:32]; !bytes.Equal(got, []byte{0x10, 0x01, 0x86, 0xa3}) {
		t.Errorf("largest STB header = %x, want 100186a3 (100003)", got)
	}
	// Read back through a reader that returns one octet at a time.
	r := NewReader(iotest.OneByteReader(bytes.NewReader(w.Bytes())), 0)
	for i, b := range append(bufs, []byte("4Y")) {
		got, err := r.ReadBuffer()
		if err != nil {
			t.Fatalf("ReadBuffer() %d error = %v", i, err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("ReadBuffer() %d = %d octets, want %d", i, len(got), len(b))
		}
	}
	if _, err := r.ReadBuffer(); err != io.EOF {
		t.Errorf("ReadBuffer() at end = %v, want io.EOF", err)
	}
}

func TestWriterDoesNotAllocate(t *testing.T) {
	sw := NewWriter(io.Discard)
	buf := append([]byte("D"), make([]byte, 4095)...)
	_ = sw.WriteBuffer(buf)
	efid := &EFID{RecordCount: 1, UnitCount: 2}
	if allocs := testing.AllocsPerRun(100, func() {
		if err := sw.WriteBuffer(buf); err != nil {
			t.Fatal(err)
		}
		if err := sw.WriteCommand(efid); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("WriteBuffer/WriteCommand allocate %v times per call, want 0", allocs)
	}
	var stream bytes.Buffer
	w := NewWriter(&stream)
	for range 200 {
		_ = w.WriteBuffer(buf)
	}
	r := NewReader(bytes.NewReader(stream.Bytes()), 0)
	_, _ = r.ReadBuffer()
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.ReadBuffer(); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("ReadBuffer allocates %v times per call in steady state, want 0", allocs)
	}
}

// TestWriterTCP: on a TCP connection each buffer goes out as one writev of
// header and buffer, the stream is the same as through any other writer, and
// writing allocates nothing.
func TestWriterTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type read struct {
		bufs [][]byte
		err  error
	}
	const n = 50
	got := make(chan read, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- read{err: err}
			return
		}
		defer c.Close()
		r := NewReader(c, 0)
		var res read
		for {
			b, err := r.ReadBuffer()
			if err == io.EOF {
				break
			}
			if err != nil {
				res.err = err
				break
			}
			res.bufs = append(res.bufs, bytes.Clone(b))
		}
		got <- res
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(c)
	if w.tcp == nil {
		t.Fatalf("NewWriter(%T) does not use writev", c)
	}
	var want [][]byte
	for i := range n {
		want = append(want, append([]byte("D"), bytes.Repeat([]byte{byte(i)}, 100*i+1)...))
	}
	for _, b := range want[:n-1] {
		if err := w.WriteBuffer(b); err != nil {
			t.Fatal(err)
		}
	}
	if allocs := testing.AllocsPerRun(1, func() {
		if err := w.WriteBuffer(want[n-1]); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("WriteBuffer on TCP allocates %v times per call, want 0", allocs)
	}
	c.Close()
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	// AllocsPerRun runs its function once more than asked: the last buffer twice.
	want = append(want, want[n-1])
	if diff := cmp.Diff(want, res.bufs); diff != "" {
		t.Errorf("buffers received (-want +got):\n%s", diff)
	}
}

// TestReadBufferInto: each exchange buffer lands in the slice the caller
// provides for exactly its length, and the Reader keeps no reference to it;
// a malformed header is refused before any slice is asked for.
func TestReadBufferInto(t *testing.T) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	want := [][]byte{[]byte("DABC"), append([]byte("D"), bytes.Repeat([]byte{7}, 9999)...), []byte("C")}
	for _, b := range want {
		if err := w.WriteBuffer(b); err != nil {
			t.Fatal(err)
		}
	}
	stream.Write([]byte{0x20, 0, 0, 9}) // version 2: refused
	r := NewReader(&stream, 0)
	var got [][]byte
	var asked []int
	get := func(n int) []byte {
		asked = append(asked, n)
		return make([]byte, n)
	}
	for range want {
		b, err := r.ReadBufferInto(get)
		if err != nil {
			t.Fatalf("ReadBufferInto() = %v", err)
		}
		got = append(got, b)
	}
	if _, err := r.ReadBufferInto(get); err == nil {
		t.Errorf("ReadBufferInto(version 2 header) = nil error, want a refusal")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("buffers read (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{4, 10000, 1}, asked); diff != "" {
		t.Errorf("lengths asked of get (-want +got):\n%s", diff)
	}
}

// limitedReader fails the test if more than n octets are requested in one Read.
type guardReader struct {
	r       io.Reader
	maxRead int
	t       *testing.T
}

func (g *guardReader) Read(p []byte) (int, error) {
	if len(p) > g.maxRead {
		g.t.Errorf("Read of %d octets requested, limit %d: buffer allocated before the length check", len(p), g.maxRead)
	}
	return g.r.Read(p)
}

func TestReaderRejects(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		limit  int
		reason ESIDReason
		err    error
	}{
		{"version 2", []byte{0x20, 0, 0, 5, 'R'}, 0, ESIDProtocolViolation, nil},
		{"version 0", []byte{0x00, 0, 0, 5, 'R'}, 0, ESIDProtocolViolation, nil},
		{"flags", []byte{0x11, 0, 0, 5, 'R'}, 0, ESIDProtocolViolation, nil},
		{"length 4", []byte{0x10, 0, 0, 4}, 0, ESIDBufferSizeError, nil},
		{"length 0", []byte{0x10, 0, 0, 0}, 0, ESIDBufferSizeError, nil},
		{"length 100004", []byte{0x10, 0x01, 0x86, 0xa4}, 0, ESIDBufferSizeError, nil},
		{"length 16 MiB", []byte{0x10, 0xff, 0xff, 0xff}, 0, ESIDBufferSizeError, nil},
		{"above configured limit", []byte{0x10, 0, 0x01, 0x05}, 256, ESIDBufferSizeError, nil},
		{"truncated header", []byte{0x10, 0}, 0, 0, io.ErrUnexpectedEOF},
		{"truncated body", []byte{0x10, 0, 0, 9, 'X'}, 0, 0, io.ErrUnexpectedEOF},
		{"empty", nil, 0, 0, io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(&guardReader{r: bytes.NewReader(tc.in), maxRead: 4096, t: t}, tc.limit)
			_, err := r.ReadBuffer()
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("ReadBuffer(%x) error = %v, want %v", tc.in, err, tc.err)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != tc.reason || pe.Field != "STH" {
				t.Errorf("ReadBuffer(%x) error = %v, want STH error with reason %v", tc.in, err, tc.reason)
			}
		})
	}
}

func TestAppendSTBHeader(t *testing.T) {
	for _, n := range []int{0, -1, MaxExchangeBuffer + 1} {
		if _, err := AppendSTBHeader(nil, n); err == nil {
			t.Errorf("AppendSTBHeader(%d) = nil error, want an error", n)
		}
	}
	if err := NewWriter(io.Discard).WriteBuffer(nil); err == nil {
		t.Errorf("WriteBuffer(empty) = nil error, want an error")
	}
	h, err := AppendSTBHeader([]byte{9}, 61)
	if err != nil || !bytes.Equal(h, []byte{9, 0x10, 0, 0, 65}) {
		t.Errorf("AppendSTBHeader(61) = %x, %v, want 0910000041", h, err)
	}
}
