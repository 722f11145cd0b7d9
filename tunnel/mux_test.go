package tunnel

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/testing/protocmp"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewValidates(t *testing.T) {
	p, _ := newPipe(1)
	tests := []struct {
		name string
		s    Stream
		cfg  Config
		want string // substring of the error; empty for success
	}{
		{"zero side", p, Config{}, "Config.Side"},
		{"bad side", p, Config{Side: 3}, "Config.Side"},
		{"nil stream", nil, Config{Side: SideClient}, "nil stream"},
		{"window below buffer", p, Config{Side: SideClient, Window: 1000}, "Config.Window"},
		{"window too large", p, Config{Side: SideClient, Window: MaxWindow + 1}, "Config.Window"},
		{"negative buffer", p, Config{Side: SideServer, MaxBufferSize: -1}, "Config.MaxBufferSize"},
		{"small buffer and window", p, Config{Side: SideServer, MaxBufferSize: 512, Window: 512}, ""},
		{"defaults", p, Config{Side: SideClient}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.s, tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New() = %v, want nil", err)
				}
				if tt.cfg.Window == 0 && m.Window() != DefaultWindow {
					t.Errorf("Window() = %d, want %d", m.Window(), DefaultWindow)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestDataBothDirections(t *testing.T) {
	acc := newAcceptor()
	c, _, _, _ := pair(t, Config{}, Config{Accept: acc.hook})
	ctx := context.Background()

	open := &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_INCOMING, PartnerOdetteId: "O0013000000TEST"}
	cs, err := c.Open(ctx, open)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	ss := acc.next(t)
	if cs.ID() != 1 || ss.ID() != 1 {
		t.Errorf("IDs = %d, %d, want 1, 1", cs.ID(), ss.ID())
	}
	if diff := cmp.Diff(open, ss.Open(), protocmp.Transform()); diff != "" {
		t.Errorf("accepted SessionOpen differs (-sent +received):\n%s", diff)
	}
	if got := cs.Opened().GetRemoteAddr(); got != "127.0.0.1:6619" {
		t.Errorf("Opened().RemoteAddr = %q, want 127.0.0.1:6619", got)
	}

	up, upSum := payload(1, 200, 99999)
	down, downSum := payload(2, 300, 4096)
	var wg sync.WaitGroup
	var upGot, downGot [32]byte
	var upErr, downErr, w1, w2 error
	wg.Go(func() { w1 = writeAll(ctx, cs, up) })
	wg.Go(func() { w2 = writeAll(ctx, ss, down) })
	wg.Go(func() { upGot, _, upErr = readAll(ctx, ss) })
	wg.Go(func() { downGot, _, downErr = readAll(ctx, cs) })
	wg.Wait()
	for _, err := range []error{w1, w2, upErr, downErr} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if upGot != upSum {
		t.Error("client to server: checksum mismatch")
	}
	if downGot != downSum {
		t.Error("server to client: checksum mismatch")
	}
	waitDone(t, cs)
	waitDone(t, ss)
	if cs.Err() != nil || ss.Err() != nil {
		t.Errorf("Err() = %v, %v after clean close, want nil, nil", cs.Err(), ss.Err())
	}
	if n := len(c.Sessions()); n != 0 {
		t.Errorf("client Sessions() has %d entries after close, want 0", n)
	}
}

func TestSessionIDsBothSides(t *testing.T) {
	cAcc, sAcc := newAcceptor(), newAcceptor()
	c, s, _, _ := pair(t, Config{Accept: cAcc.hook}, Config{Accept: sAcc.hook})
	ctx := context.Background()
	var ids []uint64
	for range 3 {
		a, err := c.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID(), b.ID())
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 6}, ids); diff != "" {
		t.Errorf("session ids (-want +got):\n%s", diff)
	}
	if got := len(s.Sessions()); got != 6 {
		t.Errorf("server Sessions() = %d entries, want 6", got)
	}
}

func TestHalfClose(t *testing.T) {
	acc := newAcceptor()
	c, _, _, _ := pair(t, Config{}, Config{Accept: acc.hook})
	ctx := context.Background()
	cs, err := c.Open(ctx, &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	ss := acc.next(t)

	if err := cs.WriteBuffer(ctx, []byte("SSID")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := cs.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite() = %v, want nil (idempotent)", err)
		}
	}
	if err := cs.WriteBuffer(ctx, []byte("x")); !errors.Is(err, ErrWriteClosed) {
		t.Errorf("WriteBuffer after CloseWrite = %v, want ErrWriteClosed", err)
	}
	b, err := ss.ReadBuffer(ctx)
	if err != nil || string(b) != "SSID" {
		t.Fatalf("ReadBuffer() = %q, %v, want SSID, nil", b, err)
	}
	if _, err := ss.ReadBuffer(ctx); err != io.EOF {
		t.Fatalf("ReadBuffer() after half-close = %v, want io.EOF", err)
	}
	// The other direction still works.
	if err := ss.WriteBuffer(ctx, []byte("SSRM")); err != nil {
		t.Fatalf("WriteBuffer in the open direction = %v", err)
	}
	b, err = cs.ReadBuffer(ctx)
	if err != nil || string(b) != "SSRM" {
		t.Fatalf("ReadBuffer() = %q, %v, want SSRM, nil", b, err)
	}
	select {
	case <-cs.Done():
		t.Fatal("session ended with one direction still open")
	default:
	}
	if got := cs.Info().State; got != "write-closed" {
		t.Errorf("client state = %q, want write-closed", got)
	}
	if err := ss.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, cs)
	waitDone(t, ss)
	if _, err := cs.ReadBuffer(ctx); err != io.EOF {
		t.Errorf("ReadBuffer() after clean end = %v, want io.EOF", err)
	}
	if err := cs.CloseWrite(); err != nil {
		t.Errorf("CloseWrite() after end = %v, want nil", err)
	}
	cs.Abort(tunnelv1.AbortReason_ABORT_REASON_INTERNAL, 0, "late")
	if cs.Err() != nil {
		t.Errorf("Err() after Abort of an ended session = %v, want nil", cs.Err())
	}
}

func TestAbort(t *testing.T) {
	acc := newAcceptor()
	c, _, _, _ := pair(t, Config{}, Config{Accept: acc.hook})
	ctx := context.Background()
	cs, err := c.Open(ctx, &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	ss := acc.next(t)
	if err := cs.WriteBuffer(ctx, []byte("data nobody reads")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "data buffered at the server", func() bool { return ss.Buffered() > 0 })

	ss.Abort(tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, 0, "SFID in state SSID")
	ss.Abort(tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, 5, "second abort is ignored")
	want := &CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, ESID: 2, Text: "SFID in state SSID"}
	if diff := cmp.Diff(want, closeErr(t, ss.Err())); diff != "" {
		t.Errorf("aborting side Err() (-want +got):\n%s", diff)
	}
	if _, err := ss.ReadBuffer(ctx); closeErr(t, err).Reason != want.Reason {
		t.Errorf("ReadBuffer() after abort = %v, want the CloseError (unread data dropped)", err)
	}
	if ss.Buffered() != 0 {
		t.Errorf("Buffered() after abort = %d, want 0", ss.Buffered())
	}
	waitDone(t, cs)
	remote := *want
	remote.Remote = true
	if diff := cmp.Diff(&remote, closeErr(t, cs.Err())); diff != "" {
		t.Errorf("peer Err() (-want +got):\n%s", diff)
	}
	if err := cs.WriteBuffer(ctx, []byte("x")); closeErr(t, err).Reason != want.Reason {
		t.Errorf("WriteBuffer after abort = %v", err)
	}
	if _, err := cs.ReadBuffer(ctx); closeErr(t, err).Reason != want.Reason {
		t.Errorf("ReadBuffer after abort = %v", err)
	}
	if !strings.Contains(cs.Err().Error(), "ended by peer: protocol_violation (ESID 02): SFID in state SSID") {
		t.Errorf("Error() = %q", cs.Err().Error())
	}
}

func TestMuxAbortByID(t *testing.T) {
	acc := newAcceptor()
	c, s, _, _ := pair(t, Config{}, Config{Accept: acc.hook})
	cs, err := c.Open(context.Background(), &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	acc.next(t)
	if !s.Abort(cs.ID(), tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, 0, "operator") {
		t.Fatal("Abort(known id) = false, want true")
	}
	if s.Abort(99, tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, 0, "operator") {
		t.Error("Abort(unknown id) = true, want false")
	}
	waitDone(t, cs)
	ce := closeErr(t, cs.Err())
	if ce.Reason != tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL || ce.ESID != 5 || !ce.Remote {
		t.Errorf("Err() = %+v, want ADMIN_KILL, ESID 5, remote", ce)
	}
}

func TestReject(t *testing.T) {
	tests := []struct {
		name   string
		accept func(*Session)
		want   *CloseError
	}{
		{"hook rejects", (&acceptor{reject: true}).hook,
			&CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, ESID: 3, Text: "partner unknown", Remote: true}},
		{"no hook", nil,
			&CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, ESID: 8, Text: "this side accepts no sessions", Remote: true}},
		{"rejected later from another goroutine", func(s *Session) {
			go s.Reject(tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, 0, "dial 10.0.0.1:6619: refused")
		}, &CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, ESID: 8, Text: "dial 10.0.0.1:6619: refused", Remote: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s, _, _ := pair(t, Config{}, Config{Accept: tt.accept})
			_, err := c.Open(context.Background(), &tunnelv1.SessionOpen{})
			if diff := cmp.Diff(tt.want, closeErr(t, err)); diff != "" {
				t.Errorf("Open() error (-want +got):\n%s", diff)
			}
			if n := len(c.Sessions()); n != 0 {
				t.Errorf("client has %d sessions after refusal, want 0", n)
			}
			eventually(t, "server forgets the session", func() bool { return len(s.Sessions()) == 0 })
		})
	}
}

func TestAcceptStateErrors(t *testing.T) {
	acc := newAcceptor()
	c, _, _, _ := pair(t, Config{}, Config{Accept: acc.hook})
	cs, err := c.Open(context.Background(), &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	ss := acc.next(t)
	if err := cs.Accept(nil); !errors.Is(err, ErrNotPending) {
		t.Errorf("Accept on the opener's session = %v, want ErrNotPending", err)
	}
	if err := ss.Accept(nil); !errors.Is(err, ErrNotPending) {
		t.Errorf("second Accept = %v, want ErrNotPending", err)
	}
	if err := ss.Reject(tunnelv1.AbortReason_ABORT_REASON_REFUSED, 0, ""); !errors.Is(err, ErrNotPending) {
		t.Errorf("Reject after Accept = %v, want ErrNotPending", err)
	}
	for _, n := range []int{0, DefaultMaxBufferSize + 1} {
		if err := cs.WriteBuffer(context.Background(), make([]byte, n)); err == nil {
			t.Errorf("WriteBuffer(%d bytes) = nil, want an error", n)
		}
	}
}

// TestOpenCanceled: an Open whose peer never answers ends with ctx, and the
// session is aborted at the peer.
func TestOpenCanceled(t *testing.T) {
	pending := make(chan *Session, 1)
	c, s, _, _ := pair(t, Config{}, Config{Accept: func(s *Session) { pending <- s }})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Open(ctx, &tunnelv1.SessionOpen{})
		errc <- err
	}()
	ss := <-pending
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Open() = %v, want context.Canceled", err)
	}
	waitDone(t, ss)
	if err := ss.Accept(nil); closeErr(t, err).Reason != tunnelv1.AbortReason_ABORT_REASON_INTERNAL {
		t.Errorf("late Accept = %v, want the peer's INTERNAL abort", err)
	}
	if n := len(s.Sessions()); n != 0 {
		t.Errorf("server has %d sessions, want 0", n)
	}
}

// TestOpenAcceptedThenAborted: a session the peer accepts and aborts at once
// (the internal server broke the framing right after SSID) is open for its
// opener: Open returns the session, and the session carries the abort. Run
// many times, since the abort can arrive before Open's caller wakes.
func TestOpenAcceptedThenAborted(t *testing.T) {
	c, _, _, _ := pair(t, Config{}, Config{Accept: func(s *Session) {
		go func() {
			if s.Accept(nil) == nil {
				s.Abort(tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, 2, "framing")
			}
		}()
	}})
	for i := range 200 {
		cs, err := c.Open(context.Background(), &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatalf("round %d: Open() = %v, want the accepted session", i, err)
		}
		waitDone(t, cs)
		if ce := closeErr(t, cs.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION || ce.ESID != 2 || !ce.Remote {
			t.Fatalf("round %d: Err() = %+v, want the peer's PROTOCOL_VIOLATION with ESID 02", i, ce)
		}
	}
}

// TestStalledConsumer: one session whose reader reads nothing holds at most
// one window of data, while other sessions on the tunnel complete.
func TestStalledConsumer(t *testing.T) {
	const window = 128 << 10
	acc := newAcceptor()
	c, _, _, _ := pair(t, Config{Window: window}, Config{Window: window, Accept: acc.hook})
	ctx := context.Background()

	stalledC, err := c.Open(ctx, &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	stalledS := acc.next(t)
	big, bigSum := payload(7, 40, 8192) // about 160 KiB: more than the window
	writeErr := make(chan error, 1)
	go func() { writeErr <- writeAll(ctx, stalledC, big) }()

	const others = 20
	var wg sync.WaitGroup
	errs := make(chan error, others)
	for i := range others {
		cs, err := c.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		ss := acc.next(t)
		bufs, sum := payload(uint64(100+i), 50, 8192)
		wg.Go(func() {
			if err := writeAll(ctx, cs, bufs); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			got, _, err := readAll(ctx, ss)
			if err == nil && got != sum {
				err = errors.New("checksum mismatch")
			}
			errs <- err
			ss.CloseWrite()
		})
	}
	for range others {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()

	// Everything the stalled writer could send has arrived: the window is
	// exactly divided between bytes buffered and credit not used.
	eventually(t, "stalled session settles", func() bool {
		return stalledS.Buffered()+stalledC.Info().SendCredit == window && stalledC.Info().Queued == 0
	})
	if got := stalledS.Buffered(); got > window || got <= window-8192 {
		t.Errorf("stalled session Buffered() = %d, want in (%d, %d]", got, window-8192, window)
	}
	select {
	case err := <-writeErr:
		t.Fatalf("writer of the stalled session finished (%v) although its peer read nothing", err)
	default:
	}
	got, _, err := readAll(ctx, stalledS)
	if err != nil || got != bigSum {
		t.Fatalf("stalled session after release: err %v, checksum match %v", err, got == bigSum)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
}

// rawServer runs a client Mux against a test that plays the server by hand
// on the other pipe end.
func rawServer(t *testing.T, cfg Config) (*running, *pipeEnd) {
	pc, ps := newPipe(1024)
	cfg.Side = SideClient
	return start(t, pc, pc.close, cfg), ps
}

// TestCreditExceeded: a peer that sends more than its credit gets that
// session aborted while another session keeps working.
func TestCreditExceeded(t *testing.T) {
	const window = 100000
	acc := newAcceptor()
	m, raw := rawServer(t, Config{Window: window, Accept: acc.hook})
	ctx := context.Background()
	// The raw side is the server: it opens even ids.
	for _, id := range []uint64{2, 4} {
		if err := raw.Send(openFrame(id, window)); err != nil {
			t.Fatal(err)
		}
		o := recvUntil(t, raw, getOpened)
		if !o.GetAccepted() || o.GetSessionId() != id || o.GetInitialWindow() != window {
			t.Fatalf("SessionOpened = %v, want accepted id %d window %d", o, id, window)
		}
	}
	bad, good := acc.next(t), acc.next(t)

	// Exactly the window is fine; one byte more is not, also inside a batch.
	for _, f := range []*tunnelv1.Frame{dataFrame(2, make([]byte, 60000)), dataFrame(2, make([]byte, 30000), make([]byte, 10000), []byte{1})} {
		if err := raw.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	a := recvUntil(t, raw, getAbort)
	if a.GetSessionId() != 2 || a.GetReason() != tunnelv1.AbortReason_ABORT_REASON_CREDIT_EXCEEDED || a.GetEsidReason() != 5 {
		t.Errorf("SessionAbort = %v, want session 2, CREDIT_EXCEEDED, ESID 5", a)
	}
	waitDone(t, bad)
	if ce := closeErr(t, bad.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_CREDIT_EXCEEDED || ce.Remote {
		t.Errorf("Err() = %+v, want local CREDIT_EXCEEDED", ce)
	}

	// The other session still works both ways.
	if err := raw.Send(dataFrame(4, []byte("after"))); err != nil {
		t.Fatal(err)
	}
	b, err := good.ReadBuffer(ctx)
	if err != nil || string(b) != "after" {
		t.Fatalf("good session ReadBuffer() = %q, %v", b, err)
	}
	if err := good.WriteBuffer(ctx, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	d := recvUntil(t, raw, func(f *tunnelv1.Frame) (*tunnelv1.SessionData, bool) {
		d := f.GetSessionData()
		return d, d != nil
	})
	if d.GetSessionId() != 4 || string(d.GetBuffer()) != "reply" {
		t.Errorf("data = %v, want session 4 \"reply\"", d)
	}
	if m.Err() != nil {
		t.Errorf("Mux Err() = %v, want nil (tunnel keeps running)", m.Err())
	}
}

// TestPeerFrameErrors: frames that break one session abort only that session.
func TestPeerFrameErrors(t *testing.T) {
	win := func(id uint64, c uint32) *tunnelv1.Frame {
		return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionWindow{SessionWindow: &tunnelv1.SessionWindow{SessionId: id, Credit: c}}}
	}
	hc := &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionHalfClose{SessionHalfClose: &tunnelv1.SessionHalfClose{SessionId: 2}}}
	tests := []struct {
		name   string
		frames []*tunnelv1.Frame
		reason tunnelv1.AbortReason
	}{
		{"empty data", []*tunnelv1.Frame{dataFrame(2, nil)}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"data above max buffer", []*tunnelv1.Frame{dataFrame(2, make([]byte, DefaultMaxBufferSize+1))}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"data after half-close", []*tunnelv1.Frame{hc, dataFrame(2, []byte("x"))}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"empty buffer in a batch", []*tunnelv1.Frame{dataFrame(2, []byte("x"), []byte("y"), nil)}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"batch buffer above max buffer", []*tunnelv1.Frame{dataFrame(2, []byte("x"), make([]byte, DefaultMaxBufferSize+1))}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"zero credit", []*tunnelv1.Frame{win(2, 0)}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"credit overflow", []*tunnelv1.Frame{win(2, 1<<31-1), win(2, 1<<31-1)}, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
		{"opened for a peer session", []*tunnelv1.Frame{{Kind: &tunnelv1.Frame_SessionOpened{SessionOpened: &tunnelv1.SessionOpened{SessionId: 2, Accepted: true, InitialWindow: 1 << 20}}}},
			tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acc := newAcceptor()
			m, raw := rawServer(t, Config{Accept: acc.hook})
			if err := raw.Send(openFrame(2, DefaultWindow)); err != nil {
				t.Fatal(err)
			}
			recvUntil(t, raw, getOpened)
			s := acc.next(t)
			for _, f := range tt.frames {
				if err := raw.Send(f); err != nil {
					t.Fatal(err)
				}
			}
			a := recvUntil(t, raw, getAbort)
			if a.GetSessionId() != 2 || a.GetReason() != tt.reason {
				t.Errorf("SessionAbort = %v, want session 2 reason %v", a, tt.reason)
			}
			waitDone(t, s)
			if m.Err() != nil {
				t.Errorf("Mux Err() = %v, want nil", m.Err())
			}
		})
	}
}

// TestProtocolErrors: frames that break the tunnel as a whole stop Run with
// a *ProtocolError and end every session with TUNNEL_LOST.
func TestProtocolErrors(t *testing.T) {
	tests := []struct {
		name  string
		frame *tunnelv1.Frame
	}{
		{"frame without kind", &tunnelv1.Frame{}},
		{"open with id 0", openFrame(0, DefaultWindow)},
		{"open with the other side's parity", openFrame(3, DefaultWindow)},
		{"open with a reused id", openFrame(2, DefaultWindow)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acc := newAcceptor()
			m, raw := rawServer(t, Config{Accept: acc.hook})
			if err := raw.Send(openFrame(2, DefaultWindow)); err != nil {
				t.Fatal(err)
			}
			recvUntil(t, raw, getOpened)
			s := acc.next(t)
			if err := raw.Send(tt.frame); err != nil {
				t.Fatal(err)
			}
			err := m.wait(t)
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Run() = %v, want *ProtocolError", err)
			}
			if ce := closeErr(t, s.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST {
				t.Errorf("session Err() = %v, want TUNNEL_LOST", ce)
			}
		})
	}
}

// TestOpenRefusedByFrameRules: a SessionOpen with a window below the largest
// buffer is refused, as is one arriving during Shutdown.
func TestOpenWindowTooSmall(t *testing.T) {
	_, raw := rawServer(t, Config{Accept: newAcceptor().hook})
	if err := raw.Send(openFrame(2, 1000)); err != nil {
		t.Fatal(err)
	}
	o := recvUntil(t, raw, getOpened)
	if o.GetAccepted() || o.GetReason() != tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR {
		t.Errorf("SessionOpened = %v, want refusal with FRAME_ERROR", o)
	}
}

// TestStreamLoss: when the stream fails, every session ends with
// TUNNEL_LOST on both sides and Run returns the receive error.
func TestStreamLoss(t *testing.T) {
	acc := newAcceptor()
	pending := make(chan *Session, 1)
	c, s, pc, _ := pair(t, Config{Accept: func(s *Session) { pending <- s }}, Config{Accept: acc.hook})
	ctx := context.Background()
	var cs, ss []*Session
	for range 5 {
		x, err := c.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, x)
		ss = append(ss, acc.next(t))
	}
	// One session half-closed, one being opened by the server.
	if err := cs[0].CloseWrite(); err != nil {
		t.Fatal(err)
	}
	openErr := make(chan error, 1)
	go func() {
		_, err := s.Open(ctx, &tunnelv1.SessionOpen{})
		openErr <- err
	}()
	accepting := <-pending

	pc.close()
	for _, m := range []*running{c, s} {
		if err := m.wait(t); !errors.Is(err, errPipeClosed) {
			t.Errorf("Run() = %v, want the receive error", err)
		}
	}
	for _, x := range append(append(cs, ss...), accepting) {
		waitDone(t, x)
		if ce := closeErr(t, x.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST || ce.Remote || ce.ESID != 5 {
			t.Errorf("session %d Err() = %+v, want local TUNNEL_LOST, ESID 5", x.ID(), ce)
		}
	}
	if err := <-openErr; closeErr(t, err).Reason != tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST {
		t.Errorf("pending Open() = %v, want TUNNEL_LOST", err)
	}
	if _, err := c.Open(ctx, &tunnelv1.SessionOpen{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Open() after loss = %v, want ErrClosed", err)
	}
	if err := c.SendControl(ctx, &tunnelv1.Frame{Kind: &tunnelv1.Frame_Event{Event: &tunnelv1.Event{}}}); !errors.Is(err, ErrClosed) {
		t.Errorf("SendControl() after loss = %v, want ErrClosed", err)
	}
	if _, err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping() after loss = %v, want ErrClosed", err)
	}
	if err := c.Run(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("second Run() = %v, want ErrClosed", err)
	}
}

// TestContextEnd: ending Run's context stops the Mux; sessions end with
// TUNNEL_LOST, or SHUTDOWN after Shutdown.
func TestContextEnd(t *testing.T) {
	for _, shutdown := range []bool{false, true} {
		acc := newAcceptor()
		c, _, _, _ := pair(t, Config{}, Config{Accept: acc.hook})
		cs, err := c.Open(context.Background(), &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		want := tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST
		if shutdown {
			want = tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN
			if err := c.Shutdown(context.Background(), "stop"); err != nil {
				t.Fatal(err)
			}
		}
		c.cancel()
		if err := c.wait(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
		if ce := closeErr(t, cs.Err()); ce.Reason != want {
			t.Errorf("shutdown %v: Err() = %v, want %v", shutdown, ce, want)
		}
	}
}

// TestShutdown: Shutdown aborts every session at the peer with SHUTDOWN and
// refuses new ones in both directions.
func TestShutdown(t *testing.T) {
	acc := newAcceptor()
	control := make(chan *tunnelv1.Frame, 1)
	c, s, _, _ := pair(t, Config{Accept: acc.hook, Control: func(f *tunnelv1.Frame) { control <- f }}, Config{Accept: acc.hook})
	ctx := context.Background()
	var cs []*Session
	for range 3 {
		x, err := c.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		acc.next(t)
		cs = append(cs, x)
	}
	if err := s.Shutdown(ctx, "maintenance"); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	for _, x := range cs {
		waitDone(t, x)
		want := &CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, ESID: 5, Text: "maintenance", Remote: true}
		if diff := cmp.Diff(want, closeErr(t, x.Err())); diff != "" {
			t.Errorf("Err() (-want +got):\n%s", diff)
		}
	}
	if _, err := s.Open(ctx, &tunnelv1.SessionOpen{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Open() on the shut-down side = %v, want ErrClosed", err)
	}
	_, err := c.Open(ctx, &tunnelv1.SessionOpen{})
	if ce := closeErr(t, err); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN {
		t.Errorf("Open() towards the shut-down side = %v, want SHUTDOWN refusal", ce)
	}
	// Control frames still flow.
	drain := &tunnelv1.Frame{Kind: &tunnelv1.Frame_Drain{Drain: &tunnelv1.Drain{Reason: "maintenance"}}}
	if err := s.SendControl(ctx, drain); err != nil {
		t.Fatalf("SendControl() after Shutdown = %v", err)
	}
	select {
	case f := <-control:
		if f.GetDrain().GetReason() != "maintenance" {
			t.Errorf("control frame = %v, want the Drain", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain not received")
	}
}

// TestControlFrames: SendControl delivers frames in order to the peer's
// Control hook and refuses session frames.
func TestControlFrames(t *testing.T) {
	got := make(chan *tunnelv1.Frame, 10)
	c, _, _, _ := pair(t, Config{}, Config{Control: func(f *tunnelv1.Frame) { got <- f }})
	ctx := context.Background()
	frames := []*tunnelv1.Frame{
		{Kind: &tunnelv1.Frame_ConfigSnapshot{ConfigSnapshot: &tunnelv1.ConfigSnapshot{Version: 7}}},
		{Kind: &tunnelv1.Frame_ConfigChunk{ConfigChunk: &tunnelv1.ConfigChunk{Version: 7, CrlId: "ca1", Data: []byte{0x30}}}},
		{Kind: &tunnelv1.Frame_LicenseUpdate{LicenseUpdate: &tunnelv1.LicenseUpdate{License: []byte("lic")}}},
	}
	for _, f := range frames {
		if err := c.SendControl(ctx, f); err != nil {
			t.Fatalf("SendControl() = %v", err)
		}
	}
	for i, want := range frames {
		select {
		case f := <-got:
			if diff := cmp.Diff(want, f, protocmp.Transform()); diff != "" {
				t.Errorf("frame %d (-sent +received):\n%s", i, diff)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d not received", i)
		}
	}
	for _, f := range []*tunnelv1.Frame{{}, dataFrame(1, []byte("x")), openFrame(1, 1), {Kind: &tunnelv1.Frame_Ping{Ping: &tunnelv1.Ping{}}}} {
		if err := c.SendControl(ctx, f); err == nil {
			t.Errorf("SendControl(%v) = nil, want an error", f)
		}
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	// Either outcome is allowed for an already canceled context, but it must
	// not hang and must not report success without sending.
	if err := c.SendControl(ctx2, frames[0]); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("SendControl(canceled) = %v", err)
	}
}

// countingMetrics counts Metrics calls.
type countingMetrics struct {
	sent, received, started, ended, stalls, rtts atomic.Int64
	bytesSent, bytesReceived                     atomic.Int64
}

func (c *countingMetrics) DataSent(n int)      { c.sent.Add(1); c.bytesSent.Add(int64(n)) }
func (c *countingMetrics) DataReceived(n int)  { c.received.Add(1); c.bytesReceived.Add(int64(n)) }
func (c *countingMetrics) SessionStarted(bool) { c.started.Add(1) }
func (c *countingMetrics) SessionEnded(error)  { c.ended.Add(1) }
func (c *countingMetrics) WindowStall()        { c.stalls.Add(1) }
func (c *countingMetrics) RTT(d time.Duration) { c.rtts.Add(1) }

func TestPingAndMetrics(t *testing.T) {
	cm, sm := new(countingMetrics), new(countingMetrics)
	acc := newAcceptor()
	c, _, _, _ := pair(t, Config{Metrics: cm, Window: DefaultMaxBufferSize}, Config{Metrics: sm, Window: DefaultMaxBufferSize, Accept: acc.hook})
	ctx := context.Background()
	rtt, err := c.Ping(ctx)
	if err != nil || rtt <= 0 {
		t.Fatalf("Ping() = %v, %v, want a positive RTT", rtt, err)
	}
	if cm.rtts.Load() != 1 {
		t.Errorf("RTT reported %d times, want 1", cm.rtts.Load())
	}
	cs, err := c.Open(ctx, &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	ss := acc.next(t)
	bufs, sum := payload(3, 10, 60000)
	done := make(chan error, 1)
	go func() { done <- writeAll(ctx, cs, bufs) }()
	got, n, err := readAll(ctx, ss)
	if err != nil || got != sum {
		t.Fatalf("readAll: %v, checksum match %v", err, got == sum)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ss.CloseWrite()
	waitDone(t, cs)
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	if cm.bytesSent.Load() != total || sm.bytesReceived.Load() != total || sm.received.Load() != int64(n) {
		t.Errorf("metrics: sent %d bytes, received %d bytes in %d buffers; want %d bytes, %d buffers",
			cm.bytesSent.Load(), sm.bytesReceived.Load(), sm.received.Load(), total, n)
	}
	if cm.stalls.Load() == 0 {
		t.Error("no window stall counted although 10 buffers of up to 60,000 bytes went through a 99,999-byte window")
	}
	eventually(t, "sessions counted", func() bool {
		return cm.started.Load() == 1 && sm.started.Load() == 1 && cm.ended.Load() == 1 && sm.ended.Load() == 1
	})
}

// TestAnswersPing: the Mux answers a peer's Ping with a Pong echoing nonce
// and time.
func TestAnswersPing(t *testing.T) {
	_, raw := rawServer(t, Config{})
	ping := &tunnelv1.Ping{Nonce: 42}
	if err := raw.Send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_Ping{Ping: ping}}); err != nil {
		t.Fatal(err)
	}
	p := recvUntil(t, raw, func(f *tunnelv1.Frame) (*tunnelv1.Pong, bool) { return f.GetPong(), f.GetPong() != nil })
	if p.GetNonce() != 42 {
		t.Errorf("Pong nonce = %d, want 42", p.GetNonce())
	}
}

// TestDataBatches: a Mux takes a SessionData carrying several buffers
// (more_buffers) as those buffers in order, within the credit; and it sends
// a session's queued buffers as one batch only once the peer has announced
// the capability, one per frame before.
func TestDataBatches(t *testing.T) {
	acc := newAcceptor()
	m, raw := rawServer(t, Config{Accept: acc.hook})
	ctx := context.Background()
	if err := raw.Send(openFrame(2, DefaultWindow)); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, raw, getOpened)
	s := acc.next(t)

	// Receiving: one frame, three buffers, read in order.
	if err := raw.Send(dataFrame(2, []byte("one"), []byte("two"), []byte("three"))); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"one", "two", "three"} {
		b, err := s.ReadBuffer(ctx)
		if err != nil || string(b) != want {
			t.Fatalf("ReadBuffer() = %q, %v, want %q", b, err, want)
		}
	}

	// Sending: queue three buffers while the stream is held, then let it go.
	send := func(bufs ...string) [][]string {
		t.Helper()
		gate := make(chan struct{})
		// Hold the Mux's own end: its writer waits before each Send.
		mux := m.stream.(*pipeEnd)
		waiting := make(chan struct{}, 1)
		mux.mu.Lock()
		mux.gate, mux.gateWaiting = gate, waiting
		mux.mu.Unlock()
		if err := s.WriteBuffer(ctx, []byte("first")); err != nil {
			t.Fatal(err)
		}
		<-waiting // the writer holds "first" and waits for the gate
		for _, b := range bufs {
			if err := s.WriteBuffer(ctx, []byte(b)); err != nil {
				t.Fatal(err)
			}
		}
		mux.mu.Lock()
		mux.gate, mux.gateWaiting = nil, nil
		mux.mu.Unlock()
		close(gate)
		var frames [][]string
		for n := 0; n < 1+len(bufs); {
			d := recvUntil(t, raw, func(f *tunnelv1.Frame) (*tunnelv1.SessionData, bool) {
				d := f.GetSessionData()
				return d, d != nil
			})
			got := []string{string(d.GetBuffer())}
			for _, b := range d.GetMoreBuffers() {
				got = append(got, string(b))
			}
			frames = append(frames, got)
			n += len(got)
		}
		return frames
	}
	if got, want := send("a", "b", "c"), [][]string{{"first"}, {"a"}, {"b"}, {"c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("frames before the capability = %q, want %q", got, want)
	}
	m.UsePeerCapabilities([]string{"unknown", CapabilityDataBatches})
	if got, want := send("a", "b", "c"), [][]string{{"first"}, {"a", "b", "c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("frames with the capability = %q, want %q", got, want)
	}
	m.UsePeerCapabilities(nil)
	if got, want := send("x", "y"), [][]string{{"first"}, {"x"}, {"y"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("frames after the capability was withdrawn = %q, want %q", got, want)
	}
}

// TestCommonCapabilities: Welcome announces what both sides have.
func TestCommonCapabilities(t *testing.T) {
	if got := CommonCapabilities([]string{"other", CapabilityDataBatches}); !slices.Equal(got, []string{CapabilityDataBatches}) {
		t.Errorf("CommonCapabilities(other, batches) = %q", got)
	}
	if got := CommonCapabilities([]string{"other"}); len(got) != 0 {
		t.Errorf("CommonCapabilities(other) = %q, want none", got)
	}
}
