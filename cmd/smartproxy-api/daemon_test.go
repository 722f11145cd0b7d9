package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testwait"
)

// apiBinary returns the built smartproxy-api.
func apiBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	return filepath.Join(binaries.Dir(t), "smartproxy-api")
}

// TestDaemonOperates runs the built smartproxy-api serve as the packaged unit does and operates
// it like the other two daemons: -v, Prometheus metrics on a loopback listener (requests by
// route and code, authentication failures, CRL downloads, events stored, the build), SIGUSR1 and
// SIGUSR2 for the log level, SIGHUP to reload the TLS certificate files, SIGTERM to stop.
func TestDaemonOperates(t *testing.T) {
	bin := apiBinary(t)
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^smartproxy-api \S+ \(commit \S+, built \S+, go`).Match(out) {
		t.Errorf("smartproxy-api -v = %v, %q; want the version line", err, out)
	}

	dir, token := initDir(t)
	// A CRL distribution point on loopback that answers 404: one failed download.
	crlSrv := httptest.NewServer(http.NotFoundHandler())
	defer crlSrv.Close()
	mustCLI(t, dir, "crl-url", "add", crlSrv.URL+"/ca.crl")

	p := proctest.Start(t, "smartproxy-api", bin, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0",
		"--metrics", "127.0.0.1:0", "--pprof", "--log-format", "json")
	p.WaitLine(t, `"msg":"started"`)
	metricsAddr := regexp.MustCompile(`"metrics_addr":"([^"]+)"`).FindStringSubmatch(p.Stderr.String())
	p.WaitStdout(t, regexp.MustCompile(`listening on https://\S+`), 1)
	apiAddr := regexp.MustCompile(`listening on https://(\S+)`).FindStringSubmatch(p.Stdout.String())
	if metricsAddr == nil || apiAddr == nil {
		t.Fatalf("no metrics_addr in the log or no API address on stdout:\n%s\n%s", p.Stderr.String(), p.Stdout.String())
	}

	// --pprof: the runtime profiles on the metrics listener (internal/daemon tests their absence
	// without the flag).
	if resp, err := http.Get("http://" + metricsAddr[1] + "/debug/pprof/goroutine?debug=1"); err != nil {
		t.Errorf("GET /debug/pprof/goroutine with --pprof: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "goroutine profile:") {
			t.Errorf("GET /debug/pprof/goroutine with --pprof = %d %.80q, want 200 and a goroutine profile", resp.StatusCode, b)
		}
	}

	cert := loadCert(t, filepath.Join(dir, backend.GeneratedCertFile))
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	do := func(method, path, tok string, body []byte) int {
		t.Helper()
		req, err := http.NewRequest(method, "https://"+apiAddr[1]+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("GET", apiv1.PathConfig, "spt_wrong", nil); code != http.StatusUnauthorized {
		t.Errorf("GET config with a wrong token = %d, want 401", code)
	}
	if code := do("GET", apiv1.PathConfig, token, nil); code != http.StatusOK {
		t.Errorf("GET config = %d, want 200", code)
	}
	events, _ := json.Marshal(apiv1.EventsRequest{Events: []apiv1.Event{{ID: strings.Repeat("ab", 16), Time: time.Now(),
		Severity: apiv1.SeverityWarning, Name: "partner_unknown", Message: "test", Source: apiv1.SourceServer}}})
	for range 2 { // the second time a duplicate
		if code := do("POST", apiv1.PathEvents, token, events); code != http.StatusOK {
			t.Errorf("POST events = %d, want 200", code)
		}
	}

	scrape := func() string {
		resp, err := http.Get("http://" + metricsAddr[1] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	want := []string{
		`smartproxy_api_requests_total{code="401",route="GET /v1/config"} 1`,
		`smartproxy_api_requests_total{code="200",route="GET /v1/config"} 1`,
		`smartproxy_api_requests_total{code="200",route="POST /v1/events"} 2`,
		`smartproxy_api_auth_failures_total{reason="malformed token"} 1`,
		`smartproxy_api_events_total{result="stored"} 1`,
		`smartproxy_api_events_total{result="duplicate"} 1`,
		`smartproxy_api_crl_fetches_total{result="failed"}`,
		`smartproxy_build_info{`,
		`go_goroutines`,
	}
	var body string
	testwait.For(t, 30*time.Second, "the metrics to count the requests, events and the CRL download", func() bool {
		body = scrape()
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})

	p.Signal(syscall.SIGUSR1)
	p.WaitLine(t, `"new_level":"debug"`)
	p.Signal(syscall.SIGUSR2)
	p.WaitLine(t, `"new_level":"info"`)
	p.Signal(syscall.SIGHUP)
	p.WaitLine(t, `"msg":"SIGHUP: TLS certificate files reloaded"`)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, proctest.DefaultTimeout); err != nil {
		t.Errorf("after SIGTERM: %v, want exit status 0", err)
	}
	if !strings.Contains(p.Stderr.String(), `"msg":"smartproxy-api stopped"`) {
		t.Errorf("no stop line:\n%s", p.Stderr.String())
	}
}

// TestServeMetricsLoopbackOnly: the unauthenticated metrics listener never serves another host.
func TestServeMetricsLoopbackOnly(t *testing.T) {
	var stderr proctest.Buffer
	err := run(t.Context(), []string{"serve", "--data-dir", t.TempDir(), "--metrics", "0.0.0.0:2883"}, io.Discard, &stderr)
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("serve --metrics 0.0.0.0:2883 = %v, want a usage error naming the loopback rule", err)
	}
}
