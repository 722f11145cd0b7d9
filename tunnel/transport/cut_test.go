package transport

import (
	"context"
	"testing"
	"time"

	"smartproxy/internal/backoff"
)

// serverStreams hands every server-side stream's end to the test.
type serverStreamEnd struct {
	peer PeerInfo
	err  error
}

// TestCutConnection puts a relay between client and server, closes both of its
// sockets under an established stream, and checks that the stream ends on
// both sides and that the client reconnects.
func TestCutConnection(t *testing.T) {
	p := newTestPKI(t)
	started := make(chan PeerInfo, 4)
	ended := make(chan serverStreamEnd, 4)
	srv, err := NewServer(ServerConfig{
		Credentials: static(p.server, p.ca),
		OnStream: func(ctx context.Context, peer PeerInfo, s ConnectServer) error {
			started <- peer
			err := echoHandler(ctx, peer, s)
			ended <- serverStreamEnd{peer, err}
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	fwd := newForwarder(t, addr)
	handles := make(chan *clientStreamHandle, 4)
	c, err := NewClient(ClientConfig{
		Address:     fwd.addr(),
		ServerName:  "127.0.0.1",
		Credentials: static(p.client, p.ca),
		OnStream:    collectingHandler(handles),
		Backoff:     backoff.Exponential{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)

	h := receiveHandle(t, handles)
	first := waitPeer(t, started)
	if err := ping(t, h.stream, 1); err != nil {
		t.Fatalf("ping before the cut = %v", err)
	}

	if n := fwd.cut(); n != 1 {
		t.Fatalf("cut %d relayed connections, want 1", n)
	}
	if _, err := h.stream.Recv(); err == nil {
		t.Errorf("client Recv after the cut = nil error, want the stream to end")
	}
	h.end <- nil
	select {
	case e := <-ended:
		if e.err == nil {
			t.Errorf("server handler ended without an error after the cut")
		}
		if e.peer.RemoteAddr.String() != first.RemoteAddr.String() {
			t.Errorf("ended stream from %v, want %v", e.peer.RemoteAddr, first.RemoteAddr)
		}
	case <-time.After(testTimeout):
		t.Fatalf("server stream still running %v after the cut", testTimeout)
	}

	// The client reconnects through the relay: a new stream arrives.
	h2 := receiveHandle(t, handles)
	second := waitPeer(t, started)
	if second.RemoteAddr.String() == first.RemoteAddr.String() {
		t.Errorf("reconnected stream has the old address %v", second.RemoteAddr)
	}
	if err := ping(t, h2.stream, 2); err != nil {
		t.Errorf("ping after reconnect = %v", err)
	}
}

// TestDeadPathKeepalive freezes the relay (no FIN, no RST: packets vanish) and
// checks that keepalive ends the stream on both sides and the client
// reconnects once the path works again.
func TestDeadPathKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for gRPC's 10s minimum client keepalive")
	}
	p := newTestPKI(t)
	started := make(chan PeerInfo, 4)
	ended := make(chan serverStreamEnd, 4)
	srv, err := NewServer(ServerConfig{
		Credentials:  static(p.server, p.ca),
		PingInterval: time.Second, // gRPC's minimum
		PingTimeout:  time.Second,
		OnStream: func(ctx context.Context, peer PeerInfo, s ConnectServer) error {
			started <- peer
			err := echoHandler(ctx, peer, s)
			ended <- serverStreamEnd{peer, err}
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	fwd := newForwarder(t, addr)
	handles := make(chan *clientStreamHandle, 4)
	c, err := NewClient(ClientConfig{
		Address:          fwd.addr(),
		ServerName:       "127.0.0.1",
		Credentials:      static(p.client, p.ca),
		OnStream:         collectingHandler(handles),
		KeepaliveTime:    10 * time.Second, // gRPC's minimum
		KeepaliveTimeout: time.Second,
		Backoff:          backoff.Exponential{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	h := receiveHandle(t, handles)
	waitPeer(t, started)
	if err := ping(t, h.stream, 1); err != nil {
		t.Fatalf("ping before freezing = %v", err)
	}

	fwd.freeze()
	select {
	case e := <-ended:
		if e.err == nil {
			t.Errorf("server handler ended without an error on a dead path")
		}
	case <-time.After(testTimeout):
		t.Fatalf("server stream still running %v after the path died", testTimeout)
	}
	recvErr := make(chan error, 1)
	go func() {
		_, err := h.stream.Recv()
		recvErr <- err
	}()
	select {
	case err := <-recvErr:
		if err == nil {
			t.Errorf("client Recv on a dead path = nil error")
		}
	case <-time.After(testTimeout):
		t.Fatalf("client stream still open %v after the path died", testTimeout)
	}
	h.end <- nil
	fwd.thaw()
	h2 := receiveHandle(t, handles)
	if err := ping(t, h2.stream, 2); err != nil {
		t.Errorf("ping after reconnect = %v", err)
	}
}

func waitPeer(t *testing.T, ch <-chan PeerInfo) PeerInfo {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(testTimeout):
		t.Fatalf("no server stream within %v", testTimeout)
		return PeerInfo{}
	}
}
