package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"smartproxy/internal/testwait"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

// haBenchSessions is the number of concurrent sessions of BenchmarkTunnels.
const haBenchSessions = 8

// BenchmarkTunnels measures what a second client buys a server (high availability,
// docs/high-availability.md): haBenchSessions partner sessions of benchFileSize each at once
// through a server with one client tunnel, and through a server with two client tunnels (two
// clients), where the server spreads them four and four. The two systems run side by side in
// this process and every iteration runs both, one after the other, so that both see the same
// machine load. It reports both aggregate throughputs in MB/s and their ratio (two/one).
func BenchmarkTunnels(b *testing.B) {
	fx := newFixture(b)
	mod := func(c *endpoint.Config) { c.BufferSize, c.Credit = 65535, 64 }
	one := startSystem(b, fx, systemOptions{responder: mod})
	two := startSystem(b, fx, systemOptions{responder: mod})
	two.startClient(b, two.tunnelAddr)
	// The admin status has no change notification: poll it.
	testwait.For(b, waitTimeout, "two tunnels on the second system", func() bool {
		st, err := two.server.Admin().Status(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return len(st.Tunnels) == 2
	})

	dir := b.TempDir()
	files := make([]testFile, haBenchSessions)
	for i := range files {
		files[i] = makeFile(b, dir, fmt.Sprintf("tunnels-%d.dat", i), oftp2.FormatUnstructured, benchFileSize, uint64(200+i))
	}
	leaf := fx.partner(b, partnerID)
	send := func(c *endpoint.Config) { c.BufferSize, c.Credit, c.DisableCompression = 65535, 64, true }
	// round runs the sessions at once through sys and returns the wall time from the first
	// start to the last end.
	round := func(sys *system) time.Duration {
		addr := sys.partnerAddr(b)
		errs := make([]error, len(files))
		var wg sync.WaitGroup
		start := time.Now()
		for i, f := range files {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := sendAs(b, fx, addr, leaf, partnerID, partnerPassword, send, f)
				if err == nil {
					err = res.Err()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		d := time.Since(start)
		for i, err := range errs {
			if err != nil {
				b.Fatalf("session %d: %v", i, err)
			}
		}
		for _, f := range finalFiles(b, sys.recvDir) {
			os.Remove(f)
		}
		return d
	}
	round(one) // warm up both
	round(two)

	var tOne, tTwo time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tOne += round(one)
		tTwo += round(two)
	}
	b.StopTimer()
	mbs := func(d time.Duration) float64 {
		return float64(benchFileSize) * haBenchSessions * float64(b.N) / d.Seconds() / 1e6
	}
	b.ReportMetric(mbs(tOne), "one-tunnel-MB/s")
	b.ReportMetric(mbs(tTwo), "two-tunnels-MB/s")
	b.ReportMetric(tOne.Seconds()/tTwo.Seconds(), "two/one")
}
