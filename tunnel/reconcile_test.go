package tunnel

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// TestReconcileLostClose: when a close frame is lost, the next SessionSync
// ends the session that would otherwise leak.
func TestReconcileLostClose(t *testing.T) {
	tests := []struct {
		name string
		drop func(*tunnelv1.Frame) bool
		end  func(*Session) // how the client ends its side
	}{
		{
			name: "abort lost",
			drop: func(f *tunnelv1.Frame) bool { return f.GetSessionAbort() != nil },
			end:  func(s *Session) { s.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, 0, "partner hung up") },
		},
		{
			name: "half-close lost",
			drop: func(f *tunnelv1.Frame) bool { return f.GetSessionHalfClose() != nil },
			end:  func(s *Session) { s.CloseWrite() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acc := newAcceptor()
			pc, ps := newPipe(64)
			pc.drop = tt.drop
			c := start(t, pc, pc.close, Config{Side: SideClient, ReconcileInterval: -1})
			s := start(t, ps, ps.close, Config{Side: SideServer, ReconcileInterval: -1, Accept: acc.hook})
			ctx := context.Background()
			cs, err := c.Open(ctx, &tunnelv1.SessionOpen{})
			if err != nil {
				t.Fatal(err)
			}
			ss := acc.next(t)
			// The server half-closes first, so that a lost client half-close
			// leaves the client ended and the server waiting.
			if err := ss.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := cs.ReadBuffer(ctx); err.Error() != "EOF" {
				t.Fatalf("ReadBuffer() = %v, want EOF", err)
			}
			tt.end(cs)
			waitDone(t, cs)
			// Make sure the server has processed everything the client sent.
			if _, err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ss.Done():
				t.Fatal("server session ended although its close frame was dropped")
			default:
			}
			if got := len(s.Sessions()); got != 1 {
				t.Fatalf("server Sessions() = %d, want the leaked session", got)
			}

			// One SessionSync from the client repairs it.
			c.mu.Lock()
			c.queueCtrlLocked(&ctrlItem{sync: true})
			c.mu.Unlock()
			waitDone(t, ss)
			want := &CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION, ESID: 5,
				Text: "reconciliation: the peer does not know the session"}
			if diff := cmp.Diff(want, closeErr(t, ss.Err())); diff != "" {
				t.Errorf("server session Err() (-want +got):\n%s", diff)
			}
			if got := len(s.Sessions()); got != 0 {
				t.Errorf("server Sessions() = %d after reconciliation, want 0", got)
			}
		})
	}
}

// TestReconcilePeriodic: with a short interval, a lost abort is repaired
// without any call, by the timer.
func TestReconcilePeriodic(t *testing.T) {
	acc := newAcceptor()
	pc, ps := newPipe(64)
	pc.drop = func(f *tunnelv1.Frame) bool { return f.GetSessionAbort() != nil }
	c := start(t, pc, pc.close, Config{Side: SideClient, ReconcileInterval: 5e6})
	start(t, ps, ps.close, Config{Side: SideServer, Accept: acc.hook})
	cs, err := c.Open(context.Background(), &tunnelv1.SessionOpen{})
	if err != nil {
		t.Fatal(err)
	}
	ss := acc.next(t)
	cs.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, 0, "")
	waitDone(t, ss)
	if ce := closeErr(t, ss.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION {
		t.Errorf("Err() = %v, want UNKNOWN_SESSION", ce)
	}
}

// TestReconcileRules drives a client Mux with hand-made SessionSync frames.
func TestReconcileRules(t *testing.T) {
	acc := newAcceptor()
	m, raw := rawServer(t, Config{Accept: acc.hook, ReconcileInterval: -1})
	ctx := context.Background()
	// sync sends a SessionSync and returns the frames the Mux sent until it
	// answered the Ping that follows it.
	sync := func(highest uint64, ids ...uint64) []*tunnelv1.Frame {
		t.Helper()
		if err := raw.Send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionSync{SessionSync: &tunnelv1.SessionSync{
			SessionIds: ids, HighestPeerSessionId: highest,
		}}}); err != nil {
			t.Fatal(err)
		}
		// A Pong proves the Mux has processed the SessionSync.
		if err := raw.Send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_Ping{Ping: &tunnelv1.Ping{Nonce: highest}}}); err != nil {
			t.Fatal(err)
		}
		var before []*tunnelv1.Frame
		for range 100 {
			f := raw.recvTimeout(t)
			if f.GetPong() != nil {
				return before
			}
			before = append(before, f)
		}
		t.Fatal("no Pong among 100 frames")
		return nil
	}
	state := func(id uint64) string {
		for _, s := range m.Sessions() {
			if s.ID == id {
				return s.State
			}
		}
		return "gone"
	}

	type result struct {
		s   *Session
		err error
	}
	opened := make(chan result, 1)
	go func() {
		s, err := m.Open(ctx, &tunnelv1.SessionOpen{})
		opened <- result{s, err}
	}()
	o := recvUntil(t, raw, func(f *tunnelv1.Frame) (*tunnelv1.SessionOpen, bool) {
		return f.GetSessionOpen(), f.GetSessionOpen() != nil
	})
	if o.GetSessionId() != 1 {
		t.Fatalf("SessionOpen id = %d, want 1", o.GetSessionId())
	}

	// The peer has not seen session 1 yet: the session being opened stays,
	// and nothing is answered.
	if answer := sync(0); len(answer) != 0 {
		t.Errorf("answer to an empty SessionSync = %v, want nothing", answer)
	}
	if got := state(1); got != "opening" {
		t.Fatalf("after SessionSync without the session being opened: state %q, want opening", got)
	}
	if err := raw.Send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpened{SessionOpened: &tunnelv1.SessionOpened{
		SessionId: 1, Accepted: true, InitialWindow: DefaultWindow,
	}}}); err != nil {
		t.Fatal(err)
	}
	r := <-opened
	if r.err != nil {
		t.Fatalf("Open() = %v", r.err)
	}
	// A session the peer opened, and a SessionSync listing both.
	if err := raw.Send(openFrame(2, DefaultWindow)); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, raw, getOpened)
	peerOpened := acc.next(t)
	sync(1, 1, 2)
	if s1, s2 := state(1), state(2); s1 != "open" || s2 != "open" {
		t.Fatalf("states after a full SessionSync = %q, %q, want open, open", s1, s2)
	}

	// The Mux's own SessionSync lists both and the highest peer id.
	m.mu.Lock()
	m.queueCtrlLocked(&ctrlItem{sync: true})
	m.mu.Unlock()
	y := recvUntil(t, raw, func(f *tunnelv1.Frame) (*tunnelv1.SessionSync, bool) {
		return f.GetSessionSync(), f.GetSessionSync() != nil
	})
	if diff := cmp.Diff([]uint64{1, 2}, y.GetSessionIds()); diff != "" || y.GetHighestPeerSessionId() != 2 {
		t.Errorf("SessionSync ids (-want +got):\n%s highest %d, want 2", diff, y.GetHighestPeerSessionId())
	}

	// The peer forgot session 1, and lists session 8 that the Mux does not know.
	answer := sync(1, 2, 8)
	if s1, s2 := state(1), state(2); s1 != "gone" || s2 != "open" {
		t.Errorf("states = %q, %q, want gone, open", s1, s2)
	}
	if ce := closeErr(t, r.s.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION || ce.Remote {
		t.Errorf("session 1 Err() = %+v, want local UNKNOWN_SESSION", ce)
	}
	wantAnswer := []*tunnelv1.Frame{{Kind: &tunnelv1.Frame_SessionAbort{SessionAbort: &tunnelv1.SessionAbort{
		SessionId: 8, Reason: tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION, EsidReason: 5,
		Text: "reconciliation: session unknown to the peer",
	}}}}
	if diff := cmp.Diff(wantAnswer, answer, protocmp.Transform()); diff != "" {
		t.Errorf("answer to SessionSync (-want +got):\n%s", diff)
	}
	// The peer forgot its own session 2.
	sync(1)
	waitDone(t, peerOpened)
	if got := len(m.Sessions()); got != 0 {
		t.Errorf("Sessions() = %d, want 0", got)
	}
}
