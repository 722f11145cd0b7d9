package client_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"smartproxy/client/clienttest"
	"smartproxy/oftp2"
)

// BenchmarkRelayToInternal measures the client's relay from the tunnel to the internal OFTP2
// server over real TLS and TCP on loopback: the harness server writes 65,535-byte exchange
// buffers on one session, the client passes them to an internal server that reads and discards
// them. Run with
//
//	go test -run '^$' -bench RelayToInternal -benchtime 3000x ./client/
func BenchmarkRelayToInternal(b *testing.B) {
	const size = 65535
	received := make(chan int64, 1)
	internal := newScripted(b, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer()
		w.WriteCommand(responderSSID)
		var n int64
		for {
			buf, err := r.ReadBuffer()
			if err != nil {
				break
			}
			n += int64(len(buf))
		}
		received <- n
	})
	e := newEnv(b, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(b, waitLong)
	conn.WaitConfig(b, waitLong)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(b, clienttest.PartnerID, clienttest.PartnerPassword))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ts.ReadBuffer(ctx); err != nil { // the internal server's SSID
		b.Fatal(err)
	}
	buf := append([]byte{byte(oftp2.CodeDATA)}, bytes.Repeat([]byte{0x80 | 63}, size-1)...)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := ts.WriteBuffer(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	ts.CloseWrite()
	n := <-received
	b.StopTimer()
	if n != int64(b.N)*size {
		b.Fatalf("internal server received %d bytes, want %d", n, int64(b.N)*size)
	}
}

// BenchmarkRelayFromInternal measures the other direction: the internal server writes
// 65,535-byte exchange buffers, the client passes them to the tunnel, the harness server reads
// them. Run with
//
//	go test -run '^$' -bench RelayFromInternal -benchtime 3000x ./client/
func BenchmarkRelayFromInternal(b *testing.B) {
	const size = 65535
	buf := append([]byte{byte(oftp2.CodeDATA)}, bytes.Repeat([]byte{0x80 | 63}, size-1)...)
	internal := newScripted(b, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer()
		for range b.N {
			if err := w.WriteBuffer(buf); err != nil {
				return
			}
		}
		// Returning closes the connection: the client half-closes the session.
	})
	e := newEnv(b, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(b, waitLong)
	conn.WaitConfig(b, waitLong)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(b, clienttest.PartnerID, clienttest.PartnerPassword))
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for {
		got, err := ts.ReadBuffer(ctx)
		if err != nil {
			break
		}
		n += int64(len(got))
	}
	b.StopTimer()
	ts.CloseWrite()
	if n != int64(b.N)*size {
		b.Fatalf("received %d bytes, want %d", n, int64(b.N)*size)
	}
}
