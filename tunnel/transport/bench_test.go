package transport

import (
	"context"
	"crypto/tls"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// BenchmarkRoundTrip measures one Ping/Pong frame exchange over an
// established mTLS tunnel stream on loopback.
func BenchmarkRoundTrip(b *testing.B) {
	p := newTestPKI(b)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), OnStream: echoHandler})
	if err != nil {
		b.Fatal(err)
	}
	addr := benchServe(b, srv)
	handles := make(chan *clientStreamHandle, 1)
	c, err := NewClient(ClientConfig{Address: addr, Credentials: static(p.client, p.ca), OnStream: collectingHandler(handles)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	h := <-handles
	req := &tunnelv1.ConnectRequest{Frame: &tunnelv1.Frame{Kind: &tunnelv1.Frame_Ping{Ping: &tunnelv1.Ping{Nonce: 1}}}}
	b.ResetTimer()
	for range b.N {
		if err := h.stream.Send(req); err != nil {
			b.Fatal(err)
		}
		if _, err := h.stream.Recv(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnect measures establishing a tunnel stream: TCP, TLS 1.3
// handshake with client certificate (ECDSA P-256), HTTP/2 and the server
// accepting the stream.
func BenchmarkConnect(b *testing.B) {
	p := newTestPKI(b)
	srv, err := NewServer(ServerConfig{Credentials: static(p.server, p.ca), OnStream: echoHandler})
	if err != nil {
		b.Fatal(err)
	}
	addr := benchServe(b, srv)
	tlsCfg, err := ClientTLSConfig(static(p.client, p.ca), "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := connectOnce(addr, tlsCfg); err != nil {
			b.Fatal(err)
		}
	}
}

func connectOnce(addr string, tlsCfg *tls.Config) error {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Connect(ctx, cc)
	if err != nil {
		return err
	}
	return waitAccepted(s)
}

func benchServe(b *testing.B, srv *Server) string {
	b.Helper()
	ln, err := listenLoopback()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	b.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}
