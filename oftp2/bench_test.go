package oftp2

import (
	"bytes"
	"io"
	"testing"
)

// dataSession returns a Validator in the data transfer phase with the
// largest buffer size and credit window.
func dataSession(b *testing.B, compression bool) *Validator {
	t := tb{b}
	mods := []func(*SSID){bufSize(MaxExchangeBuffer), credit(MaxCredit)}
	if compression {
		mods = append(mods, withCompression)
	}
	v := NewValidator(ValidatorConfig{})
	for _, s := range join(t.setup(mods, mods), []step{{I, t.sfid()}, {R, t.sfpa(0)}}) {
		if _, err := v.Check(s.from, s.buf); err != nil {
			b.Fatal(err)
		}
	}
	return v
}

// benchmarkValidateData feeds DATA buffers through Validator.Check in steady
// state, with the Listener's CDT whenever the credit window is used up.
func benchmarkValidateData(b *testing.B, buf []byte, compression bool) {
	v := dataSession(b, compression)
	cdt := []byte("C  ")
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n == MaxCredit {
			if _, err := v.Check(Responder, cdt); err != nil {
				b.Fatal(err)
			}
			n = 0
		}
		if _, err := v.Check(Initiator, buf); err != nil {
			b.Fatal(err)
		}
		n++
	}
}

func BenchmarkValidateData4K(b *testing.B) {
	buf, _ := dataN(4096)
	benchmarkValidateData(b, buf, false)
}

func BenchmarkValidateData99999(b *testing.B) {
	buf, _ := dataN(MaxExchangeBuffer)
	benchmarkValidateData(b, buf, false)
}

// BenchmarkValidateData4KCompressed is the worst case: a buffer of 2-octet
// compressed subrecords.
func BenchmarkValidateData4KCompressed(b *testing.B) {
	buf := []byte{'D'}
	for len(buf) < 4096-1 {
		buf = append(buf, SubrecordCompressed|MaxSubrecord, ' ')
	}
	benchmarkValidateData(b, buf, true)
}

var benchSSID = &SSID{Level: 5, ID: "O0013000000SMARTPROXY", Password: "SECRET", BufferSize: 99999,
	Mode: ModeBoth, Compression: true, Restart: true, Credit: 999}

var benchSFID = &SFID{DatasetName: "INVOICES.2024", Stamp: stamp("2024-02-29 23:59:58", 1), UserData: "U1",
	Destination: "O0013000000PARTNER", Originator: "O0013000000SMARTPROXY", Format: FormatUnstructured,
	FileSize: 12345, OriginalFileSize: 12345, Description: "Rechnungen"}

func benchmarkAppend(b *testing.B, c Command) {
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Append(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkParse(b *testing.B, c Command) {
	buf, err := c.Append(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(buf, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSSID(b *testing.B) { benchmarkAppend(b, benchSSID) }
func BenchmarkParseSSID(b *testing.B)  { benchmarkParse(b, benchSSID) }
func BenchmarkAppendSFID(b *testing.B) { benchmarkAppend(b, benchSFID) }
func BenchmarkParseSFID(b *testing.B)  { benchmarkParse(b, benchSFID) }

// BenchmarkReadBuffer reads 4 KiB stream transmission buffers.
func BenchmarkReadBuffer4K(b *testing.B) {
	buf, _ := dataN(4096)
	var s bytes.Buffer
	w := NewWriter(&s)
	for range 64 {
		_ = w.WriteBuffer(buf)
	}
	stream := s.Bytes()
	rd := bytes.NewReader(stream)
	r := NewReader(rd, 0)
	b.SetBytes(int64(len(buf) + STHLen))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadBuffer(); err == io.EOF {
			rd.Reset(stream)
			if _, err := r.ReadBuffer(); err != nil {
				b.Fatal(err)
			}
		} else if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPacker packs 1 MiB of mixed data into 4 KiB DATA buffers with
// compression.
func BenchmarkPacker(b *testing.B) {
	data := bytes.Repeat([]byte("ORDERS;4711;    ;0000000001;EUR;"), 32768)
	p := NewPacker(4096, true, func([]byte) error { return nil })
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := p.EndRecord(); err != nil {
			b.Fatal(err)
		}
		if err := p.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
