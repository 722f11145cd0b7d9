package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// benchFileSize is the file each benchmark iteration transfers.
const benchFileSize = 16 << 20

// BenchmarkTransferThroughProxy measures one partner session delivering a 16 MiB U file (with
// EERP) through the whole incoming path on loopback: partner TLS, admission, both validator
// directions, the tunnel over mTLS gRPC, the test client and the internal responder.
func BenchmarkTransferThroughProxy(b *testing.B) {
	p := servertest.NewPKI(b)
	env := newEnv(b, p, p.SecurityConfig(b, servertest.EnabledPartner("O0013PARTNER")), envOptions{logLevel: logrus.WarnLevel})
	leaf := p.Partner(b, "O0013PARTNER", nil)
	path, _ := writeFile(b, b.TempDir(), "bench.bin", randomBytes(b, benchFileSize))
	addr := env.s.PartnerAddr()
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := sendFiles(b, addr, leaf, partnerTLS(p), "O0013PARTNER", nil,
			endpoint.OutgoingFile{Path: path, DatasetName: "BENCH", Stamp: endpoint.StampOf(time.Now().Add(time.Duration(i) * time.Second))})
		if err != nil || res.Err() != nil {
			b.Fatalf("transfer: %v / %v", err, res.Err())
		}
	}
}

// BenchmarkTransferDirect is the baseline: the same transfer from the partner endpoint to the
// responder endpoint over TLS on loopback, without the proxy.
func BenchmarkTransferDirect(b *testing.B) {
	p := servertest.NewPKI(b)
	ep, err := endpoint.New(endpoint.Config{Role: endpoint.Responder, ID: "O0013COMPANY", ReceiveDir: b.TempDir(), Timeout: 20 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{p.Company.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.PartnerCA.Pool(),
	})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); ep.Run(ctx, c) }()
		}
	}()
	b.Cleanup(func() { ln.Close(); cancel(); wg.Wait() })
	leaf := p.Partner(b, "O0013PARTNER", nil)
	path, _ := writeFile(b, b.TempDir(), "bench.bin", randomBytes(b, benchFileSize))
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := sendFiles(b, ln.Addr().String(), leaf, partnerTLS(p), "O0013PARTNER", nil,
			endpoint.OutgoingFile{Path: path, DatasetName: "BENCH", Stamp: endpoint.StampOf(time.Now().Add(time.Duration(i) * time.Second))})
		if err != nil || res.Err() != nil {
			b.Fatalf("transfer: %v / %v", err, res.Err())
		}
	}
}
