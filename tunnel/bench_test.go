package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/proctest"
	"smartproxy/tunnel/transport"
)

// Benchmarks of the tunnel against a plain TLS 1.3 copy on loopback, in
// the same process and with the same buffer sizes. Results and the command
// that reproduces them are in docs/benchmarks.md.
//
//	go test -run '^$' -bench 'Throughput' -benchmem -count 5 ./tunnel

// benchBufSizes are the largest OFTP2 exchange buffer and a small one.
var benchBufSizes = []int{DefaultMaxBufferSize, 4096}

// benchGRPC is the gRPC configuration the Throughput benchmark uses: the
// product's (ServerOptions and DialOptions, fixed windows of
// transport.DefaultFlowWindow as NewServer and NewClient set them).
var benchGRPC = grpcOptions{tuned: true, streamWindow: transport.DefaultFlowWindow, connWindow: transport.DefaultFlowWindow}

// BenchmarkThroughput compares, for each buffer size: a mutual-TLS 1.3 TCP
// copy (the baseline), one session through the tunnel with the default
// window, the same with SessionData batches (as smartproxy-server and
// smartproxy-client negotiate them), with a 1 MiB window, and 100 concurrent
// sessions through one tunnel (aggregate, default window). One op moves one
// buffer.
func BenchmarkThroughput(b *testing.B) {
	p := newTestPKI(b)
	for _, size := range benchBufSizes {
		b.Run(fmt.Sprintf("buf=%d/tls", size), func(b *testing.B) { benchTLSCopy(b, p, size) })
		b.Run(fmt.Sprintf("buf=%d/tunnel-1", size), func(b *testing.B) {
			benchTunnel(b, p, benchGRPC, Config{}, size, 1)
		})
		b.Run(fmt.Sprintf("buf=%d/tunnel-1-batches", size), func(b *testing.B) {
			benchTunnel(b, p, benchGRPC, Config{}, size, 1, CapabilityDataBatches)
		})
		b.Run(fmt.Sprintf("buf=%d/tunnel-1-window1M", size), func(b *testing.B) {
			benchTunnel(b, p, benchGRPC, Config{Window: 1 << 20}, size, 1)
		})
		b.Run(fmt.Sprintf("buf=%d/tunnel-100", size), func(b *testing.B) {
			benchTunnel(b, p, benchGRPC, Config{}, size, 100)
		})
	}
}

// BenchmarkTuning measures one session with 99,999-byte buffers for
// per-session windows and gRPC flow-control settings.
//
//	go test -run '^$' -bench 'Tuning' -benchmem -count 3 ./tunnel
func BenchmarkTuning(b *testing.B) {
	p := newTestPKI(b)
	grpcs := []struct {
		name string
		opts grpcOptions
	}{
		{"grpc=default", grpcOptions{}},
		{"grpc=tuned+bdp", grpcOptions{tuned: true}},
		{"grpc=tuned+win1M", grpcOptions{tuned: true, streamWindow: 1 << 20, connWindow: 1 << 20}},
		{"grpc=tuned+win4M", grpcOptions{tuned: true, streamWindow: 4 << 20, connWindow: 4 << 20}},
		{"grpc=tuned+win16M", grpcOptions{tuned: true, streamWindow: 16 << 20, connWindow: 16 << 20}},
	}
	for _, window := range []int{256 << 10, 512 << 10, 1 << 20} {
		for _, g := range grpcs {
			for _, sessions := range []int{1, 100} {
				b.Run(fmt.Sprintf("window=%dK/%s/sessions=%d", window>>10, g.name, sessions), func(b *testing.B) {
					benchTunnel(b, p, g.opts, Config{Window: window}, DefaultMaxBufferSize, sessions)
				})
			}
		}
	}
}

// benchTLSCopy writes b.N buffers of size bytes over a mutual-TLS 1.3
// connection on loopback and reads them on the other end.
func benchTLSCopy(b *testing.B, p *testPKI, size int) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	accepted := make(chan net.Conn, 1)
	wg.Go(func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
		}
		if err != nil {
			b.Error(err)
			close(accepted)
			return
		}
		accepted <- c
	})
	cc, err := tls.Dial("tcp", ln.Addr().String(), p.clientTLS())
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	sc, ok := <-accepted
	if !ok {
		b.FailNow()
	}
	defer sc.Close()

	out := make([]byte, size)
	in := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b, size)()
	wg.Go(func() {
		for range b.N {
			if _, err := cc.Write(out); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for range b.N {
		if _, err := io.ReadFull(sc, in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// benchTunnel moves b.N buffers of size bytes from client to server through
// a tunnel over mutual-TLS gRPC on loopback, spread over n sessions.
func benchTunnel(b *testing.B, p *testPKI, opts grpcOptions, cfg Config, size, n int, capabilities ...string) {
	acc := newAcceptor()
	cfg.ReconcileInterval, cfg.PingInterval = -1, -1
	scfg := cfg
	scfg.Accept = acc.hook
	gt := newGRPCTunnel(b, p, opts, cfg, scfg, false)
	gt.client.UsePeerCapabilities(capabilities)
	gt.server.UsePeerCapabilities(capabilities)
	ctx := context.Background()
	type pairT struct{ c, s *Session }
	pairs := make([]pairT, n)
	for i := range pairs {
		c, err := gt.client.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			b.Fatal(err)
		}
		pairs[i] = pairT{c, acc.next(b)}
	}
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b, size)()
	var wg sync.WaitGroup
	for i, pr := range pairs {
		count := b.N / n
		if i < b.N%n {
			count++
		}
		wg.Go(func() {
			for range count {
				if err := pr.c.WriteBuffer(ctx, buf); err != nil {
					b.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			// As a relay does: read a buffer, pass it on, release it.
			for range count {
				rb, err := pr.s.ReadBuffer(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				pr.s.ReleaseBuffer(rb)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
}

// reportCPU starts measuring the process's CPU time (user and system, every
// goroutine of both ends); the function it returns reports it per GiB moved
// in ops of size bytes, as "cpu-s/GiB". On a shared machine CPU per byte is
// the robust figure where MB/s is not; it is the unit of the end-to-end
// comparison with HAProxy (docs/benchmarks.md).
func reportCPU(b *testing.B, size int) func() {
	c0 := proctest.CPUTime(b)
	return func() {
		gib := float64(b.N) * float64(size) / (1 << 30)
		b.ReportMetric((proctest.CPUTime(b)-c0).Seconds()/gib, "cpu-s/GiB")
	}
}
