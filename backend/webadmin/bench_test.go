package webadmin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"smartproxy/backend/store"
)

// benchDB returns a database with the given numbers of partners and
// events. Filling it takes a few minutes, so it is kept in the temporary
// directory under a name that says what it holds and reused by later runs
// (delete it to build it again).
func benchDB(b *testing.B, benchPartners, benchEvents int) *store.Store {
	b.Helper()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("smartproxy-webadmin-bench-s%d-%dp-%de.db", store.SchemaVersion(), benchPartners, benchEvents))
	ctx := context.Background()
	if _, err := os.Stat(path); err == nil {
		st, err := store.Open(ctx, path, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	tmp := path + ".new"
	os.Remove(tmp)
	st, err := store.Open(ctx, tmp, store.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := range benchPartners {
		p := store.Partner{OdetteID: fmt.Sprintf("O0013%016d", i), Name: fmt.Sprintf("Partner %d GmbH", i), Enabled: i%10 != 0,
			CertificateBindings: []store.CertificateBinding{{SubjectSerialNumber: fmt.Sprintf("SN%d", i)}}}
		if err := st.AddPartner(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	if _, _, err := st.CreateToken(ctx, "proxy-1"); err != nil {
		b.Fatal(err)
	}
	names := []string{"session_end", "partner_unknown", "partner_certificate_mismatch", "tls_handshake_failed",
		"protocol_violation", "file_received", "file_sent", "crl_fetch_failed", "license_invalid", "tunnel_down"}
	sev := func(i int) string {
		switch r := i * 7919 % 100; {
		case r < 2:
			return "critical"
		case r < 10:
			return "error"
		case r < 30:
			return "warning"
		case r < 90:
			return "info"
		}
		return "debug"
	}
	t0 := time.Now().Add(-30 * 24 * time.Hour)
	step := 30 * 24 * time.Hour / time.Duration(benchEvents)
	batch := min(5000, benchEvents)
	for i := 0; i < benchEvents; i += batch {
		evs := make([]store.Event, batch)
		for j := range evs {
			n := i + j
			evs[j] = store.Event{ID: fmt.Sprintf("bench-%08d", n), Time: t0.Add(time.Duration(n) * step), Severity: sev(n),
				Name: names[n*31%len(names)], OdetteID: fmt.Sprintf("O0013%016d", n*131%benchPartners),
				RemoteAddr: "192.0.2.1:40000", Message: "event of the benchmark", Source: "server"}
		}
		if _, _, err := st.AddEvents(ctx, 1, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("built %s in %v", path, time.Since(start).Round(time.Second))
	st.Close()
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	os.Remove(tmp + "-wal")
	os.Remove(tmp + "-shm")
	if st, err = store.Open(ctx, path, store.Options{}); err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkPages renders pages of the web admin over a database of 10,000
// partners and 1,000,000 events ("large"), and over one of 100 partners and
// 10,000 events ("small") as the baseline, through the whole handler
// (session check, queries, template) without the network. Each
// sub-benchmark reports the 95th percentile of its requests as p95-ms.
func BenchmarkPages(b *testing.B) {
	for _, size := range []struct {
		name             string
		partners, events int
	}{{"small", 100, 10_000}, {"large", 10_000, 1_000_000}} {
		b.Run(size.name, func(b *testing.B) {
			st := benchDB(b, size.partners, size.events)
			defer st.Close()
			benchPages(b, st)
		})
	}
}

func benchPages(b *testing.B, st *store.Store) {
	ctx := context.Background()
	h, err := New(Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.AddAdminUser(ctx, "bench", "a long benchmark password"); err != nil && !strings.Contains(err.Error(), "exists") {
		b.Fatal(err)
	}
	u, ok, err := st.CheckAdminLogin(ctx, "bench", "a long benchmark password", "127.0.0.1")
	if err != nil || !ok {
		b.Fatalf("login: %v %v", ok, err)
	}
	secret, err := st.CreateAdminSession(ctx, u.ID, "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	pages := []struct{ name, path, want string }{
		{"events-first", "/admin/events", "event of the benchmark"},
		{"events-critical-partner", "/admin/events?severity=critical&partner=O00130000000000000042", "O00130000000000000042"},
		{"events-error-or-worse", "/admin/events?severity=error", "license_invalid"},
		{"events-name-client-window", "/admin/events?name=tunnel_down&client=proxy-1&from=" +
			time.Now().Add(-20*24*time.Hour).UTC().Format("2006-01-02T15:04") + "&until=" +
			time.Now().Add(-10*24*time.Hour).UTC().Format("2006-01-02T15:04"), "tunnel_down"},
		{"events-older-page", "", "event of the benchmark"},
		{"partners-first", "/admin/partners", "O00130000000000000000"},
		{"partners-page-2", "/admin/partners?offset=50", "O00130000000000000050"},
		{"partners-search", "/admin/partners?q=Partner+42", "O00130000000000000042"},
		{"dashboard", "/admin/", "proxy-1"},
	}
	get := func(b *testing.B, path string) string {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: secret})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s = %d\n%s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	// The second events page: the "older" link of the first.
	first := get(b, "/admin/events")
	i := strings.Index(first, `href="?`)
	if i < 0 {
		b.Fatal("the first events page has no link to older events")
	}
	older := first[i+len(`href="`):]
	older = "/admin/events" + strings.ReplaceAll(older[:strings.IndexByte(older, '"')], "&amp;", "&")
	for _, p := range pages {
		path := p.path
		if path == "" {
			path = older
		}
		b.Run(p.name, func(b *testing.B) {
			if body := get(b, path); !strings.Contains(body, p.want) {
				b.Fatalf("GET %s does not show %q", path, p.want)
			}
			var times []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				get(b, path)
				times = append(times, time.Since(start))
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)*95/100].Microseconds())/1000, "p95-ms")
		})
	}
}
