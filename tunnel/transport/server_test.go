package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"smartproxy/internal/backoff"
	"smartproxy/internal/pki"
)

// rawConnect opens a Connect stream with an arbitrary TLS configuration and
// returns the error of the first exchange (nil if the stream was accepted).
func rawConnect(t *testing.T, addr string, tlsCfg *tls.Config) error {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := Connect(ctx, cc)
	if err != nil {
		return err
	}
	return waitAccepted(s)
}

// TestServerRejectsClients connects clients that must be refused and checks
// the refusal and its single security event line.
func TestServerRejectsClients(t *testing.T) {
	p := newTestPKI(t)
	foreign, err := pki.NewCA("Foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	foreignClient, err := foreign.Issue(pki.Request{CommonName: "smartproxy-client", Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := p.ca.Issue(pki.Request{CommonName: "smartproxy-client", Usage: pki.UsageClient,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	serverUsageOnly, err := p.ca.Issue(pki.Request{CommonName: "smartproxy-client", Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	other, err := p.ca.Issue(pki.Request{CommonName: "other-client", Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}

	log, hook := newLogger(t)
	srv, err := NewServer(ServerConfig{
		Credentials:    static(p.server, p.ca),
		AllowedClients: AllowList{"smartproxy-client"},
		OnStream:       echoHandler,
		Logger:         log,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)

	clientTLS := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{Certificates: certs, RootCAs: p.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	}
	tls12 := clientTLS(p.client.TLS)
	tls12.MaxVersion = tls.VersionTLS12

	tests := []struct {
		name     string
		cfg      *tls.Config
		reason   string
		wantCode codes.Code
	}{
		{"certificate from another CA", clientTLS(foreignClient.TLS), RejectUnknownAuthority, codes.Unavailable},
		{"no certificate", clientTLS(), RejectNoCertificate, codes.Unavailable},
		{"expired certificate", clientTLS(expired.TLS), RejectExpired, codes.Unavailable},
		{"certificate without clientAuth", clientTLS(serverUsageOnly.TLS), RejectBadCertificate, codes.Unavailable},
		{"TLS 1.2", tls12, RejectHandshake, codes.Unavailable},
		{"identity not on the allow-list", clientTLS(other.TLS), RejectNotAllowed, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hook.Reset()
			err := rawConnect(t, addr, tt.cfg)
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("Connect() = %v, want code %v", err, tt.wantCode)
			}
			e := waitEntry(t, hook, "event="+EventClientRejected+" reason="+tt.reason, isRejection(tt.reason))
			if e.Level != logrus.WarnLevel {
				t.Errorf("rejection logged at %v, want warning", e.Level)
			}
			host, _, err := net.SplitHostPort(e.Data["remote_addr"].(string))
			if err != nil || host != "127.0.0.1" {
				t.Errorf("remote_addr = %v, want 127.0.0.1:port", e.Data["remote_addr"])
			}
			if n := countEntries(hook, func(e *logrus.Entry) bool { return e.Data["event"] == EventClientRejected }); n != 1 {
				t.Errorf("%d rejection events, want exactly 1:\n%s", n, dumpEntries(hook))
			}
		})
	}

	// The allowed client gets through.
	hook.Reset()
	if err := rawConnect(t, addr, clientTLS(p.client.TLS)); err != nil {
		t.Errorf("Connect(allowed client) = %v, want nil", err)
	}
	if n := countEntries(hook, func(e *logrus.Entry) bool { return e.Data["event"] == EventClientRejected }); n != 0 {
		t.Errorf("allowed client produced %d rejection events:\n%s", n, dumpEntries(hook))
	}
}

// TestAllowListRejectionLoggedOncePerConnection makes several calls on one
// refused connection: one event line, not one per call.
func TestAllowListRejectionLoggedOncePerConnection(t *testing.T) {
	p := newTestPKI(t)
	log, hook := newLogger(t)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), AllowedClients: AllowList{"someone-else"}, OnStream: echoHandler, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{Certificates: []tls.Certificate{p.client.TLS}, RootCAs: p.ca.Pool(), ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for i := range 3 {
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Check #%d = %v, want PermissionDenied", i, err)
		}
	}
	if n := countEntries(hook, isRejection(RejectNotAllowed)); n != 1 {
		t.Errorf("%d rejection events for one connection, want 1:\n%s", n, dumpEntries(hook))
	}
}

// TestAllowList checks the matching rules.
func TestAllowList(t *testing.T) {
	ca, err := pki.NewCA("CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "inside-1", DNSNames: []string{"Client.Example"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		list AllowList
		want bool
	}{
		{nil, true},
		{AllowList{"inside-1"}, true},
		{AllowList{"INSIDE-1"}, false},
		{AllowList{"client.example"}, true},
		{AllowList{"x", "Client.Example"}, true},
		{AllowList{"inside-2"}, false},
	}
	for _, tt := range tests {
		if got := tt.list.Allows(leaf.Cert); got != tt.want {
			t.Errorf("%q.Allows(CN inside-1, DNS Client.Example) = %v, want %v", tt.list, got, tt.want)
		}
	}
	if (AllowList{"x"}).Allows(nil) {
		t.Errorf("Allows(nil) = true, want false")
	}
}

// TestStreamAndPeers runs a stream between Client and Server and checks the
// identities each side sees and the source IP option.
func TestStreamAndPeers(t *testing.T) {
	p := newTestPKI(t)
	peers := make(chan PeerInfo, 4)
	srv, err := NewServer(ServerConfig{
		Credentials: static(p.server, p.ca),
		OnStream: func(ctx context.Context, peer PeerInfo, s ConnectServer) error {
			peers <- peer
			return echoHandler(ctx, peer, s)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	handles := make(chan *clientStreamHandle, 4)
	c, err := NewClient(ClientConfig{
		Address:     addr,
		SourceIP:    "127.0.0.2",
		Credentials: static(p.client, p.ca),
		Streams:     2,
		OnStream:    collectingHandler(handles),
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)

	seen := map[int]bool{}
	for range 2 {
		h := receiveHandle(t, handles)
		seen[h.index] = true
		if got, want := h.peer.Identity(), "smartproxy-server"; got != want {
			t.Errorf("client sees server identity %q, want %q", got, want)
		}
		if err := ping(t, h.stream, 42); err != nil {
			t.Errorf("ping over stream %d = %v", h.index, err)
		}
		select {
		case sp := <-peers:
			if got, want := sp.Identity(), "smartproxy-client"; got != want {
				t.Errorf("server sees client identity %q, want %q", got, want)
			}
			if host, _, _ := net.SplitHostPort(sp.RemoteAddr.String()); host != "127.0.0.2" {
				t.Errorf("server sees client address %v, want source IP 127.0.0.2", sp.RemoteAddr)
			}
		case <-time.After(testTimeout):
			t.Fatal("server handler not called")
		}
	}
	if !seen[0] || !seen[1] {
		t.Errorf("stream indexes = %v, want 0 and 1", seen)
	}
	if got := srv.Streams(); got != 2 {
		t.Errorf("Server.Streams() = %d, want 2", got)
	}
	if got := c.Active(); got != 2 {
		t.Errorf("Client.Active() = %d, want 2", got)
	}
}

// TestDrainReplacement: after a Drain frame with a short reconnect_after the
// client dials a replacement stream while the drained one keeps running; the
// draining server refuses it, and the client keeps backing off.
func TestDrainReplacement(t *testing.T) {
	p := newTestPKI(t)
	log, hook := newLogger(t)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), OnStream: echoHandler})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	handles := make(chan *clientStreamHandle, 4)
	c, err := NewClient(ClientConfig{Address: addr, Credentials: static(p.client, p.ca), OnStream: collectingHandler(handles), Logger: log,
		Backoff: backoff.Exponential{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	h := receiveHandle(t, handles)
	srv.Drain("rolling restart", time.Time{}, 10*time.Millisecond)
	if m, err := h.stream.Recv(); err != nil || m.GetFrame().GetDrain() == nil {
		t.Fatalf("Recv after Drain = %v, %v, want a Drain frame", m, err)
	}
	e := waitEntry(t, hook, "refused replacement stream", func(e *logrus.Entry) bool {
		err, _ := e.Data[logrus.ErrorKey].(error)
		return e.Message == "tunnel stream down" && err != nil && strings.Contains(err.Error(), "draining")
	})
	if e.Level != logrus.WarnLevel {
		t.Errorf("refused replacement logged at %v, want warning", e.Level)
	}
	if err := ping(t, h.stream, 9); err != nil {
		t.Errorf("ping on the drained stream = %v", err)
	}
	if got := c.Active(); got != 1 {
		t.Errorf("Client.Active() = %d, want 1 (the drained stream)", got)
	}
}

// TestClientRefusesForeignServer: the client trusts only its tunnel CA.
func TestClientRefusesForeignServer(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t) // a second, unrelated tunnel CA
	srv, err := NewServer(ServerConfig{Credentials: static(other.server, p.ca), OnStream: echoHandler})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	log, hook := newLogger(t)
	called := make(chan *clientStreamHandle, 1)
	c, err := NewClient(ClientConfig{Address: addr, Credentials: static(p.client, p.ca), OnStream: collectingHandler(called), Logger: log,
		Backoff: backoff.Exponential{Base: 10 * time.Millisecond, Cap: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	e := waitEntry(t, hook, "tunnel stream down", func(e *logrus.Entry) bool { return e.Message == "tunnel stream down" })
	err, _ = e.Data[logrus.ErrorKey].(error)
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("client error = %v, want one naming an unknown authority", err)
	}
	select {
	case <-called:
		t.Errorf("OnStream called for a server of another CA")
	default:
	}
}

// TestClientServerName: the server certificate must carry the dialled name.
func TestClientServerName(t *testing.T) {
	p := newTestPKI(t)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), OnStream: echoHandler})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)
	log, hook := newLogger(t)
	c, err := NewClient(ClientConfig{Address: addr, ServerName: "dmz.example.com", Credentials: static(p.client, p.ca),
		OnStream: collectingHandler(make(chan *clientStreamHandle)), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	e := waitEntry(t, hook, "tunnel stream down", func(e *logrus.Entry) bool { return e.Message == "tunnel stream down" })
	if err, _ := e.Data[logrus.ErrorKey].(error); err == nil || !strings.Contains(err.Error(), "dmz.example.com") {
		t.Errorf("client error = %v, want a name mismatch for dmz.example.com", err)
	}
}

// TestHealthAndDrain checks health on the tunnel port, the Drain frame, the
// refusal of new streams while draining, and Shutdown's forced fallback.
func TestHealthAndDrain(t *testing.T) {
	p := newTestPKI(t)
	log, hook := newLogger(t)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), OnStream: echoHandler, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	addr := ln.Addr().String()

	handles := make(chan *clientStreamHandle, 4)
	c, err := NewClient(ClientConfig{Address: addr, Credentials: static(p.client, p.ca), OnStream: collectingHandler(handles), Logger: log,
		Backoff: backoff.Exponential{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	clientDone := make(chan error, 1)
	go func() { clientDone <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-clientDone
	}()
	h := receiveHandle(t, handles)

	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{Certificates: []tls.Certificate{p.client.TLS}, RootCAs: p.ca.Pool(), ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		cctx, ccancel := context.WithTimeout(context.Background(), testTimeout)
		defer ccancel()
		r, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health Check(%q) = %v", service, err)
		}
		return r.Status
	}
	if got := check(TunnelServiceName); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health before drain = %v, want SERVING", got)
	}

	srv.Drain("maintenance", time.Now().Add(time.Minute), time.Hour)
	m, err := h.stream.Recv()
	if err != nil {
		t.Fatalf("Recv after Drain = %v", err)
	}
	d := m.GetFrame().GetDrain()
	if d == nil {
		t.Fatalf("frame after Drain = %v, want a Drain frame", m)
	}
	if d.Reason != "maintenance" || d.GetReconnectAfter().AsDuration() != time.Hour {
		t.Errorf("Drain frame = %v, want reason maintenance, reconnect_after 1h", d)
	}
	waitEntry(t, hook, "client noticing the drain", func(e *logrus.Entry) bool {
		return strings.Contains(e.Message, "draining") && e.Data["reconnect_in"] == "1h0m0s"
	})
	if got := check(TunnelServiceName); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while draining = %v, want NOT_SERVING", got)
	}
	err = rawConnect(t, addr, &tls.Config{Certificates: []tls.Certificate{p.client.TLS}, RootCAs: p.ca.Pool(), ServerName: "localhost"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "draining") {
		t.Errorf("Connect while draining = %v, want Unavailable (draining)", err)
	}
	// The existing stream still works.
	if err := ping(t, h.stream, 7); err != nil {
		t.Errorf("ping on the drained stream = %v", err)
	}

	// The client handler never returns by itself: Shutdown has to force it.
	sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer scancel()
	if err := srv.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded (forced)", err)
	}
	if got := srv.Streams(); got != 0 {
		t.Errorf("Streams() after Shutdown = %d, want 0", got)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	if _, err := h.stream.Recv(); err == nil {
		t.Errorf("client stream still open after Shutdown")
	}
	h.end <- nil
}

// TestShutdownGraceful: when handlers end in time, Shutdown returns nil.
func TestShutdownGraceful(t *testing.T) {
	p := newTestPKI(t)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), OnStream: echoHandler})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	// The client ends its stream as soon as it sees the Drain frame.
	c, err := NewClient(ClientConfig{Address: ln.Addr().String(), Credentials: static(p.client, p.ca),
		Backoff: backoff.Exponential{Base: time.Hour, Cap: time.Hour},
		OnStream: func(ctx context.Context, _ int, _ PeerInfo, s ConnectClient) error {
			for {
				m, err := s.Recv()
				if err != nil {
					return err
				}
				if m.GetFrame().GetDrain() != nil {
					return s.CloseSend()
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	clientDone := make(chan error, 1)
	go func() { clientDone <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-clientDone
	}()
	deadline := time.Now().Add(testTimeout)
	for srv.Streams() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	sctx, scancel := context.WithTimeout(context.Background(), testTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
}

func TestConfigErrors(t *testing.T) {
	p := newTestPKI(t)
	creds := static(p.server, p.ca)
	serverTests := []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"no credentials", ServerConfig{OnStream: echoHandler}, "credentials"},
		{"no handler", ServerConfig{Credentials: creds}, "OnStream"},
		{"empty allow entry", ServerConfig{Credentials: creds, OnStream: echoHandler, AllowedClients: AllowList{""}}, "allow-list"},
		{"one window", ServerConfig{Credentials: creds, OnStream: echoHandler, InitialWindowSize: 1 << 20}, "both"},
		{"small window", ServerConfig{Credentials: creds, OnStream: echoHandler, InitialWindowSize: 1024, InitialConnWindowSize: 1024}, "64 KiB"},
		{"small messages", ServerConfig{Credentials: creds, OnStream: echoHandler, MaxMessageSize: 100003}, "MaxMessageSize"},
		{"negative timeout", ServerConfig{Credentials: creds, OnStream: echoHandler, PingTimeout: -1}, "negative"},
	}
	for _, tt := range serverTests {
		t.Run("server "+tt.name, func(t *testing.T) {
			_, err := NewServer(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer(%s) = %v, want error containing %q", tt.name, err, tt.want)
			}
		})
	}
	h := collectingHandler(nil)
	clientTests := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"no address", ClientConfig{Credentials: creds, OnStream: h}, "empty server address"},
		{"no credentials", ClientConfig{Address: "x", OnStream: h}, "credentials"},
		{"no handler", ClientConfig{Address: "x", Credentials: creds}, "OnStream"},
		{"bad source IP", ClientConfig{Address: "x", Credentials: creds, OnStream: h, SourceIP: "eth0"}, "not an IP"},
		{"short keepalive", ClientConfig{Address: "x", Credentials: creds, OnStream: h, KeepaliveTime: time.Second}, "10s"},
		{"bad backoff", ClientConfig{Address: "x", Credentials: creds, OnStream: h, Backoff: backoff.Exponential{Base: time.Minute, Cap: time.Second}}, "cap"},
		{"negative streams", ClientConfig{Address: "x", Credentials: creds, OnStream: h, Streams: -1}, "negative"},
		{"bad IPv6", ClientConfig{Address: "fe80::1::2", Credentials: creds, OnStream: h}, "invalid server address"},
		{"no host", ClientConfig{Address: ":2878", Credentials: creds, OnStream: h}, "no host"},
	}
	for _, tt := range clientTests {
		t.Run("client "+tt.name, func(t *testing.T) {
			_, err := NewClient(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewClient(%s) = %v, want error containing %q", tt.name, err, tt.want)
			}
		})
	}
}

func TestSplitHostPortDefault(t *testing.T) {
	tests := []struct{ in, host, port string }{
		{"dmz.example.com", "dmz.example.com", "2878"},
		{"dmz.example.com:1234", "dmz.example.com", "1234"},
		{"127.0.0.1", "127.0.0.1", "2878"},
		{"[::1]:99", "::1", "99"},
		{"::1", "::1", "2878"},
		{"[::1]", "::1", "2878"},
	}
	for _, tt := range tests {
		h, p, err := splitHostPortDefault(tt.in, DefaultPort)
		if err != nil || h != tt.host || p != tt.port {
			t.Errorf("splitHostPortDefault(%q) = %q, %q, %v, want %q, %q", tt.in, h, p, err, tt.host, tt.port)
		}
	}
}
