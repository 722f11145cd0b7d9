package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel"
)

// floodPeer is a tunnel peer that sends SessionOpen frames as fast as the Mux reads them and
// reads nothing: every Send of the Mux blocks until the stream's context ends, as a gRPC Send
// does when the peer's flow-control window is full.
type floodPeer struct {
	ctx   context.Context
	limit uint64        // the most frames Recv hands out; then it waits for ctx
	sent  atomic.Uint64 // frames handed to the Mux
}

func (p *floodPeer) Recv() (*tunnelv1.Frame, error) {
	n := p.sent.Load()
	if n >= p.limit {
		<-p.ctx.Done()
		return nil, p.ctx.Err()
	}
	p.sent.Add(1)
	// The client opens odd ids; each is valid and new, and each needs an answer.
	id := 2*n + 1
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpen{SessionOpen: &tunnelv1.SessionOpen{
		SessionId: id, InitialWindow: 1 << 20,
	}}}, nil
}

func (p *floodPeer) Send(*tunnelv1.Frame) error {
	<-p.ctx.Done()
	return p.ctx.Err()
}

// TestControlFlood: a peer that opens session after session without ever reading the answers
// makes the Mux queue one refusal per SessionOpen. The backlog is bounded: past it the Mux stops
// with a *ProtocolError and logs why, instead of growing its queue without limit.
func TestControlFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Far more than any backlog a Mux may keep; the Mux must stop well before.
	peer := &floodPeer{ctx: ctx, limit: 1 << 20}
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	m, err := tunnel.New(peer, tunnel.Config{Side: tunnel.SideServer, Logger: log, PingInterval: -1, ReconcileInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Done():
	case <-ctx.Done():
		t.Fatalf("the Mux kept reading %d unanswered SessionOpen frames without stopping", peer.sent.Load())
	}
	// The stream's context ends, as when the server drops the connection: the blocked Send returns.
	cancel()
	err = <-done
	var pe *tunnel.ProtocolError
	if !errors.As(err, &pe) || !strings.Contains(pe.Text, "control frames waiting") {
		t.Errorf("Run() = %v, want a *ProtocolError about the control backlog", err)
	}
	if n := peer.sent.Load(); n >= peer.limit {
		t.Errorf("the Mux read all %d frames of the flood", n)
	}
	found := false
	for _, e := range hook.AllEntries() {
		if e.Message == "tunnel mux stopped" && strings.Contains(fmt.Sprint(e.Data[logrus.ErrorKey]), "control frames waiting") {
			found = true
		}
	}
	if !found {
		t.Errorf("no \"tunnel mux stopped\" line with the control backlog error among %d log lines", len(hook.AllEntries()))
	}
}
