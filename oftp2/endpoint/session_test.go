package endpoint

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"smartproxy/oftp2"
)

// raw is a hand-driven OFTP2 peer on a real loopback socket, for sending
// what a well-behaved endpoint never would.
type raw struct {
	t    *testing.T
	conn net.Conn
	rd   *oftp2.Reader
	wr   *oftp2.Writer
}

func newRaw(t *testing.T, c net.Conn) *raw {
	return &raw{t: t, conn: c, rd: oftp2.NewReader(c, 0), wr: oftp2.NewWriter(c)}
}

func (r *raw) send(cmd oftp2.Command) {
	r.t.Helper()
	if err := r.wr.WriteCommand(cmd); err != nil {
		r.t.Fatalf("raw peer: send %s: %v", cmd.Code(), err)
	}
}

func (r *raw) sendBuffer(b []byte) {
	r.t.Helper()
	if err := r.wr.WriteBuffer(b); err != nil {
		r.t.Fatalf("raw peer: send buffer: %v", err)
	}
}

// recv reads the next command, failing the test after testWait.
func (r *raw) recv() oftp2.Command {
	r.t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(testWait))
	b, err := r.rd.ReadBuffer()
	if err != nil {
		r.t.Fatalf("raw peer: read: %v", err)
	}
	cmd, err := oftp2.Parse(b, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient})
	if err != nil {
		r.t.Fatalf("raw peer: parse: %v", err)
	}
	return cmd
}

// expectESID reads until an ESID arrives (commands before it are allowed)
// and checks its reason.
func (r *raw) expectESID(want oftp2.ESIDReason) {
	r.t.Helper()
	for range 100 {
		cmd := r.recv()
		if e, ok := cmd.(*oftp2.ESID); ok {
			if e.Reason != want {
				r.t.Fatalf("ESID reason %s (%q), want %s", e.Reason, e.Text, want)
			}
			r.conn.Close() // §9.9 WF_NDISC: the receiver of an ESID disconnects
			return
		}
	}
	r.t.Fatal("no ESID within 100 commands")
}

func (r *raw) expect(code oftp2.CommandCode) oftp2.Command {
	r.t.Helper()
	cmd := r.recv()
	if cmd.Code() != code {
		if e, ok := cmd.(*oftp2.ESID); ok {
			r.t.Fatalf("got ESID %s (%q), want %s", e.Reason, e.Text, code)
		}
		r.t.Fatalf("got %s, want %s", cmd.Code(), code)
	}
	return cmd
}

// serveOne runs e as Responder on the first connection to a loopback
// listener and returns the address and the outcome channel.
func serveOne(t *testing.T, ctx context.Context, e *Endpoint) (string, <-chan sessionOutcome) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan sessionOutcome, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			out <- sessionOutcome{err: err}
			return
		}
		res, err := e.Run(ctx, c)
		out <- sessionOutcome{res: res, err: err}
	}()
	return ln.Addr().String(), out
}

// rawInitiator connects to a Responder and completes the Start Session
// phase with ssid (nil: a matching default).
func rawInitiator(t *testing.T, ctx context.Context, e *Endpoint, ssid *oftp2.SSID) (*raw, <-chan sessionOutcome) {
	t.Helper()
	addr, out := serveOne(t, ctx, e)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := newRaw(t, c)
	r.expect(oftp2.CodeSSRM)
	if ssid == nil {
		ssid = &oftp2.SSID{ID: initID, Password: initPW, BufferSize: 1000, Mode: oftp2.ModeBoth, Restart: true, Credit: 2}
	}
	r.send(ssid)
	return r, out
}

func waitOutcome(t *testing.T, out <-chan sessionOutcome) sessionOutcome {
	t.Helper()
	select {
	case o := <-out:
		return o
	case <-time.After(testWait):
		t.Fatal("Run did not return")
		return sessionOutcome{}
	}
}

// wantSessionError checks that err is a *SessionError with the reason and
// origin.
func wantSessionError(t *testing.T, err error, reason oftp2.ESIDReason, remote bool) *SessionError {
	t.Helper()
	var se *SessionError
	if !errors.As(err, &se) || se.Reason != reason || se.Remote != remote {
		t.Fatalf("error = %v, want *SessionError reason %s remote %t", err, reason, remote)
	}
	return se
}

// TestStartSessionRefused covers the identification and negotiation
// failures of the Start Session phase (RFC 5024 §5.3.2, §9.8).
func TestStartSessionRefused(t *testing.T) {
	base := oftp2.SSID{ID: initID, Password: initPW, BufferSize: 1000, Mode: oftp2.ModeBoth, Credit: 10}
	with := func(f func(*oftp2.SSID)) *oftp2.SSID {
		s := base
		f(&s)
		return &s
	}
	tests := []struct {
		name   string
		mode   oftp2.Mode // responder's mode; zero = both
		ssid   *oftp2.SSID
		reason oftp2.ESIDReason
	}{
		{"unknown user code", 0, with(func(s *oftp2.SSID) { s.ID = "O0013000000NOBODY" }), oftp2.ESIDUserCodeNotKnown},
		{"wrong password", 0, with(func(s *oftp2.SSID) { s.Password = "WRONG" }), oftp2.ESIDInvalidPassword},
		{"empty password", 0, with(func(s *oftp2.SSID) { s.Password = "" }), oftp2.ESIDInvalidPassword},
		{"OFTP 1.4", 0, with(func(s *oftp2.SSID) { s.Level = 4 }), oftp2.ESIDModeIncompatible},
		{"secure authentication", 0, with(func(s *oftp2.SSID) { s.SecureAuth = true }), oftp2.ESIDSecureAuthIncompatible},
		{"both receiver-only", oftp2.ModeReceiver, with(func(s *oftp2.SSID) { s.Mode = oftp2.ModeReceiver }), oftp2.ESIDModeIncompatible},
		{"both sender-only", oftp2.ModeSender, with(func(s *oftp2.SSID) { s.Mode = oftp2.ModeSender }), oftp2.ESIDModeIncompatible},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := responderConfig(t)
			rc.Mode = tc.mode
			if tc.mode == oftp2.ModeSender {
				rc.ReceiveDir = ""
			}
			r, out := rawInitiator(t, context.Background(), mustNew(t, rc), tc.ssid)
			r.expectESID(tc.reason)
			wantSessionError(t, waitOutcome(t, out).err, tc.reason, false)
		})
	}
}

// TestInitiatorChecksResponder: the Initiator checks the Responder's
// identity and password as well, and both sides see the reason.
func TestInitiatorChecksResponder(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Config)
		reason oftp2.ESIDReason
	}{
		{"wrong responder id", func(c *Config) { c.PartnerID = "O0013000000SOMEONE" }, oftp2.ESIDUserCodeNotKnown},
		{"wrong responder password", func(c *Config) { c.PartnerPassword = "OTHER" }, oftp2.ESIDInvalidPassword},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ic := initiatorConfig(t)
			tc.edit(&ic)
			i, r := pair(t, context.Background(), mustNew(t, ic), mustNew(t, responderConfig(t)), nil)
			wantSessionError(t, i.err, tc.reason, false)
			wantSessionError(t, r.err, tc.reason, true)
		})
	}
	t.Run("responder refuses the initiator", func(t *testing.T) {
		ic := initiatorConfig(t)
		ic.Password = "BAD"
		i, r := pair(t, context.Background(), mustNew(t, ic), mustNew(t, responderConfig(t)), nil)
		wantSessionError(t, i.err, oftp2.ESIDInvalidPassword, true)
		wantSessionError(t, r.err, oftp2.ESIDInvalidPassword, false)
	})
}

// TestNegotiation checks the values the Responder answers with.
func TestNegotiation(t *testing.T) {
	rc := responderConfig(t)
	rc.BufferSize = 2048
	rc.Credit = 50
	rc.DisableCompression = true
	r, out := rawInitiator(t, context.Background(), mustNew(t, rc),
		&oftp2.SSID{ID: initID, Password: initPW, BufferSize: 4096, Mode: oftp2.ModeSender, Compression: true, Restart: true, Credit: 20})
	got := r.expect(oftp2.CodeSSID).(*oftp2.SSID)
	if got.ID != respID || got.Password != respPW || got.BufferSize != 2048 || got.Credit != 20 || got.Compression || !got.Restart || got.Mode != oftp2.ModeReceiver || got.SecureAuth || got.SpecialLogic {
		t.Errorf("responder SSID = %+v", got)
	}
	r.send(&oftp2.CD{})
	r.expectESID(oftp2.ESIDNormal)
	if o := waitOutcome(t, out); o.err != nil {
		t.Errorf("Run = %v, want nil", o.err)
	}
}

// TestProtocolViolations sends commands that are invalid in the
// Responder's state or malformed, and checks the ESID reason.
func TestProtocolViolations(t *testing.T) {
	sfid := func(restart int64) *oftp2.SFID {
		return &oftp2.SFID{DatasetName: "TEST", Stamp: StampOf(testTime), Destination: respID, Originator: initID, Format: oftp2.FormatUnstructured, RestartPosition: restart}
	}
	tests := []struct {
		name   string
		noRest bool
		script func(r *raw)
		reason oftp2.ESIDReason
	}{
		{"DATA without SFID", false, func(r *raw) { r.send(&oftp2.Data{Payload: []byte{0x81, 'x'}}) }, oftp2.ESIDProtocolViolation},
		{"unknown command", false, func(r *raw) { r.sendBuffer([]byte("Zzz")) }, oftp2.ESIDCommandNotRecognised},
		{"malformed SFID", false, func(r *raw) { r.sendBuffer([]byte("Hshort")) }, oftp2.ESIDBufferSizeError},
		{"SFPA from the speaker", false, func(r *raw) { r.send(&oftp2.SFPA{}) }, oftp2.ESIDProtocolViolation},
		{"restart without agreement", true, func(r *raw) { r.send(sfid(3)) }, oftp2.ESIDProtocolViolation},
		{"DATA above buffer size", false, func(r *raw) {
			r.send(sfid(0))
			r.expect(oftp2.CodeSFPA)
			big := make([]byte, 0, 1100)
			for len(big)+64 <= 1100 {
				big = append(big, 63)
				big = append(big, make([]byte, 63)...)
			}
			r.send(&oftp2.Data{Payload: big})
		}, oftp2.ESIDBufferSizeError},
		{"compressed subrecord without compression", false, func(r *raw) {
			r.send(sfid(0))
			r.expect(oftp2.CodeSFPA)
			r.send(&oftp2.Data{Payload: []byte{0xc5, 'x'}})
		}, oftp2.ESIDInvalidData},
		{"EERP answered by EERP", false, func(r *raw) {
			r.send(sfid(0))
			r.expect(oftp2.CodeSFPA)
			r.send(&oftp2.Data{Payload: []byte{0x81, 'x'}})
			r.send(&oftp2.EFID{UnitCount: 1})
			r.expect(oftp2.CodeEFPA)
			r.send(&oftp2.CD{})
			r.expect(oftp2.CodeEERP)
			r.send(&oftp2.EERP{DatasetName: "X", Stamp: StampOf(testTime), Destination: respID, Originator: initID})
		}, oftp2.ESIDProtocolViolation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := responderConfig(t)
			rc.DisableRestart = tc.noRest
			rc.DisableCompression = true
			r, out := rawInitiator(t, context.Background(), mustNew(t, rc), nil)
			r.expect(oftp2.CodeSSID)
			tc.script(r)
			r.expectESID(tc.reason)
			wantSessionError(t, waitOutcome(t, out).err, tc.reason, false)
		})
	}
}

// TestEFIDCountMismatch: EFID counts that do not match the data end the
// session with ESID 06 and store nothing, as the proxy's validator does; a
// lenient endpoint refuses only the file, with EFNA, and the session goes on.
func TestEFIDCountMismatch(t *testing.T) {
	for _, lenient := range []bool{false, true} {
		t.Run("lenient="+strconv.FormatBool(lenient), func(t *testing.T) {
			rc := responderConfig(t)
			rc.Lenient = lenient
			r, out := rawInitiator(t, context.Background(), mustNew(t, rc), nil)
			r.expect(oftp2.CodeSSID)
			r.send(&oftp2.SFID{DatasetName: "COUNTS", Stamp: StampOf(testTime), Destination: respID, Originator: initID, Format: oftp2.FormatFixed, MaxRecordSize: 2})
			r.expect(oftp2.CodeSFPA)
			r.send(&oftp2.Data{Payload: []byte{0x82, 'a', 'b', 0x82, 'c', 'd'}})
			r.send(&oftp2.EFID{RecordCount: 3, UnitCount: 4})
			if lenient {
				efna := r.expect(oftp2.CodeEFNA).(*oftp2.EFNA)
				if efna.Reason != oftp2.EFNAInvalidRecordCount {
					t.Errorf("EFNA reason %s, want 10", efna.Reason)
				}
				r.send(&oftp2.CD{})
				r.expectESID(oftp2.ESIDNormal)
				if o := waitOutcome(t, out); o.err != nil || len(o.res.Received) != 0 {
					t.Errorf("Run = %v with %d files, want nil and none", o.err, len(o.res.Received))
				}
			} else {
				r.expectESID(oftp2.ESIDInvalidData)
				o := waitOutcome(t, out)
				wantSessionError(t, o.err, oftp2.ESIDInvalidData, false)
				if len(o.res.Received) != 0 {
					t.Errorf("Run stored %d files, want none", len(o.res.Received))
				}
			}
			entries, _ := os.ReadDir(rc.ReceiveDir)
			for _, e := range entries {
				if e.Name() != stateDirName {
					t.Errorf("file %s stored after wrong EFID counts", e.Name())
				}
			}
		})
	}
}

// TestNormalESIDBeforeEFPA: a responder that answers the EFID with ESID 00
// instead of EFPA breaks RFC 5024 §9 (the sender never learns whether its
// file was stored). The endpoint refuses it with ESID 02, as the proxy's
// validator does; a lenient endpoint takes it as a normal end, as before it
// used the validator. Either way the file is not confirmed.
func TestNormalESIDBeforeEFPA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "early.txt")
	if err := os.WriteFile(path, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, lenient := range []bool{false, true} {
		t.Run("lenient="+strconv.FormatBool(lenient), func(t *testing.T) {
			ic := initiatorConfig(t)
			ic.Lenient = lenient
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			out := make(chan sessionOutcome, 1)
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					out <- sessionOutcome{err: err}
					return
				}
				res, err := mustNew(t, ic).Run(context.Background(), c, OutgoingFile{Path: path, DatasetName: "EARLY"})
				out <- sessionOutcome{res: res, err: err}
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := newRaw(t, c)
			r.send(&oftp2.SSRM{})
			r.expect(oftp2.CodeSSID)
			r.send(&oftp2.SSID{ID: respID, Password: respPW, BufferSize: 1000, Mode: oftp2.ModeBoth, Credit: 2})
			r.expect(oftp2.CodeSFID)
			r.send(&oftp2.SFPA{})
			r.expect(oftp2.CodeDATA)
			r.expect(oftp2.CodeEFID)
			r.send(&oftp2.ESID{Reason: oftp2.ESIDNormal})
			o := waitOutcome(t, out)
			if lenient {
				if o.err != nil {
					t.Errorf("lenient Run = %v, want a normal end", o.err)
				}
			} else {
				wantSessionError(t, o.err, oftp2.ESIDProtocolViolation, false)
			}
			if len(o.res.Sent) != 1 || o.res.Sent[0].Err == nil {
				t.Errorf("Run deliveries = %+v, want one file not confirmed", o.res.Sent)
			}
		})
	}
}

// TestSilentInitiator: a partner that completes the handshake and then
// says nothing is ended with ESID 09 by the inactivity timer.
func TestSilentInitiator(t *testing.T) {
	rc := responderConfig(t)
	rc.Timeout = 300 * time.Millisecond
	r, out := rawInitiator(t, context.Background(), mustNew(t, rc), nil)
	r.expect(oftp2.CodeSSID)
	r.expectESID(oftp2.ESIDTimeout)
	err := waitOutcome(t, out).err
	wantSessionError(t, err, oftp2.ESIDTimeout, false)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("error %v does not wrap os.ErrDeadlineExceeded", err)
	}
}

// TestSilentDuringData: the timer also runs while a file is open; the
// partial file is kept for restart.
func TestSilentDuringData(t *testing.T) {
	rc := responderConfig(t)
	rc.Timeout = 300 * time.Millisecond
	r, out := rawInitiator(t, context.Background(), mustNew(t, rc), nil)
	r.expect(oftp2.CodeSSID)
	r.send(&oftp2.SFID{DatasetName: "SILENT", Stamp: StampOf(testTime), Destination: respID, Originator: initID, Format: oftp2.FormatUnstructured, FileSize: 2})
	r.expect(oftp2.CodeSFPA)
	r.send(&oftp2.Data{Payload: append([]byte{63}, make([]byte, 63)...)})
	r.expectESID(oftp2.ESIDTimeout)
	wantSessionError(t, waitOutcome(t, out).err, oftp2.ESIDTimeout, false)
	parts, _ := filepath.Glob(filepath.Join(rc.ReceiveDir, stateDirName, partialDirName, "*.json"))
	if len(parts) != 1 {
		t.Errorf("restart states after the timeout: %v, want one", parts)
	}
}

// TestSilentResponder: an Initiator whose partner accepts the connection
// but never sends SSRM gives up with ESID 09.
func TestSilentResponder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ic := initiatorConfig(t)
	ic.Timeout = 300 * time.Millisecond
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("no connection accepted")
	}
	defer peer.Close()
	done := make(chan error, 1)
	ep := mustNew(t, ic)
	go func() {
		_, err := ep.Run(context.Background(), c)
		done <- err
	}()
	r := newRaw(t, peer)
	r.expectESID(oftp2.ESIDTimeout)
	peer.Close()
	select {
	case err := <-done:
		wantSessionError(t, err, oftp2.ESIDTimeout, false)
	case <-time.After(testWait):
		t.Fatal("Run did not return")
	}
}

// TestCancel: cancelling the context ends the session with ESID 05.
func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, out := rawInitiator(t, ctx, mustNew(t, responderConfig(t)), nil)
	r.expect(oftp2.CodeSSID)
	cancel()
	r.expectESID(oftp2.ESIDLocalEmergency)
	err := waitOutcome(t, out).err
	wantSessionError(t, err, oftp2.ESIDLocalEmergency, false)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
}

// TestCancelDuringTransfer cancels an Initiator in the middle of a large
// file over TLS: the Responder sees ESID 05 and keeps the partial file.
func TestCancelDuringTransfer(t *testing.T) {
	path, _, _ := content(t, t.TempDir(), oftp2.FormatUnstructured, 8<<20, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ic := initiatorConfig(t)
	ic.DisableCompression = true
	ic.Credit = 1 // one buffer per round trip: slow enough to cancel in the middle
	ic.BufferSize = 1024
	rc := responderConfig(t)
	rc.CheckpointInterval = 1024
	rc.Process = func(ReceivedFile) error { return nil }
	resp := mustNew(t, rc)
	var gotPartial bool
	// Cancel once the receiver has committed some data.
	go func() {
		deadline := time.Now().Add(testWait)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if m, _ := filepath.Glob(filepath.Join(rc.ReceiveDir, stateDirName, partialDirName, "*.json")); len(m) > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	i, r := pair(t, ctx, mustNew(t, ic), resp, nil, OutgoingFile{Path: path})
	wantSessionError(t, i.err, oftp2.ESIDLocalEmergency, false)
	wantSessionError(t, r.err, oftp2.ESIDLocalEmergency, true)
	m, _ := filepath.Glob(filepath.Join(rc.ReceiveDir, stateDirName, partialDirName, "*.part"))
	gotPartial = len(m) == 1
	if !gotPartial {
		t.Errorf("partial files after cancel: %v, want one", m)
	}
}
