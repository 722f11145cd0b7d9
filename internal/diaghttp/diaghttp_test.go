package diaghttp

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// isProfile reports whether b looks like a pprof profile: gzip-compressed protobuf.
func isProfile(b []byte) bool { return len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b }

func newServer(t *testing.T, pprofOn bool) *httptest.Server {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "diaghttp_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	srv := httptest.NewServer(Handler(Config{Registry: reg, Pprof: pprofOn}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPprofEnabled(t *testing.T) {
	srv := newServer(t, true)
	code, body := get(t, srv.URL+"/debug/pprof/")
	if code != http.StatusOK || !bytes.Contains(body, []byte("goroutine")) {
		t.Fatalf("GET /debug/pprof/ = %d %q, want 200 with the profile index", code, body)
	}
	code, body = get(t, srv.URL+"/debug/pprof/heap")
	if code != http.StatusOK {
		t.Fatalf("GET /debug/pprof/heap = %d, want 200", code)
	}
	if !isProfile(body) {
		t.Errorf("/debug/pprof/heap is not a profile: %q", body[:min(len(body), 64)])
	}
	code, body = get(t, srv.URL+"/debug/pprof/profile?seconds=1")
	if code != http.StatusOK {
		t.Fatalf("GET /debug/pprof/profile = %d, want 200", code)
	}
	if !isProfile(body) {
		t.Errorf("/debug/pprof/profile is not a profile: %q", body[:min(len(body), 64)])
	}
	if code, body := get(t, srv.URL+"/metrics"); code != http.StatusOK || !bytes.Contains(body, []byte("diaghttp_test_total 1")) {
		t.Errorf("GET /metrics = %d %q, want 200 with the counter", code, body)
	}
}

func TestPprofDisabled(t *testing.T) {
	srv := newServer(t, false)
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline"} {
		if code, _ := get(t, srv.URL+p); code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, code)
		}
	}
	if code, body := get(t, srv.URL+"/metrics"); code != http.StatusOK || !bytes.Contains(body, []byte("diaghttp_test_total 1")) {
		t.Errorf("GET /metrics = %d %q, want 200 with the counter", code, body)
	}
}
