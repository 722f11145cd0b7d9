package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/netip"
	"testing"
)

// hdr builds a header from its parts: version/command byte, family/transport byte and the
// bytes after the fixed part, with the length field set to their length.
func hdr(verCmd, famTr byte, rest ...byte) []byte {
	b := append(Signature[:0:0], Signature[:]...)
	b = append(b, verCmd, famTr)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rest)))
	return append(b, rest...)
}

// inet4 is the address block 192.0.2.7:40000 → 198.51.100.1:6619.
var inet4 = []byte{192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x19, 0xdb}

// withCRC appends a CRC32C TLV with the correct checksum to a header built by hdr.
func withCRC(b []byte) []byte {
	b = append(b, tlvCRC32C, 0, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[14:16], uint16(len(b)-fixedLen))
	sum := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	binary.BigEndian.PutUint32(b[len(b)-4:], sum)
	return b
}

func TestParse(t *testing.T) {
	src4 := netip.MustParseAddrPort("192.0.2.7:40000")
	dst4 := netip.MustParseAddrPort("198.51.100.1:6619")
	v6 := Header{Command: Proxy, Source: netip.MustParseAddrPort("[2001:db8::7]:40000"), Destination: netip.MustParseAddrPort("[2001:db8::1]:6619")}
	badCRC := withCRC(hdr(0x21, 0x11, inet4...))
	badCRC[len(badCRC)-1] ^= 1
	tests := []struct {
		name    string
		in      []byte
		want    Header
		wantErr any // nil, a sentinel error, or a *FormatError field name
	}{
		{"proxy tcp4", hdr(0x21, 0x11, inet4...), Header{Command: Proxy, Source: src4, Destination: dst4}, nil},
		{"proxy tcp6", v6.Append(nil), v6, nil},
		{"proxy tcp4 with tlvs", hdr(0x21, 0x11, append(append([]byte{}, inet4...), 0x04, 0, 2, 0, 0, 0x02, 0, 3, 'a', 'b', 'c')...), Header{Command: Proxy, Source: src4, Destination: dst4}, nil},
		{"proxy tcp4 with crc32c", withCRC(hdr(0x21, 0x11, inet4...)), Header{Command: Proxy, Source: src4, Destination: dst4}, nil},
		{"local unspec", hdr(0x20, 0x00), Header{Command: Local}, nil},
		{"local with addresses ignored", hdr(0x20, 0x11, inet4...), Header{Command: Local}, nil},
		{"tls client hello", append([]byte{0x16, 0x03, 0x01, 0x02, 0x00}, make([]byte, 20)...), Header{}, ErrNoSignature},
		{"version 1 text", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 6619\r\n"), Header{}, ErrNoSignature},
		{"version 1 in v2 frame", hdr(0x11, 0x11, inet4...), Header{}, "version"},
		{"command 2", hdr(0x22, 0x11, inet4...), Header{}, "command"},
		{"family 4", hdr(0x21, 0x41, inet4...), Header{}, "family"},
		{"transport 3", hdr(0x21, 0x13, inet4...), Header{}, "family"},
		{"address block short", hdr(0x21, 0x21, inet4...), Header{}, "length"},
		{"too long", append(hdr(0x21, 0x11), make([]byte, MaxLen)...), Header{}, "length"},
		{"tlv truncated", hdr(0x21, 0x11, append(append([]byte{}, inet4...), 0x04, 0)...), Header{}, "tlv"},
		{"tlv overlong", hdr(0x21, 0x11, append(append([]byte{}, inet4...), 0x04, 0, 9, 1)...), Header{}, "tlv"},
		{"crc32c wrong", badCRC, Header{}, "crc32c"},
		{"proxy unspec", hdr(0x21, 0x00), Header{}, ErrUnsupported},
		{"proxy udp4", hdr(0x21, 0x12, inet4...), Header{}, ErrUnsupported},
		{"proxy unix", hdr(0x21, 0x31, make([]byte, 216)...), Header{}, ErrUnsupported},
		{"truncated", hdr(0x21, 0x11, inet4...)[:20], Header{}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The length field of "too long" is what matters; fix it up past 16 bits.
			in := tt.in
			if tt.name == "too long" {
				binary.BigEndian.PutUint16(in[14:16], uint16(MaxLen))
			}
			got, n, err := Parse(append(append([]byte{}, in...), 0x16, 0x03)) // bytes after the header are not its
			checkErr(t, "Parse", err, tt.wantErr)
			if tt.wantErr == nil {
				if got != tt.want || n != len(in) {
					t.Errorf("Parse = %+v, %d, want %+v, %d", got, n, tt.want, len(in))
				}
			}
			r := bytes.NewReader(append(append([]byte{}, in...), 0x16, 0x03))
			got, err = Read(r)
			checkErr(t, "Read", err, tt.wantErr)
			if tt.wantErr == nil {
				if got != tt.want {
					t.Errorf("Read = %+v, want %+v", got, tt.want)
				}
				if r.Len() != 2 {
					t.Errorf("Read left %d bytes of the stream, want the 2 after the header", r.Len())
				}
			}
		})
	}
}

func checkErr(t *testing.T, fn string, err error, want any) {
	t.Helper()
	switch w := want.(type) {
	case nil:
		if err != nil {
			t.Errorf("%s error = %v, want nil", fn, err)
		}
	case error:
		if !errors.Is(err, w) {
			t.Errorf("%s error = %v, want %v", fn, err, w)
		}
	case string:
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Field != w {
			t.Errorf("%s error = %v, want a FormatError on %s", fn, err, w)
		}
	}
}

// TestReadEOF: a connection that ends before its first byte reads as io.EOF (a balancer's TCP
// health check), one that ends inside the signature as io.ErrUnexpectedEOF, and one whose first
// bytes are not the signature as ErrNoSignature even when it ends early.
func TestReadEOF(t *testing.T) {
	for _, tt := range []struct {
		in   []byte
		want error
	}{
		{nil, io.EOF},
		{Signature[:5], io.ErrUnexpectedEOF},
		{[]byte{0x16, 0x03}, ErrNoSignature},
		{hdr(0x21, 0x11, inet4...)[:fixedLen+3], io.ErrUnexpectedEOF},
	} {
		if _, err := Read(bytes.NewReader(tt.in)); !errors.Is(err, tt.want) {
			t.Errorf("Read(%q) error = %v, want %v", tt.in, err, tt.want)
		}
	}
}

// FuzzParse checks, for any input, that Parse and Read agree, that neither reads past the
// header nor accepts one longer than MaxLen, and that a decoded PROXY header encodes to bytes
// that decode to the same header.
func FuzzParse(f *testing.F) {
	f.Add(hdr(0x21, 0x11, inet4...))
	f.Add(withCRC(hdr(0x21, 0x11, inet4...)))
	f.Add(Header{Command: Proxy, Source: netip.MustParseAddrPort("[2001:db8::7]:1"), Destination: netip.MustParseAddrPort("[2001:db8::1]:6619")}.Append(nil))
	f.Add(hdr(0x20, 0x00))
	f.Add(hdr(0x21, 0x31, make([]byte, 216)...))
	f.Add(hdr(0x21, 0x11, append(append([]byte{}, inet4...), 0x04, 0, 2, 0, 0)...))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x10})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		r := bytes.NewReader(b)
		rh, rerr := Read(r)
		if err != nil {
			if rerr == nil {
				t.Fatalf("Parse error %v, but Read = %+v", err, rh)
			}
			if h != (Header{}) || n != 0 {
				t.Fatalf("Parse = %+v, %d with error %v, want zero values", h, n, err)
			}
			return
		}
		if n > len(b) || n > MaxLen || n < fixedLen {
			t.Fatalf("Parse length %d of %d input bytes, MaxLen %d", n, len(b), MaxLen)
		}
		if rerr != nil || rh != h || len(b)-r.Len() != n {
			t.Fatalf("Read = %+v, %v after %d bytes; Parse = %+v after %d", rh, rerr, len(b)-r.Len(), h, n)
		}
		switch h.Command {
		case Local:
			if h.Source.IsValid() || h.Destination.IsValid() {
				t.Fatalf("LOCAL header with addresses %+v", h)
			}
		case Proxy:
			if !h.Source.IsValid() || !h.Destination.IsValid() {
				t.Fatalf("PROXY header without addresses %+v", h)
			}
		default:
			t.Fatalf("command %v accepted", h.Command)
		}
		again, m, err := Parse(h.Append(nil))
		if err != nil || again != h || m != len(h.Append(nil)) {
			t.Fatalf("Parse(Append(%+v)) = %+v, %d, %v", h, again, m, err)
		}
	})
}
