package tunnel

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// TestWriterOrder: control frames overtake queued data, and sessions with
// data take turns buffer by buffer, so a bulk session delays another by one
// buffer at most.
func TestWriterOrder(t *testing.T) {
	acc := newAcceptor()
	pc, ps := newPipe(1024)
	cfg := Config{Window: 8 << 20, ReconcileInterval: -1, PingInterval: -1}
	cfg.Side = SideClient
	c := start(t, pc, pc.close, cfg)
	cfg.Side, cfg.Accept = SideServer, acc.hook
	start(t, ps, ps.close, cfg)
	ctx := context.Background()
	var sess []*Session
	for range 3 {
		s, err := c.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		acc.next(t)
		sess = append(sess, s)
	}
	bulk, small1, small2 := sess[0], sess[1], sess[2]

	// Hold the writer in Send with the first buffer while queues fill up.
	gate, waiting := make(chan struct{}), make(chan struct{}, 1)
	pc.mu.Lock()
	pc.gate, pc.gateWaiting, pc.rec = gate, waiting, true
	pc.mu.Unlock()
	if err := bulk.WriteBuffer(ctx, []byte("bulk 0")); err != nil {
		t.Fatal(err)
	}
	<-waiting
	for i := 1; i < 40; i++ {
		if err := bulk.WriteBuffer(ctx, []byte(fmt.Sprintf("bulk %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*Session{small1, small2} {
		if err := s.WriteBuffer(ctx, []byte(fmt.Sprintf("small %d", s.ID()))); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	controlErr := make(chan error, 1)
	go func() {
		controlErr <- c.SendControl(ctx, &tunnelv1.Frame{Kind: &tunnelv1.Frame_Hello{Hello: &tunnelv1.Hello{ClientId: "config push"}}})
	}()
	eventually(t, "control frame queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ctrl.len() == 1
	})
	close(gate)
	if err := <-controlErr; err != nil {
		t.Fatal(err)
	}
	eventually(t, "all frames sent", func() bool {
		pc.mu.Lock()
		defer pc.mu.Unlock()
		return len(pc.sent) == 1+40+2+2
	})

	var got []string
	pc.mu.Lock()
	for _, f := range pc.sent[:8] {
		switch k := f.Kind.(type) {
		case *tunnelv1.Frame_SessionData:
			got = append(got, fmt.Sprintf("%d:%s", k.SessionData.SessionId, k.SessionData.Buffer))
		case *tunnelv1.Frame_SessionHalfClose:
			got = append(got, fmt.Sprintf("%d:half-close", k.SessionHalfClose.SessionId))
		case *tunnelv1.Frame_Hello:
			got = append(got, "control")
		default:
			got = append(got, fmt.Sprintf("%T", k))
		}
	}
	pc.mu.Unlock()
	// The writer was holding "bulk 0" when the gate closed; then the control
	// frame, then the sessions in turn (bulk was first in the ready queue).
	want := []string{"1:bulk 0", "control", "1:bulk 1", "3:small 3", "5:small 5", "1:bulk 2", "3:half-close", "5:half-close"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("send order (-want +got):\n%s", diff)
	}
}

func TestQueue(t *testing.T) {
	var q queue[int]
	var model []int
	r := rand.New(rand.NewPCG(1, 2))
	next := 0
	for i := range 10000 {
		if r.IntN(3) > 0 {
			q.push(next)
			model = append(model, next)
			next++
		} else {
			v, ok := q.pop()
			if ok != (len(model) > 0) {
				t.Fatalf("step %d: pop() ok = %v, want %v", i, ok, len(model) > 0)
			}
			if ok {
				if v != model[0] {
					t.Fatalf("step %d: pop() = %d, want %d", i, v, model[0])
				}
				model = model[1:]
			}
		}
		if q.len() != len(model) {
			t.Fatalf("step %d: len() = %d, want %d", i, q.len(), len(model))
		}
	}
	var drained []int
	q.reset(func(v int) { drained = append(drained, v) })
	if diff := cmp.Diff(model, drained); diff != "" {
		t.Errorf("reset() handed back (-want +got):\n%s", diff)
	}
	if q.len() != 0 {
		t.Errorf("len() after reset = %d, want 0", q.len())
	}
}
