package oftp2

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// appendixA returns the exchange buffer printed in RFC 5024 Appendix A,
// decoded from the hexadecimal rows of testdata/appendix_a.txt.
func appendixA(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/appendix_a.txt")
	if err != nil {
		t.Fatal(err)
	}
	isHex := func(s string) bool {
		s = strings.TrimSpace(s)
		if s == "" {
			return false
		}
		for _, c := range s {
			if !strings.ContainsRune("0123456789ABCDEF", c) {
				return false
			}
		}
		return true
	}
	lines := strings.Split(string(b), "\n")
	var out []byte
	for i := 0; i+2 < len(lines); i++ {
		hi, lo := strings.TrimSpace(lines[i+1]), strings.TrimSpace(lines[i+2])
		if !isHex(hi) || !isHex(lo) || len(hi) != len(lo) || isHex(lines[i]) {
			continue
		}
		for j := range hi {
			out = append(out, unhex(hi[j])<<4|unhex(lo[j]))
		}
		i += 2
	}
	return out
}

func unhex(c byte) byte {
	if c >= 'A' {
		return c - 'A' + 10
	}
	return c - '0'
}

// rime is the Appendix A virtual file: a T format file whose lines end in CR LF.
var rime = strings.Join([]string{
	"It is an ancient Mariner,",
	"And he stoppeth one of three.",
	`"By thy long grey beard and glittering eye,`,
	"Now wherefore stopp'st thou me?",
	"",
	`"The Bridegroom's doors are opened wide,`,
	"And I am next of kin;",
	"The guests are met, the feast is set:",
	`May'st hear the merry din."`,
	"",
	"He holds him with his skinny hand,",
	`"There was a ship," quoth he.`,
	`"Hold off! unhand me, grey-beard loon!"`,
	"Eftsoons his hand dropt he.",
	"",
	"He holds him with his glittering eye--",
	"The Wedding-Guest stood still,",
	"And listens like a three years; child:",
	"The Mariner hath his will.",
	"",
	"The Wedding-Guest sat on a stone:",
	"He cannot chuse but hear;",
	"And thus spake on that ancient man,",
	"The bright-eyed Mariner.",
	"",
	"The ship was cheered, the harbour cleared,",
	"Merrily did we drop",
	"Below the kirk, below the hill,",
	"Below the light-house top.",
}, "\r\n") + "\r\n"

func TestAppendixA(t *testing.T) {
	want := appendixA(t)
	if len(want) != 821 || want[0] != 'D' || want[1] != 0x3f || want[len(want)-52] != 0xb3 {
		t.Fatalf("appendix A buffer: %d octets, header %x, want 821 octets starting D 3F with last header B3", len(want), want[:2])
	}
	for _, compress := range []bool{false, true} {
		var bufs [][]byte
		p := NewPacker(MaxExchangeBuffer, compress, func(b []byte) error {
			bufs = append(bufs, bytes.Clone(b))
			return nil
		})
		if _, err := p.Write([]byte(rime)); err != nil {
			t.Fatal(err)
		}
		if err := p.EndRecord(); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		if len(bufs) != 1 || !bytes.Equal(bufs[0], want) {
			t.Fatalf("Packer(compress=%v) = %d buffers %q, want the Appendix A buffer %q", compress, len(bufs), bufs, want)
		}
		if p.Units() != int64(len(rime)) || p.Records() != 1 {
			t.Errorf("Packer counts = %d units, %d records, want %d, 1", p.Units(), p.Records(), len(rime))
		}
	}
	cmd, err := Parse(want, nil)
	if err != nil {
		t.Fatalf("Parse(appendix A) error = %v", err)
	}
	st, err := ScanSubrecords(cmd.(*Data).Payload)
	if err != nil || st.Units != int64(len(rime)) || st.Records != 1 || st.Subrecords != 13 || st.Compressed {
		t.Errorf("ScanSubrecords() = %+v, %v, want 807 units, 1 record, 13 subrecords", st, err)
	}
	var u Unpacker
	var got []byte
	if err := u.Unpack(cmd.(*Data).Payload, func(d []byte, eor bool) error {
		got = append(got, d...)
		if !eor {
			t.Errorf("Unpack: record not ended in the buffer")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != rime {
		t.Errorf("Unpack() = %q, want the poem", got)
	}
}

func TestSubrecordIterator(t *testing.T) {
	payload := []byte{0x03, 'a', 'b', 'c', 0x40 | 5, 'z', 0x80, 0xc0 | 2, '-', 0x00, 0x81, 'q'}
	want := []Subrecord{
		{Count: 3, Data: []byte("abc")},
		{Compressed: true, Count: 5, Data: []byte("z")},
		{EndOfRecord: true, Data: []byte{}},
		{EndOfRecord: true, Compressed: true, Count: 2, Data: []byte("-")},
		{Data: []byte{}},
		{EndOfRecord: true, Count: 1, Data: []byte("q")},
	}
	var got []Subrecord
	it := NewSubrecordIterator(payload)
	for it.Next() {
		got = append(got, it.Subrecord())
	}
	if err := it.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("subrecords mismatch (-want +got):\n%s", diff)
	}
	exp, err := AppendExpanded(nil, payload)
	if err != nil || string(exp) != "abczzzzz--q" {
		t.Errorf("AppendExpanded() = %q, %v, want %q", exp, err, "abczzzzz--q")
	}
	st, err := ScanSubrecords(payload)
	if err != nil || st.Units != 11 || st.Records != 3 || st.Subrecords != 6 || !st.Compressed {
		t.Errorf("ScanSubrecords() = %+v, %v", st, err)
	}

	bad := []byte{0x02, 'a', 'b', 0x03, 'c'}
	it = NewSubrecordIterator(bad)
	n := 0
	for it.Next() {
		n++
	}
	var pe *ProtocolError
	if n != 1 || !errors.As(it.Err(), &pe) || pe.Reason != ESIDBufferSizeError {
		t.Errorf("iterating %x: %d subrecords, err %v, want 1 and a buffer size error", bad, n, it.Err())
	}
	if allocs := testing.AllocsPerRun(100, func() {
		it := NewSubrecordIterator(payload)
		for it.Next() {
		}
		_, _ = ScanSubrecords(payload)
	}); allocs != 0 {
		t.Errorf("iteration allocates %v times, want 0", allocs)
	}
}

func TestUnpackerRecords(t *testing.T) {
	// Records split across buffers and compressed subrecords.
	bufs := [][]byte{
		{0x02, 'a', 'b', 0x41, 'c'},  // "abc" continues
		{0x81, 'd', 0x80, 0x43, 'e'}, // "abcd" ends, "" ends, "eee" continues
		{0x80},                       // "eee" ends
	}
	u := Unpacker{AllowCompression: true}
	var recs []string
	var cur []byte
	for _, b := range bufs {
		if err := u.Unpack(b, func(d []byte, eor bool) error {
			cur = append(cur, d...)
			if eor {
				recs = append(recs, string(cur))
				cur = cur[:0]
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"abcd", "", "eee"}, recs); diff != "" {
		t.Errorf("records mismatch (-want +got):\n%s", diff)
	}
	if u.Records() != 3 || u.Units() != 7 {
		t.Errorf("Records(), Units() = %d, %d, want 3, 7", u.Records(), u.Units())
	}
	var strict Unpacker
	err := strict.Unpack([]byte{0x43, 'e'}, func([]byte, bool) error { return nil })
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Reason != ESIDInvalidData {
		t.Errorf("Unpack(compressed) without AllowCompression = %v, want invalid data", err)
	}
}

// packRecords packs records into DATA buffers and returns the buffers.
func packRecords(t testing.TB, maxBuf int, compress bool, records [][]byte) [][]byte {
	t.Helper()
	var bufs [][]byte
	p := NewPacker(maxBuf, compress, func(b []byte) error {
		if len(b) > maxBuf {
			t.Fatalf("Packer emitted %d octets, max %d", len(b), maxBuf)
		}
		bufs = append(bufs, bytes.Clone(b))
		return nil
	})
	for _, r := range records {
		if _, err := p.Write(r); err != nil {
			t.Fatal(err)
		}
		if err := p.EndRecord(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	return bufs
}

func unpackRecords(t testing.TB, compress bool, bufs [][]byte) [][]byte {
	t.Helper()
	u := Unpacker{AllowCompression: compress}
	var recs [][]byte
	var cur []byte
	for _, b := range bufs {
		d, err := Parse(b, nil)
		if err != nil {
			t.Fatalf("Parse(packed buffer) error = %v", err)
		}
		if err := u.Unpack(d.(*Data).Payload, func(data []byte, eor bool) error {
			cur = append(cur, data...)
			if eor {
				recs = append(recs, bytes.Clone(cur))
				cur = cur[:0]
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(cur) != 0 {
		t.Fatalf("unfinished record of %d octets", len(cur))
	}
	return recs
}

func TestPackerRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i < n; {
			run := 1 + rng.IntN(100)
			c := byte(rng.IntN(4))
			if rng.IntN(3) == 0 {
				run = 1
				c = byte(rng.Uint32())
			}
			for j := 0; j < run && i < n; j++ {
				b[i] = c
				i++
			}
		}
		return b
	}
	for _, maxBuf := range []int{3, 4, 128, 129, 4096, MaxExchangeBuffer} {
		for _, compress := range []bool{false, true} {
			var recs [][]byte
			total := 0
			for range 50 {
				r := gen(rng.IntN(3000))
				recs = append(recs, r)
				total += len(r)
			}
			recs = append(recs, nil, gen(63), gen(64))
			bufs := packRecords(t, maxBuf, compress, recs)
			got := unpackRecords(t, compress, bufs)
			if len(got) != len(recs) {
				t.Fatalf("max %d compress %v: %d records unpacked, want %d", maxBuf, compress, len(got), len(recs))
			}
			for i := range recs {
				if !bytes.Equal(got[i], recs[i]) {
					t.Fatalf("max %d compress %v: record %d = %d octets, want %d equal octets", maxBuf, compress, i, len(got[i]), len(recs[i]))
				}
			}
			var payload int
			for _, b := range bufs {
				payload += len(b)
			}
			t.Logf("max %d compress %v: %d octets in %d buffers, %d on the wire", maxBuf, compress, total, len(bufs), payload)
		}
	}
	// Compression must shrink long runs.
	plain := packRecords(t, 4096, false, [][]byte{bytes.Repeat([]byte{' '}, 10000)})
	comp := packRecords(t, 4096, true, [][]byte{bytes.Repeat([]byte{' '}, 10000)})
	if len(comp) != 1 || len(comp[0]) > 1+2*(10000/63+1) || len(plain) < 3 {
		t.Errorf("10000 spaces: %d compressed buffers of %d octets, %d plain buffers", len(comp), len(comp[0]), len(plain))
	}
}

func TestPackerEmitError(t *testing.T) {
	boom := errors.New("boom")
	p := NewPacker(16, false, func([]byte) error { return boom })
	_, err := p.Write(make([]byte, 100))
	if !errors.Is(err, boom) {
		t.Errorf("Write() error = %v, want %v", err, boom)
	}
}
