package endpoint

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"smartproxy/oftp2"
)

// validatingRelay is a loopback TCP relay that passes every exchange buffer
// in both directions through an oftp2.Validator before forwarding it, as the
// proxy does. One connection per relay.
type validatingRelay struct {
	ln  net.Listener
	v   *oftp2.Validator
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error // the first violation
}

func newValidatingRelay(t *testing.T, target string) *validatingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &validatingRelay{ln: ln, v: oftp2.NewValidator(oftp2.ValidatorConfig{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		in, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			return
		}
		r.wg.Add(2)
		go r.pump(in, out, oftp2.Initiator)
		go r.pump(out, in, oftp2.Responder)
	}()
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *validatingRelay) pump(src, dst net.Conn, from oftp2.Side) {
	defer r.wg.Done()
	rd, wr := oftp2.NewReader(src, 0), oftp2.NewWriter(dst)
	for {
		buf, err := rd.ReadBuffer()
		if err != nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
				_ = cw.CloseWrite()
				return
			}
			src.Close()
			dst.Close()
			return
		}
		if _, err := r.v.Check(from, buf); err != nil && !errors.Is(err, oftp2.ErrSessionEnded) {
			r.mu.Lock()
			if r.err == nil {
				r.err = err
			}
			r.mu.Unlock()
			src.Close()
			dst.Close()
			return
		}
		if err := wr.WriteBuffer(buf); err != nil {
			src.Close()
			return
		}
	}
}

func (r *validatingRelay) violation() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// plainPair runs one session over plain loopback TCP through via.
func plainPair(t *testing.T, ini, resp *Endpoint, via func(target string) string, files ...OutgoingFile) (i, r sessionOutcome) {
	t.Helper()
	addr, out := serveOne(t, context.Background(), resp)
	if via != nil {
		addr = via(addr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	i.res, i.err = ini.Run(context.Background(), c, files...)
	r = waitOutcome(t, out)
	return i, r
}

// TestValidatorSelfCheck runs sessions of every kind through the oftp2
// Validator: whatever the endpoint sends in either role must be a legal
// RFC 5024 transcript.
func TestValidatorSelfCheck(t *testing.T) {
	src := t.TempDir()
	var files []OutgoingFile
	for _, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable} {
		for _, n := range []int{0, 1, 64, 100_000} {
			path, rs, _ := content(t, src, f, n, 11)
			files = append(files, OutgoingFile{Path: path, Format: f, RecordSize: rs})
		}
	}
	back, _, _ := content(t, src, oftp2.FormatVariable, 30_000, 12)
	tests := []struct {
		name  string
		setup func(ic, rc *Config)
		files []OutgoingFile
	}{
		{"all formats compressed", func(ic, rc *Config) { ic.BufferSize, ic.Credit = 512, 4 }, files},
		{"all formats uncompressed", func(ic, rc *Config) { ic.DisableCompression = true }, files},
		{"no files", func(ic, rc *Config) {}, nil},
		{"both directions", func(ic, rc *Config) {
			rc.Outbox = func(string) ([]OutgoingFile, error) {
				return []OutgoingFile{{Path: back, Format: oftp2.FormatVariable}}, nil
			}
		}, files[:3]},
		{"NERP", func(ic, rc *Config) { rc.Process = func(ReceivedFile) error { return errors.New("no") } }, files[:2]},
		{"refused file", func(ic, rc *Config) {}, []OutgoingFile{{Path: files[1].Path, Destination: "O0013000000ELSEWHERE"}, files[2]}},
		{"receiver-only initiator", func(ic, rc *Config) {
			ic.Mode = oftp2.ModeReceiver
			rc.Outbox = func(string) ([]OutgoingFile, error) {
				return []OutgoingFile{{Path: back, Format: oftp2.FormatVariable}}, nil
			}
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ic, rc := initiatorConfig(t), responderConfig(t)
			tc.setup(&ic, &rc)
			var relay *validatingRelay
			i, r := plainPair(t, mustNew(t, ic), mustNew(t, rc), func(target string) string {
				relay = newValidatingRelay(t, target)
				return relay.ln.Addr().String()
			}, tc.files...)
			if err := relay.violation(); err != nil {
				t.Fatalf("Validator: %v", err)
			}
			if i.err != nil || r.err != nil {
				t.Fatalf("Run: initiator %v, responder %v", i.err, r.err)
			}
			if got := relay.v.State(); got != oftp2.StateEnded {
				t.Errorf("Validator state %v, want %v", got, oftp2.StateEnded)
			}
		})
	}
}

// TestValidatorSelfCheckRestart: the resumed session of a broken transfer
// is legal too (SFPA answer count ≤ SFID restart position, counts).
func TestValidatorSelfCheckRestart(t *testing.T) {
	const size = 1 << 20
	for _, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatVariable} {
		t.Run(string(rune(f)), func(t *testing.T) {
			path, rs, _ := content(t, t.TempDir(), f, size, 13)
			file := OutgoingFile{Path: path, Format: f, RecordSize: rs}
			ic, rc := initiatorConfig(t), responderConfig(t)
			ic.DisableCompression = true
			ini, resp := mustNew(t, ic), mustNew(t, rc)
			i, _ := plainPair(t, ini, resp, func(target string) string { return newCutter(t, target, size/2).addr() }, file)
			if i.err == nil {
				t.Fatal("session 1 did not break")
			}
			var relay *validatingRelay
			i, r := plainPair(t, ini, resp, func(target string) string {
				relay = newValidatingRelay(t, target)
				return relay.ln.Addr().String()
			}, file)
			if err := relay.violation(); err != nil {
				t.Fatalf("Validator: %v", err)
			}
			if i.err != nil || r.err != nil || i.res.Sent[0].RestartPosition == 0 {
				t.Fatalf("session 2: initiator %v, responder %v, restart %d", i.err, r.err, i.res.Sent[0].RestartPosition)
			}
		})
	}
}
