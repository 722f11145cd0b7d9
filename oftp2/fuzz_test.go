package oftp2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// goldenBuffers returns every golden command buffer and the Appendix A buffer.
func goldenBuffers(t testing.TB) [][]byte {
	var out [][]byte
	for _, tc := range goldenCases {
		out = append(out, readGolden(t, tc.name))
	}
	return append(out, appendixA(t))
}

// stream returns the buffers as one stream of Stream Transmission Buffers.
func stream(t testing.TB, bufs [][]byte) []byte {
	var s bytes.Buffer
	w := NewWriter(&s)
	for _, b := range bufs {
		if err := w.WriteBuffer(b); err != nil {
			t.Fatal(err)
		}
	}
	return s.Bytes()
}

// encodeTranscript packs a transcript for FuzzValidator: per buffer one side
// octet, a 2-octet big-endian length and the buffer.
func encodeTranscript(steps []step) []byte {
	var out []byte
	for _, s := range steps {
		out = append(out, byte(s.from), byte(len(s.buf)>>8), byte(len(s.buf)))
		out = append(out, s.buf...)
	}
	return out
}

func decodeTranscript(data []byte) []step {
	var steps []step
	for len(data) >= 3 {
		side := Side(data[0] & 1)
		if data[0] == 0xff {
			side = Side(2) // an invalid side must be handled too
		}
		n := int(data[1])<<8 | int(data[2])
		data = data[3:]
		n = min(n, len(data))
		steps = append(steps, step{side, data[:n]})
		data = data[n:]
	}
	return steps
}

// fuzzTranscripts returns legal sessions used as FuzzValidator seeds.
func fuzzTranscripts(t testing.TB) [][]step {
	b := tb{t}
	d, _ := dataN(600)
	return [][]step{
		join(b.setup([]func(*SSID){credit(2)}, []func(*SSID){credit(2)}), []step{
			{I, b.sfid()}, {R, b.sfpa(0)}, {I, d}, {I, b.data("end|")}, {R, b.cdt()}, {I, b.efid(0, 599-10+3)},
			{R, b.efpa(true)}, {I, b.cd()}, {R, b.eerp()}, {I, b.rtr()}, {R, b.cd()}, {I, b.esid(ESIDNormal)},
		}),
		join(b.setup([]func(*SSID){withAuth, withRestart, withCompression}, []func(*SSID){withAuth, withRestart, withCompression}), []step{
			{I, b.secd()}, {R, b.auch()}, {I, b.aurp()}, {R, b.secd()}, {I, b.auch()}, {R, b.aurp()},
			{I, b.sfid(fixed(3), restartAt(2))}, {R, b.sfpa(1)}, {I, []byte{'D', 0xc3, 'x'}}, {I, b.efid(2, 6)}, {R, b.efna()},
			{I, b.nerp()}, {R, b.rtr()}, {I, b.cd()}, {R, b.esid(ESIDNormal)},
		}),
	}
}

func FuzzReader(f *testing.F) {
	f.Add(stream(f, goldenBuffers(f)), uint32(0))
	f.Add([]byte{0x10, 0, 0, 5, 'R', 0x10, 0, 0, 4}, uint32(0))
	f.Add([]byte{0x10, 0x01, 0x86, 0xa3}, uint32(128))
	f.Fuzz(func(t *testing.T, data []byte, limit uint32) {
		r := NewReader(bytes.NewReader(data), int(limit%(MaxExchangeBuffer+10)))
		var out bytes.Buffer
		w := NewWriter(&out)
		consumed := 0
		for {
			buf, err := r.ReadBuffer()
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &pe) {
					t.Fatalf("ReadBuffer() error = %v, want EOF or *ProtocolError", err)
				}
				break
			}
			if len(buf) < 1 || len(buf) > MaxExchangeBuffer || (limit != 0 && int(limit%(MaxExchangeBuffer+10)) <= MaxExchangeBuffer && len(buf) > int(limit%(MaxExchangeBuffer+10))) {
				t.Fatalf("ReadBuffer() = %d octets, outside the limit", len(buf))
			}
			consumed += STHLen + len(buf)
			if err := w.WriteBuffer(buf); err != nil {
				t.Fatalf("WriteBuffer(read buffer) error = %v", err)
			}
		}
		if !bytes.Equal(out.Bytes(), data[:consumed]) {
			t.Fatalf("rewritten stream differs from the %d octets read", consumed)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, b := range goldenBuffers(f) {
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, lenient bool) {
		opts := &ParseOptions{}
		if lenient {
			opts = &ParseOptions{Charset: CharsetLenient, AllowZeroTimeCounter: true}
		}
		cmd, err := Parse(data, opts)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse() error %T %v, want *ProtocolError", err, err)
			}
			if !pe.Reason.Valid() || pe.Reason == ESIDNormal {
				t.Fatalf("Parse() reason %v", pe.Reason)
			}
			return
		}
		if cmd.Code() != CommandCode(data[0]) {
			t.Fatalf("Parse() code %v, buffer starts with %q", cmd.Code(), data[0])
		}
		out, err := cmd.Append(nil)
		if err != nil {
			t.Fatalf("Append(Parse(%q)) error = %v", data, err)
		}
		// Strict decoding keeps every octet; lenient decoding may normalise
		// reserved fields to spaces.
		if !lenient && !bytes.Equal(out, data) {
			t.Fatalf("Append(Parse(%q)) = %q", data, out)
		}
		if len(out) != len(data) {
			t.Fatalf("Append(Parse()) length %d, want %d", len(out), len(data))
		}
		again, err := Parse(out, opts)
		if err != nil {
			t.Fatalf("Parse(Append(Parse(%q))) error = %v", data, err)
		}
		if diff := cmp.Diff(cmd, again, cmpOpts); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}

func FuzzSubrecords(f *testing.F) {
	f.Add(appendixA(f)[1:], false, uint16(821))
	f.Add([]byte{0x03, 'a', 'b', 'c', 0x40 | 5, 'z', 0x80, 0xc0 | 2, '-', 0x00, 0x81, 'q'}, true, uint16(5))
	f.Add(bytes.Repeat([]byte{0x41, ' '}, 20), true, uint16(128))
	f.Fuzz(func(t *testing.T, payload []byte, compress bool, maxBuf uint16) {
		st, err := ScanSubrecords(payload)
		it := NewSubrecordIterator(payload)
		n := 0
		for it.Next() {
			n++
		}
		if (err == nil) != (it.Err() == nil) || (err == nil && n != st.Subrecords) {
			t.Fatalf("ScanSubrecords() = %+v, %v; iterator %d subrecords, %v", st, err, n, it.Err())
		}
		if err != nil {
			return
		}
		// Expand into records (the part after the last End of Record flag
		// is an unfinished record).
		u := Unpacker{AllowCompression: true}
		var recs [][]byte
		var cur []byte
		if err := u.Unpack(payload, func(d []byte, eor bool) error {
			cur = append(cur, d...)
			if eor {
				recs = append(recs, bytes.Clone(cur))
				cur = cur[:0]
			}
			return nil
		}); err != nil {
			t.Fatalf("Unpack() error = %v", err)
		}
		if u.Units() != st.Units || u.Records() != st.Records || int64(len(recs)) != st.Records {
			t.Fatalf("Unpack counts %d/%d, scan %d/%d", u.Units(), u.Records(), st.Units, st.Records)
		}
		flat, _ := AppendExpanded(nil, payload)
		if int64(len(flat)) != st.Units {
			t.Fatalf("AppendExpanded() = %d octets, want %d", len(flat), st.Units)
		}
		if !compress && st.Compressed {
			var strict Unpacker
			if strict.Unpack(payload, func([]byte, bool) error { return nil }) == nil {
				t.Fatalf("Unpack() without compression accepted a compressed subrecord")
			}
		}
		// Rebuild and unpack again.
		var bufs [][]byte
		p := NewPacker(int(maxBuf), compress, func(b []byte) error {
			if len(b) > max(int(maxBuf), 3) {
				t.Fatalf("Packer emitted %d octets, limit %d", len(b), maxBuf)
			}
			if _, err := ScanSubrecords(b[1:]); err != nil {
				t.Fatalf("Packer emitted a malformed buffer: %v", err)
			}
			bufs = append(bufs, bytes.Clone(b))
			return nil
		})
		for _, r := range recs {
			_, _ = p.Write(r)
			_ = p.EndRecord()
		}
		_, _ = p.Write(cur)
		_ = p.Flush()
		var again []byte
		var nrec int64
		u2 := Unpacker{AllowCompression: compress}
		for _, b := range bufs {
			if err := u2.Unpack(b[1:], func(d []byte, eor bool) error {
				again = append(again, d...)
				if eor {
					nrec++
				}
				return nil
			}); err != nil {
				t.Fatalf("Unpack(rebuilt) error = %v", err)
			}
		}
		if !bytes.Equal(again, flat) || nrec != st.Records {
			t.Fatalf("rebuilt data: %d octets %d records, want %d octets %d records", len(again), nrec, len(flat), st.Records)
		}
	})
}

func FuzzValidator(f *testing.F) {
	for _, tr := range fuzzTranscripts(f) {
		f.Add(encodeTranscript(tr), false)
		f.Add(encodeTranscript(tr), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, lenient bool) {
		cfg := ValidatorConfig{}
		if lenient {
			cfg = ValidatorConfig{Parse: ParseOptions{Charset: CharsetLenient}, MaxBufferSize: 300, MaxCredit: 2}
		}
		v := NewValidator(cfg)
		var first error
		for _, s := range decodeTranscript(data) {
			_, err := v.Check(s.from, s.buf)
			if err == ErrSessionEnded {
				if _, _, ended := v.Ended(); !ended || v.State() != StateEnded {
					t.Fatalf("ErrSessionEnded but Ended() = %v, State() = %v", ended, v.State())
				}
				continue
			}
			if first != nil {
				if err != first {
					t.Fatalf("Check() after a violation = %v, want the first error %v", err, first)
				}
				continue
			}
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("Check() error %T, want *ProtocolError", err)
				}
				first = err
				if v.State() != StateFailed {
					t.Fatalf("State() = %v after a violation, want failed", v.State())
				}
			}
		}
		if first == nil && v.Err() != nil {
			t.Fatalf("Err() = %v without a failed Check", v.Err())
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpus under testdata/fuzz with
// -update, and otherwise checks that it exists.
func TestWriteFuzzCorpus(t *testing.T) {
	type entry struct {
		target string
		name   string
		args   []any
	}
	var entries []entry
	for i, b := range goldenBuffers(t) {
		name := "appendix_a"
		if i < len(goldenCases) {
			name = goldenCases[i].name
		}
		entries = append(entries,
			entry{"FuzzParse", name, []any{b, false}},
			entry{"FuzzReader", name, []any{stream(t, [][]byte{b}), uint32(0)}})
		if b[0] == 'D' {
			entries = append(entries, entry{"FuzzSubrecords", name, []any{b[1:], true, uint16(len(b))}})
		}
	}
	entries = append(entries, entry{"FuzzReader", "all", []any{stream(t, goldenBuffers(t)), uint32(0)}})
	for i, tr := range fuzzTranscripts(t) {
		entries = append(entries, entry{"FuzzValidator", "session" + strconv.Itoa(i), []any{encodeTranscript(tr), false}})
	}
	for _, e := range entries {
		path := filepath.Join("testdata", "fuzz", e.target, e.name)
		var s bytes.Buffer
		s.WriteString("go test fuzz v1\n")
		for _, a := range e.args {
			switch a := a.(type) {
			case []byte:
				fmt.Fprintf(&s, "[]byte(%s)\n", strconv.Quote(string(a)))
			default:
				fmt.Fprintf(&s, "%T(%v)\n", a, a)
			}
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, s.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed corpus file missing: %v (run go test -run TestWriteFuzzCorpus -update)", err)
		}
		if !bytes.Equal(got, s.Bytes()) {
			t.Errorf("seed corpus file %s is stale (run go test -run TestWriteFuzzCorpus -update)", path)
		}
	}
}

func TestFuzzTranscriptsAreLegal(t *testing.T) {
	for i, tr := range fuzzTranscripts(t) {
		v := NewValidator(ValidatorConfig{})
		if n, err := run(t, v, tr); err != nil {
			t.Errorf("transcript %d step %d: Check() = %v, want nil", i, n, err)
		}
		if got := decodeTranscript(encodeTranscript(tr)); len(got) != len(tr) {
			t.Errorf("transcript %d: decodeTranscript(encodeTranscript()) = %d steps, want %d", i, len(got), len(tr))
		}
	}
}
