package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/backoff"
	"smartproxy/tunnel"
)

// muxSide collects the sessions of every Mux on one side of the tunnel.
type muxSide struct {
	mu       sync.Mutex
	sessions []*tunnel.Session
	muxes    chan *tunnel.Mux
	runErrs  chan error
}

func newMuxSide() *muxSide {
	return &muxSide{muxes: make(chan *tunnel.Mux, 4), runErrs: make(chan error, 4)}
}

func (m *muxSide) add(s *tunnel.Session) {
	m.mu.Lock()
	m.sessions = append(m.sessions, s)
	m.mu.Unlock()
}

func (m *muxSide) all() []*tunnel.Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*tunnel.Session(nil), m.sessions...)
}

// config returns a Mux configuration that accepts every session the peer
// opens and records it.
func (m *muxSide) config(side tunnel.Side) tunnel.Config {
	return tunnel.Config{
		Side: side,
		Accept: func(s *tunnel.Session) {
			m.add(s)
			s.Accept(nil)
		},
		ReconcileInterval: -1,
	}
}

// run runs a Mux over stream until it stops.
func (m *muxSide) run(ctx context.Context, side tunnel.Side, stream tunnel.Stream) error {
	mux, err := tunnel.New(stream, m.config(side))
	if err != nil {
		return err
	}
	m.muxes <- mux
	err = mux.Run(ctx)
	m.runErrs <- err
	return err
}

func (m *muxSide) nextMux(t *testing.T) *tunnel.Mux {
	t.Helper()
	select {
	case mux := <-m.muxes:
		return mux
	case <-time.After(testTimeout):
		t.Fatalf("no Mux started within %v", testTimeout)
		return nil
	}
}

// TestTunnelLost runs multiplexers on both sides of a real mTLS tunnel through
// a relay, opens sessions from both ends, cuts the relay's sockets and checks
// that every session on both sides ends with ABORT_REASON_TUNNEL_LOST and that
// the client comes back with a new stream.
func TestTunnelLost(t *testing.T) {
	p := newTestPKI(t)
	serverSide, clientSide := newMuxSide(), newMuxSide()
	srv, err := NewServer(ServerConfig{
		Credentials:  static(p.server, p.ca),
		PingInterval: time.Second, // short keepalive: a dead path is found in about 2s
		PingTimeout:  time.Second,
		OnStream: func(ctx context.Context, _ PeerInfo, s ConnectServer) error {
			return serverSide.run(ctx, tunnel.SideServer, ServerStream(s))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	fwd := newForwarder(t, addr)
	c, err := NewClient(ClientConfig{
		Address:          fwd.addr(),
		ServerName:       "127.0.0.1",
		Credentials:      static(p.client, p.ca),
		KeepaliveTime:    10 * time.Second, // gRPC's minimum
		KeepaliveTimeout: time.Second,
		Backoff:          backoff.Exponential{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond},
		OnStream: func(ctx context.Context, _ int, _ PeerInfo, s ConnectClient) error {
			return clientSide.run(ctx, tunnel.SideClient, ClientStream(s))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)

	clientMux := clientSide.nextMux(t)
	serverMux := serverSide.nextMux(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const perSide = 3
	for i := range perSide {
		s, err := clientMux.Open(ctx, &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_OUTGOING, RouteName: fmt.Sprintf("route-%d", i)})
		if err != nil {
			t.Fatalf("client Open #%d = %v", i, err)
		}
		clientSide.add(s)
		s, err = serverMux.Open(ctx, &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_INCOMING, PartnerOdetteId: fmt.Sprintf("O00130000000000000%02d", i)})
		if err != nil {
			t.Fatalf("server Open #%d = %v", i, err)
		}
		serverSide.add(s)
	}
	// Data flows on one session before the cut.
	first := clientSide.all()[0]
	if err := first.WriteBuffer(ctx, []byte("I")); err != nil {
		t.Fatalf("WriteBuffer = %v", err)
	}
	var peerOfFirst *tunnel.Session
	for _, s := range serverSide.all() {
		if s.ID() == first.ID() {
			peerOfFirst = s
		}
	}
	if peerOfFirst == nil {
		t.Fatalf("server has no session %d", first.ID())
	}
	if b, err := peerOfFirst.ReadBuffer(ctx); err != nil || string(b) != "I" {
		t.Fatalf("ReadBuffer = %q, %v, want %q", b, err, "I")
	}

	if n := fwd.cut(); n != 1 {
		t.Fatalf("cut %d relayed connections, want 1", n)
	}

	for _, side := range []struct {
		name string
		m    *muxSide
	}{{"client", clientSide}, {"server", serverSide}} {
		sessions := side.m.all()
		if got, want := len(sessions), 2*perSide; got != want {
			t.Errorf("%s knows %d sessions, want %d", side.name, got, want)
		}
		for _, s := range sessions {
			select {
			case <-s.Done():
			case <-time.After(testTimeout):
				t.Fatalf("%s session %d still open %v after the cut", side.name, s.ID(), testTimeout)
			}
			var ce *tunnel.CloseError
			if err := s.Err(); !errors.As(err, &ce) || ce.Reason != tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST {
				t.Errorf("%s session %d ended with %v, want reason %v", side.name, s.ID(), err, tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST)
			}
		}
		select {
		case err := <-side.m.runErrs:
			if err == nil {
				t.Errorf("%s Mux.Run = nil after the cut, want the stream error", side.name)
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s Mux still running %v after the cut", side.name, testTimeout)
		}
	}

	// The client reconnects: a new stream with a new Mux on both sides, and
	// sessions work again.
	clientMux2 := clientSide.nextMux(t)
	serverSide.nextMux(t)
	s, err := clientMux2.Open(ctx, &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_OUTGOING, RouteName: "after-reconnect"})
	if err != nil {
		t.Fatalf("Open after reconnect = %v", err)
	}
	s.Abort(tunnelv1.AbortReason_ABORT_REASON_NORMAL, 0, "test done")
}
