package backend

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
	"smartproxy/internal/pki"
)

// largeCRL writes a v2 CRL with n revoked serials of 16 random bytes,
// signed by ca (ECDSA with SHA-256), directly with cryptobyte:
// x509.CreateRevocationList needs a struct and a big.Int per entry, which is
// too slow for a million entries.
func largeCRL(tb testing.TB, ca *pki.CA, n int) []byte {
	tb.Helper()
	ecdsaSHA256 := []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	now := time.Now().UTC()
	utc := func(b *cryptobyte.Builder, t time.Time) {
		b.AddASN1(asn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("060102150405Z"))) })
	}
	algo := func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(ecdsaSHA256) })
		})
	}
	random := make([]byte, 16*n)
	if _, err := rand.Read(random); err != nil {
		tb.Fatal(err)
	}
	tbs := cryptobyte.NewFixedBuilder(make([]byte, 0, n*36+1024))
	tbs.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // v2
		algo(b)
		b.AddBytes(ca.Cert.RawSubject)
		utc(b, now.Add(-time.Minute))
		utc(b, now.Add(24*time.Hour))
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for i := range n {
				serial := random[16*i : 16*i+16]
				serial[0] = serial[0]&0x7f | 0x01 // positive, minimal
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(serial) })
					utc(b, now.Add(-time.Hour))
				})
			}
		})
	})
	tbsDER, err := tbs.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	digest := sha256.Sum256(tbsDER)
	sig, err := ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		tb.Fatal(err)
	}
	out := cryptobyte.NewFixedBuilder(make([]byte, 0, len(tbsDER)+256))
	out.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbsDER)
		algo(b)
		b.AddASN1BitString(sig)
	})
	der, err := out.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// peakHeap samples the heap every 5ms until stop is called and returns the
// highest growth of the heap seen (live data and garbage not yet collected,
// as the process's memory sees it) and the bytes allocated meanwhile.
func peakHeap() (stop func() (peak, alloc uint64)) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, total := ms.HeapAlloc, ms.TotalAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-t.C:
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		p := peak.Load()
		if m.HeapAlloc > p {
			p = m.HeapAlloc
		}
		return p - min(p, base), m.TotalAlloc - total
	}
}

// BenchmarkLargeCRL moves a CRL of a million entries through the backend:
// the downloader fetches it from a local HTTP server, verifies and stores it
// (fetch), and a proxy client downloads it from the API (serve). It reports
// the CRL's size, and for each phase the time, the bytes allocated and the
// peak growth of the heap (the benchmark's own client included in serve).
//
//	go test -run '^$' -bench LargeCRL -benchtime 1x ./backend/
func BenchmarkLargeCRL(b *testing.B) {
	const entries = 1_000_000
	ca, err := pki.NewCA("Large CA")
	if err != nil {
		b.Fatal(err)
	}
	der := largeCRL(b, ca, entries)
	sum := sha256.Sum256(der)
	for b.Loop() {
		b.StopTimer()
		e := newEnvTB(b, func(c *Config) { c.CRL = FetcherConfig{CheckInterval: time.Hour, Interval: time.Nanosecond} })
		ctx := context.Background()
		if _, err := e.st.AddCA(ctx, ca.Cert.Raw); err != nil {
			b.Fatal(err)
		}
		srv := newCRLServer(b)
		srv.set("/large.crl", der)
		if _, err := e.st.AddCRLURL(ctx, srv.URL+"/large.crl"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		stop := peakHeap()
		start := time.Now()
		e.srv.fetcher.FetchDue(ctx)
		fetchTime := time.Since(start)
		fetchPeak, fetchAlloc := stop()
		crls, err := e.st.CRLs(ctx)
		if err != nil || len(crls) != 1 || crls[0].Entries != entries {
			b.Fatalf("stored CRLs = %+v, %v", crls, err)
		}

		stop = peakHeap()
		start = time.Now()
		req, _ := http.NewRequest("GET", e.base+apiv1.CRLPath(CRLID(crls[0].ID)), nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := e.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		serveTime := time.Since(start)
		servePeak, serveAlloc := stop()
		if err != nil || n != int64(len(der)) || hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(sum[:]) {
			b.Fatalf("downloaded %d bytes, %v; want the stored CRL", n, err)
		}
		b.ReportMetric(float64(len(der))/1e6, "crl_MB")
		b.ReportMetric(float64(fetchPeak)/1e6, "fetch_peak_heap_MB")
		b.ReportMetric(float64(fetchAlloc)/1e6, "fetch_alloc_MB")
		b.ReportMetric(fetchTime.Seconds(), "fetch_s")
		b.ReportMetric(float64(servePeak)/1e6, "serve_peak_heap_MB")
		b.ReportMetric(float64(serveAlloc)/1e6, "serve_alloc_MB")
		b.ReportMetric(serveTime.Seconds(), "serve_s")
		b.StopTimer()
		e.stop()
		b.StartTimer()
	}
}

// BenchmarkLongPollWake measures the time from a change committed through a
// second database handle (as `smartproxy-api partner add` in another process
// commits it) to the answer of a long poll that waited for it. The revision
// is polled every 200ms, the default; a random pause before each change keeps
// the changes out of step with the poller.
//
//	go test -run '^$' -bench LongPollWake -benchtime 20x ./backend/
func BenchmarkLongPollWake(b *testing.B) {
	e := newEnvTB(b, func(c *Config) { c.RevisionPollInterval = 200 * time.Millisecond })
	ctx := context.Background()
	other, err := storeOpen(ctx, e.dbPath)
	if err != nil {
		b.Fatal(err)
	}
	defer other.Close()
	get := func(etag string) (*http.Response, error) {
		req, _ := http.NewRequest("GET", e.base+apiv1.PathConfig+"?wait=30", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := e.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	var total time.Duration
	i := 0
	for b.Loop() {
		resp, err := get("")
		if err != nil {
			b.Fatal(err)
		}
		answered := make(chan time.Time, 1)
		go func() {
			r, err := get(resp.Header.Get("ETag"))
			if err != nil || r.StatusCode != http.StatusOK {
				b.Errorf("long poll = %v, %v", r, err)
			}
			answered <- time.Now()
		}()
		// Polled: the server has no event for "a poll is waiting".
		for deadline := time.Now().Add(10 * time.Second); e.srv.waiting.Load() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the long poll did not start waiting within 10s")
			}
		}
		i++
		// Changes come at random moments, not in step with the poller.
		time.Sleep(time.Duration(mrand.Int64N(int64(250 * time.Millisecond))))
		start := time.Now()
		if err := other.AddPartner(ctx, storePartner("O"+strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
		total += (<-answered).Sub(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(i), "ms/change")
}

func storeOpen(ctx context.Context, path string) (*store.Store, error) {
	return store.Open(ctx, path, store.Options{})
}

func storePartner(id string) store.Partner { return store.Partner{OdetteID: id, Enabled: true} }
