package endpoint

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"smartproxy/oftp2"
)

// BenchmarkTransfer measures an endpoint-to-endpoint transfer of one 16 MiB
// file per iteration (a whole session: TLS 1.3 handshake with client
// certificates on loopback, SSID exchange, data, EFID with fsync and rename,
// EERP), for several buffer sizes and credit windows. The throughput in MB/s
// is the baseline for the proxy's measurements.
//
//	go test -run '^$' -bench BenchmarkTransfer -benchtime 20x ./oftp2/endpoint
func BenchmarkTransfer(b *testing.B) {
	const size = 16 << 20
	dir := b.TempDir()
	random := randomFile(b, dir, size)
	text, _, _ := content(b, dir, 'T', size, 1)
	tests := []struct {
		name     string
		path     string
		format   byte
		buffer   int
		credit   int
		compress bool
	}{
		{"U/buf=4096/credit=16", random, 'U', 4096, 16, false},
		{"U/buf=16384/credit=64", random, 'U', 16384, 64, false},
		{"U/buf=65535/credit=16", random, 'U', 65535, 16, false},
		{"U/buf=65535/credit=64", random, 'U', 65535, 64, false},
		{"U/buf=65535/credit=256", random, 'U', 65535, 256, false},
		{"U/buf=99999/credit=64", random, 'U', 99999, 64, false},
		{"U/buf=99999/credit=999", random, 'U', 99999, 999, false},
		{"U/buf=65535/credit=64/compression", random, 'U', 65535, 64, true},
		{"T/buf=65535/credit=64/compression", text, 'T', 65535, 64, true},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			ic, rc := initiatorConfig(b), responderConfig(b)
			ic.BufferSize, ic.Credit, ic.DisableCompression = tc.buffer, tc.credit, !tc.compress
			ini, resp := mustNew(b, ic), mustNew(b, rc)
			b.SetBytes(size)
			for n := 0; b.Loop(); n++ {
				i, r := pair(b, context.Background(), ini, resp, nil, OutgoingFile{Path: tc.path, Format: oftp2.FileFormat(tc.format), DatasetName: fmt.Sprintf("BENCH%d", n)})
				if i.err != nil || r.err != nil || i.res.Err() != nil {
					b.Fatalf("transfer: %v, %v, %v", i.err, r.err, i.res.Err())
				}
				b.StopTimer()
				os.Remove(r.res.Received[0].Path)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkTransferRTT measures the same transfer over a relay that adds
// 10 ms in each direction (20 ms round trip), for several credit windows:
// the window (credit × buffer size) bounds the data per round trip.
//
//	go test -run '^$' -bench BenchmarkTransferRTT -benchtime 5x ./oftp2/endpoint
func BenchmarkTransferRTT(b *testing.B) {
	const size = 16 << 20
	path := randomFile(b, b.TempDir(), size)
	for _, tc := range []struct{ buffer, credit int }{{65535, 4}, {65535, 16}, {65535, 64}, {65535, 256}, {16384, 64}, {99999, 999}} {
		b.Run(fmt.Sprintf("buf=%d/credit=%d", tc.buffer, tc.credit), func(b *testing.B) {
			ic, rc := initiatorConfig(b), responderConfig(b)
			ic.BufferSize, ic.Credit, ic.DisableCompression = tc.buffer, tc.credit, true
			ini, resp := mustNew(b, ic), mustNew(b, rc)
			b.SetBytes(size)
			for n := 0; b.Loop(); n++ {
				i, r := pair(b, context.Background(), ini, resp, func(target string) string {
					return newLatencyRelay(b, target, 10*time.Millisecond).ln.Addr().String()
				}, OutgoingFile{Path: path, DatasetName: fmt.Sprintf("RTT%d", n)})
				if i.err != nil || r.err != nil || i.res.Err() != nil {
					b.Fatalf("transfer: %v, %v, %v", i.err, r.err, i.res.Err())
				}
				b.StopTimer()
				os.Remove(r.res.Received[0].Path)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkTransferValidator measures what judging every buffer with
// oftp2.Validator costs an endpoint: the same 16 MiB transfer (U, buffer
// 65535, credit 64, TLS on loopback) with both endpoints validating (the
// default) and both lenient. Run the two side by side and compare the ratio.
//
//	go test -run '^$' -bench BenchmarkTransferValidator -benchtime 10x -count 3 ./oftp2/endpoint
func BenchmarkTransferValidator(b *testing.B) {
	const size = 16 << 20
	path := randomFile(b, b.TempDir(), size)
	for _, lenient := range []bool{false, true} {
		name := "validator"
		if lenient {
			name = "lenient"
		}
		b.Run(name, func(b *testing.B) {
			ic, rc := initiatorConfig(b), responderConfig(b)
			ic.BufferSize, ic.Credit, ic.DisableCompression = 65535, 64, true
			ic.Lenient, rc.Lenient = lenient, lenient
			ini, resp := mustNew(b, ic), mustNew(b, rc)
			b.SetBytes(size)
			for n := 0; b.Loop(); n++ {
				i, r := pair(b, context.Background(), ini, resp, nil, OutgoingFile{Path: path, DatasetName: fmt.Sprintf("VAL%d", n)})
				if i.err != nil || r.err != nil || i.res.Err() != nil {
					b.Fatalf("transfer: %v, %v, %v", i.err, r.err, i.res.Err())
				}
				b.StopTimer()
				os.Remove(r.res.Received[0].Path)
				b.StartTimer()
			}
		})
	}
}

// randomFile writes size random octets to dir/random.bin and returns its path.
func randomFile(b *testing.B, dir string, size int) string {
	b.Helper()
	path := filepath.Join(dir, "random.bin")
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}
