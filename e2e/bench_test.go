package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"smartproxy/internal/proctest"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

// benchFileSize is the file each benchmark session carries.
const benchFileSize = 16 * mib

// BenchmarkProxyVsDirect transfers a benchFileSize U file (random, incompressible, buffer
// compression off) from a partner endpoint to an internal responder endpoint, alternating in
// every iteration between the path through the proxy (partner —TLS→ smartproxy-server —tunnel→
// smartproxy-client —TCP→ responder, all in-process on 127.0.0.1) and the same two endpoints
// directly over TLS (partner —TLS→ responder). Each session is a whole OFTP2 session with the
// TLS handshake, SSID, SFID … EERP and ESID. It reports the throughput of both paths in MB/s
// and their ratio (proxy/direct), and the CPU time the process used per second of each path
// (cores); alternating keeps both under the same machine load.
func BenchmarkProxyVsDirect(b *testing.B) {
	for _, c := range []struct{ buffer, credit, window int }{
		{4096, 16, 0}, {16384, 64, 0}, {65535, 64, 0}, {99999, 999, 0},
		{65535, 64, 1 << 20}, {65535, 64, 4 << 20},
	} {
		name := fmt.Sprintf("buffer=%d/credit=%d", c.buffer, c.credit)
		if c.window != 0 {
			name += fmt.Sprintf("/window=%dKiB", c.window>>10)
		}
		b.Run(name, func(b *testing.B) { benchProxyVsDirect(b, c.buffer, c.credit, c.window) })
	}
}

func benchProxyVsDirect(b *testing.B, buffer, credit, window int) {
	fx := newFixture(b)
	sys := startSystem(b, fx, systemOptions{window: window, responder: func(c *endpoint.Config) { c.BufferSize, c.Credit = buffer, credit }})
	proxyAddr := sys.partnerAddr(b)

	// The direct path: the same kind of responder with a TLS listener that wants partner
	// certificates of the partner CA, as a company's OFTP2 server on port 6619 would.
	directDir := b.TempDir()
	direct, err := endpoint.New(endpoint.Config{Role: endpoint.Responder, ID: companyID, Password: companyPassword, ReceiveDir: directDir,
		Timeout: 30 * time.Second, BufferSize: buffer, Credit: credit, Partners: map[string]oftp2.Password{partnerID: partnerPassword}})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{fx.Company.TLS}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: fx.PartnerCA.Pool(), MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); direct.Serve(ctx, ln, nil) }()
	b.Cleanup(func() { cancel(); wg.Wait() })

	file := makeFile(b, b.TempDir(), "bench.dat", oftp2.FormatUnstructured, benchFileSize, 42)
	leaf := fx.partner(b, partnerID)
	mod := func(c *endpoint.Config) { c.BufferSize, c.Credit, c.DisableCompression = buffer, credit, true }
	// session runs one session and returns its wall time and the CPU time the process used.
	session := func(addr, recvDir string) (time.Duration, time.Duration) {
		cpu0 := proctest.CPUTime(b)
		start := time.Now()
		res, err := sendAs(b, fx, addr, leaf, partnerID, partnerPassword, mod, file)
		d := time.Since(start)
		cpu := proctest.CPUTime(b) - cpu0
		if err != nil {
			b.Fatalf("session to %s: %v", addr, err)
		}
		if err := res.Err(); err != nil {
			b.Fatalf("session to %s: %v", addr, err)
		}
		// Keep the disk from filling up over many iterations.
		for _, f := range finalFiles(b, recvDir) {
			os.Remove(f)
		}
		return d, cpu
	}
	session(proxyAddr, sys.recvDir) // warm up both paths
	session(ln.Addr().String(), directDir)

	var tProxy, tDirect, cProxy, cDirect time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, c := session(proxyAddr, sys.recvDir)
		tProxy, cProxy = tProxy+d, cProxy+c
		d, c = session(ln.Addr().String(), directDir)
		tDirect, cDirect = tDirect+d, cDirect+c
	}
	b.StopTimer()
	mbs := func(d time.Duration) float64 { return float64(benchFileSize) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbs(tProxy), "proxy-MB/s")
	b.ReportMetric(mbs(tDirect), "direct-MB/s")
	b.ReportMetric(tDirect.Seconds()/tProxy.Seconds(), "proxy/direct")
	// CPU seconds per second of the session: how many of the cores the path keeps busy.
	b.ReportMetric(cProxy.Seconds()/tProxy.Seconds(), "proxy-cores")
	b.ReportMetric(cDirect.Seconds()/tDirect.Seconds(), "direct-cores")
}
