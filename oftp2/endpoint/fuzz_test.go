package endpoint

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
)

// fuzzTranscript encodes commands as the stream an Initiator sends after
// its SSID.
func fuzzTranscript(t testing.TB, cmds ...oftp2.Command) []byte {
	var out []byte
	for _, c := range cmds {
		b, err := c.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		out, _ = oftp2.AppendSTBHeader(out, len(b))
		out = append(out, b...)
	}
	return out
}

// FuzzResponder feeds arbitrary octets, after a valid Start Session phase,
// to a Responder and checks that the session ends (no panic, no hang), that
// Run reports one of its documented errors, and that every file under a
// final name in the receive directory is one the session reported as
// received.
func FuzzResponder(f *testing.F) {
	stamp := StampOf(testTime)
	sfid := &oftp2.SFID{DatasetName: "FUZZ", Stamp: stamp, Destination: respID, Originator: initID, Format: oftp2.FormatVariable, MaxRecordSize: 10, RestartPosition: 0}
	f.Add(fuzzTranscript(f, sfid, &oftp2.Data{Payload: []byte{0x82, 'a', 'b', 0x80}}, &oftp2.EFID{RecordCount: 2, UnitCount: 2}, &oftp2.CD{}, &oftp2.RTR{}, &oftp2.CD{}))
	f.Add(fuzzTranscript(f, sfid, &oftp2.Data{Payload: []byte{0xc5, 'a'}}, &oftp2.EFID{RecordCount: 1, UnitCount: 5}, &oftp2.CD{}))
	f.Add(fuzzTranscript(f, &oftp2.CD{}, &oftp2.ESID{Reason: oftp2.ESIDNormal}))
	f.Add(fuzzTranscript(f, &oftp2.EERP{DatasetName: "X", Stamp: stamp, Destination: initID, Originator: respID}, &oftp2.CD{}))
	f.Add([]byte{0x10, 0, 0, 5, 'R', 0x10, 0, 0, 4})
	log := logrus.New()
	log.Out = io.Discard
	f.Fuzz(func(t *testing.T, stream []byte) {
		if len(stream) > 32<<10 {
			t.Skip("stream larger than 32 KiB")
		}
		dir := t.TempDir()
		rc := Config{Role: Responder, ID: respID, Password: respPW, Partners: map[string]oftp2.Password{initID: initPW},
			ReceiveDir: dir, Logger: log, Timeout: 2 * time.Second, CheckpointInterval: 4096}
		e, err := New(rc)
		if err != nil {
			t.Fatal(err)
		}
		a, b := net.Pipe()
		type outcome struct {
			res *Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := e.Run(context.Background(), a)
			done <- outcome{res, err}
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, b)
		}()
		// The peer's half: SSID, then the fuzzed stream, then close.
		ssid, _ := (&oftp2.SSID{ID: initID, Password: initPW, BufferSize: 200, Mode: oftp2.ModeBoth, Compression: true, Restart: true, Credit: 3}).Append(nil)
		hdr, _ := oftp2.AppendSTBHeader(nil, len(ssid))
		_ = b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := b.Write(append(hdr, ssid...)); err == nil {
			_, _ = b.Write(stream)
		}
		b.Close()
		var o outcome
		select {
		case o = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
		}
		<-drained
		var se *SessionError
		if o.err != nil && !errors.As(o.err, &se) && !errors.Is(o.err, ErrConnectionLost) {
			t.Fatalf("Run = %v, want nil, *SessionError or ErrConnectionLost", o.err)
		}
		stored := map[string]bool{}
		for _, rf := range o.res.Received {
			stored[rf.Path] = true
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if p := filepath.Join(dir, en.Name()); en.Name() != stateDirName && !stored[p] {
				t.Fatalf("%s exists under a final name but was not reported as received", p)
			}
		}
	})
}
