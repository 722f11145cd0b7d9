package apiclient_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
)

func TestConfigETag(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			f := newFakeBackend(t)
			f.setConfig(func(d *apiv1.ConfigDocument) {
				d.Partners = []apiv1.Partner{{OdetteID: "O0013000000000PARTNER", Enabled: true, Password: "SECRET"}}
			})
			c := newClient(t, f.start(h2), nil)
			ctx := context.Background()

			doc, etag, changed, err := c.Config(ctx, "", 0)
			if err != nil || !changed || etag != `"r2"` {
				t.Fatalf("Config(\"\") = %v, %q, %v, %v; want a document, \"r2\", true, nil", doc, etag, changed, err)
			}
			f.mu.Lock()
			want := f.doc
			f.mu.Unlock()
			if diff := cmp.Diff(&want, doc); diff != "" {
				t.Errorf("Config document differs (-want +got):\n%s", diff)
			}

			doc, etag2, changed, err := c.Config(ctx, etag, 0)
			if err != nil || changed || doc != nil || etag2 != etag {
				t.Fatalf("Config(%s, 0) = %v, %q, %v, %v; want nil, %s, false, nil", etag, doc, etag2, changed, err, etag)
			}
			if got := f.auth["GET /v1/config"]; got != "Bearer "+testToken {
				t.Errorf("Authorization = %q, want the bearer token", got)
			}
			if got := f.queries; len(got) != 2 || got[1] != "" {
				t.Errorf("queries = %q, want no wait parameter without a wait", got)
			}
		})
	}
}

// TestConfigLongPoll checks that a long poll returns as soon as the document changes and that a
// poll without change ends with 304 although it takes longer than Config.Timeout.
func TestConfigLongPoll(t *testing.T) {
	f := newFakeBackend(t)
	c := newClient(t, f.start(false), func(cfg *apiclient.Config) { cfg.Timeout = 300 * time.Millisecond })
	ctx := context.Background()
	_, etag, _, err := c.Config(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		doc     *apiv1.ConfigDocument
		etag    string
		changed bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		doc, e, ch, err := c.Config(ctx, etag, 50*time.Second)
		done <- result{doc, e, ch, err}
	}()
	<-f.polling // the backend holds the request now
	f.setConfig(func(d *apiv1.ConfigDocument) { d.LogLevel = "debug" })
	r := <-done
	if r.err != nil || !r.changed || r.doc == nil || r.doc.LogLevel != "debug" || r.etag != `"r2"` {
		t.Fatalf("long poll = %+v; want the changed document with ETag \"r2\"", r)
	}
	if got := f.queries[len(f.queries)-1]; got != "wait=50" {
		t.Errorf("long poll query = %q, want wait=50", got)
	}

	// 1 s of waiting exceeds the 300 ms Timeout; the attempt's limit includes the wait.
	doc, etag2, changed, err := c.Config(ctx, r.etag, 500*time.Millisecond)
	if err != nil || changed || doc != nil || etag2 != r.etag {
		t.Fatalf("long poll without change = %v, %q, %v, %v; want nil, %q, false, nil", doc, etag2, changed, err, r.etag)
	}
	if got := f.queries[len(f.queries)-1]; got != "wait=1" {
		t.Errorf("query = %q, want wait=1 (rounded up to whole seconds)", got)
	}

	for _, w := range []time.Duration{-time.Second, apiv1.MaxWait + time.Second} {
		before := f.hitCount("GET /v1/config")
		if _, _, _, err := c.Config(ctx, r.etag, w); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("Config(wait %v) = %v, want an error about the range", w, err)
		}
		if got := f.hitCount("GET /v1/config"); got != before {
			t.Errorf("Config(wait %v) sent a request", w)
		}
	}
}

func TestConfigStrict(t *testing.T) {
	tests := []struct {
		name, body, ct, want string
	}{
		{"unknown field", `{"revision":1,"new_security_setting":true}`, apiv1.ContentTypeJSON, `unknown field "new_security_setting"`},
		{"not JSON", `<html>hi</html>`, apiv1.ContentTypeJSON, "decoding the answer"},
		{"trailing data", `{"revision":1} {}`, apiv1.ContentTypeJSON, "data after"},
		{"media type", `{"revision":1}`, "text/html", `Content-Type "text/html"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBackend(t)
			f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
				w.Header().Set("Content-Type", tc.ct)
				w.Header().Set("ETag", `"x"`)
				_, _ = w.Write([]byte(tc.body))
				return true
			}
			c := newClient(t, f.start(false), nil)
			_, _, _, err := c.Config(context.Background(), "", 0)
			var oe *apiclient.OpError
			if !errors.As(err, &oe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Config = %v, want an *OpError containing %q", err, tc.want)
			}
			if got := f.hitCount("GET /v1/config"); got != 1 {
				t.Errorf("requests = %d, want 1 (a bad document is not retried)", got)
			}
		})
	}
}

func TestCRL(t *testing.T) {
	f := newFakeBackend(t)
	big := bytes.Repeat([]byte{0x30, 0x82}, 300<<10)
	f.crls["ca-1"] = big
	f.crls["small"] = []byte{0x30, 0x03, 0x02, 0x01, 0x01}
	c := newClient(t, f.start(false), nil)
	ctx := context.Background()

	var buf bytes.Buffer
	etag, changed, err := c.CRL(ctx, "ca-1", "", &buf)
	if err != nil || !changed || etag != bodyETag(big) {
		t.Fatalf("CRL(ca-1) = %q, %v, %v; want %q, true, nil", etag, changed, err, bodyETag(big))
	}
	if !bytes.Equal(buf.Bytes(), big) {
		t.Errorf("CRL(ca-1) wrote %d bytes, want the %d bytes of the CRL", buf.Len(), len(big))
	}
	buf.Reset()
	etag2, changed, err := c.CRL(ctx, "ca-1", etag, &buf)
	if err != nil || changed || etag2 != etag || buf.Len() != 0 {
		t.Errorf("CRL(ca-1, etag) = %q, %v, %v and %d bytes; want %q, false, nil and none", etag2, changed, err, buf.Len(), etag)
	}
	if _, _, err := c.CRL(ctx, "gone", "", &buf); !errors.Is(err, apiclient.ErrNotFound) {
		t.Errorf("CRL(gone) = %v, want ErrNotFound", err)
	}
	before := f.hitCount("GET /v1/crls/..")
	for _, id := range []string{"..", "a/b", ""} {
		if _, _, err := c.CRL(ctx, id, "", &buf); err == nil {
			t.Errorf("CRL(%q) = nil, want an invalid ID error", id)
		}
	}
	if got := f.hitCount("GET /v1/crls/.."); got != before {
		t.Errorf("an invalid CRL ID was sent")
	}

	// A writer failure is returned and not retried.
	wErr := errors.New("disk full")
	_, _, err = c.CRL(ctx, "small", "", failWriter{wErr})
	if !errors.Is(err, wErr) {
		t.Errorf("CRL into a failing writer = %v, want it to wrap %v", err, wErr)
	}
	if got := f.hitCount("GET /v1/crls/small"); got != 1 {
		t.Errorf("requests after a writer failure = %d, want 1", got)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// TestBoundedBodies checks that answers over their limit fail with ErrResponseTooLarge, whether
// announced by Content-Length or not, and that the writer never gets more than the limit.
func TestBoundedBodies(t *testing.T) {
	const limit = 64 << 10
	body := bytes.Repeat([]byte("x"), limit+1)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			f := newFakeBackend(t)
			f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
				if r.URL.Path == apiv1.PathCRLPrefix+"big" {
					w.Header().Set("Content-Type", apiv1.ContentTypeCRL)
				} else {
					w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
				}
				if chunked {
					_, _ = w.Write(body[:100])
					w.(http.Flusher).Flush()
					_, _ = w.Write(body[100:])
					return true
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				_, _ = w.Write(body)
				return true
			}
			c := newClient(t, f.start(false), func(cfg *apiclient.Config) {
				cfg.MaxResponseBytes = limit
				cfg.MaxCRLBytes = limit
			})
			ctx := context.Background()
			var buf bytes.Buffer
			_, _, err := c.CRL(ctx, "big", "", &buf)
			if !errors.Is(err, apiclient.ErrResponseTooLarge) {
				t.Errorf("CRL = %v, want ErrResponseTooLarge", err)
			}
			if buf.Len() > limit {
				t.Errorf("CRL wrote %d bytes, more than the limit %d", buf.Len(), limit)
			}
			if _, _, _, err := c.Config(ctx, "", 0); !errors.Is(err, apiclient.ErrResponseTooLarge) || !strings.Contains(err.Error(), "65536") {
				t.Errorf("Config = %v, want ErrResponseTooLarge naming the limit", err)
			}
			if _, _, _, err := c.License(ctx, ""); !errors.Is(err, apiclient.ErrResponseTooLarge) {
				t.Errorf("License = %v, want ErrResponseTooLarge", err)
			}
			for _, k := range []string{"GET /v1/crls/big", "GET /v1/config", "GET /v1/license"} {
				if got := f.hitCount(k); got != 1 {
					t.Errorf("%s requests = %d, want 1 (an oversized answer is not retried)", k, got)
				}
			}
		})
	}
}

// TestDefaultJSONLimit checks the default 4 MiB bound of JSON answers.
func TestDefaultJSONLimit(t *testing.T) {
	f := newFakeBackend(t)
	f.setConfig(func(d *apiv1.ConfigDocument) {
		d.TrustedCACertificatesPEM = []string{strings.Repeat("A", apiclient.DefaultMaxResponseBytes)}
	})
	c := newClient(t, f.start(false), nil)
	if _, _, _, err := c.Config(context.Background(), "", 0); !errors.Is(err, apiclient.ErrResponseTooLarge) {
		t.Errorf("Config of a %d-byte document = %v, want ErrResponseTooLarge", apiclient.DefaultMaxResponseBytes, err)
	}
}

func TestLicense(t *testing.T) {
	f := newFakeBackend(t)
	c := newClient(t, f.start(false), nil)
	ctx := context.Background()
	_, _, _, err := c.License(ctx, "")
	var ae *apiclient.APIError
	if !errors.Is(err, apiclient.ErrNotFound) || !errors.As(err, &ae) || ae.Code != apiv1.CodeNotFound || ae.Status != 404 {
		t.Fatalf("License without one stored = %v, want an *APIError 404 not_found matching ErrNotFound", err)
	}
	if errors.Is(err, apiclient.ErrUnauthorized) {
		t.Errorf("a 404 matches ErrUnauthorized")
	}
	lic := []byte("-----BEGIN SMARTPROXY LICENSE-----\nabc\n")
	f.mu.Lock()
	f.license = lic
	f.mu.Unlock()
	got, etag, changed, err := c.License(ctx, "")
	if err != nil || !changed || !bytes.Equal(got, lic) || etag != bodyETag(lic) {
		t.Fatalf("License = %q, %q, %v, %v; want the license", got, etag, changed, err)
	}
	got, etag2, changed, err := c.License(ctx, etag)
	if err != nil || changed || got != nil || etag2 != etag {
		t.Errorf("License(etag) = %q, %q, %v, %v; want nil, %q, false, nil", got, etag2, changed, err, etag)
	}
}

func testEvents() []apiv1.Event {
	t0 := time.Date(2026, 3, 1, 10, 15, 30, 123456789, time.UTC)
	return []apiv1.Event{
		{ID: "00000000000000000000000000000001", Time: t0, Severity: apiv1.SeverityCritical, Name: "partner_unknown",
			SessionID: 9, OdetteID: "O0013000000000NOBODY", RemoteAddr: "198.51.100.7:40001", Message: "refused",
			Fields: map[string]string{"esid": "04"}, Source: apiv1.SourceServer},
		{ID: "00000000000000000000000000000002", Time: t0.Add(time.Second), Severity: apiv1.SeverityInfo,
			Name: "tunnel_up", Source: apiv1.SourceClient},
	}
}

func TestPostEvents(t *testing.T) {
	f := newFakeBackend(t)
	c := newClient(t, f.start(false), nil)
	ctx := context.Background()
	evs := testEvents()
	acc, dup, err := c.PostEvents(ctx, evs)
	if err != nil || acc != 2 || dup != 0 {
		t.Fatalf("PostEvents = %d, %d, %v; want 2, 0, nil", acc, dup, err)
	}
	f.mu.Lock()
	stored := f.events[evs[0].ID]
	f.mu.Unlock()
	if diff := cmp.Diff(evs[0], stored); diff != "" {
		t.Errorf("stored event differs (-sent +stored):\n%s", diff)
	}
	acc, dup, err = c.PostEvents(ctx, evs)
	if err != nil || acc != 0 || dup != 2 {
		t.Errorf("PostEvents again = %d, %d, %v; want 0, 2, nil", acc, dup, err)
	}

	bad := testEvents()
	bad[1].Message = "\xff"
	if _, _, err := c.PostEvents(ctx, bad); err == nil || !strings.Contains(err.Error(), "events[1].message") {
		t.Errorf("PostEvents(invalid UTF-8) = %v, want an error naming events[1].message", err)
	}
	if _, _, err := c.PostEvents(ctx, nil); err == nil {
		t.Error("PostEvents(nil) = nil, want an error")
	}
	large := make([]apiv1.Event, apiv1.MaxEventsPerRequest)
	for i := range large {
		large[i] = testEvents()[0]
		large[i].ID = fmt.Sprintf("%032x", i)
		large[i].Message = strings.Repeat("m", apiv1.MaxTextLength)
	}
	if _, _, err := c.PostEvents(ctx, large); !errors.Is(err, apiclient.ErrRequestTooLarge) {
		t.Errorf("PostEvents(%d events of 4 KiB) = %v, want ErrRequestTooLarge", len(large), err)
	}
	if got := f.hitCount("POST /v1/events"); got != 2 {
		t.Errorf("POST /v1/events requests = %d, want 2 (invalid batches are not sent)", got)
	}

	// A backend that does not account for every event makes the call fail.
	f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
		_, _ = w.Write([]byte(`{"accepted":1,"duplicates":0}`))
		return true
	}
	if _, _, err := c.PostEvents(ctx, evs); err == nil || !strings.Contains(err.Error(), "1 accepted and 0 duplicates of 2") {
		t.Errorf("PostEvents with a short count = %v, want an error", err)
	}
}

func TestReports(t *testing.T) {
	f := newFakeBackend(t)
	c := newClient(t, f.start(false), nil)
	ctx := context.Background()
	urls := []string{"http://crl.example/ca.crl", "https://crl.example/b.crl"}
	if err := c.ReportCRLURLs(ctx, urls); err != nil {
		t.Fatalf("ReportCRLURLs = %v", err)
	}
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	ls := &apiv1.LicenseStatus{ProxyID: "PX-1", Valid: true, ExpiresAt: &exp}
	if err := c.PutLicenseStatus(ctx, ls); err != nil {
		t.Fatalf("PutLicenseStatus = %v", err)
	}
	cs := &apiv1.ConfigStatus{Revision: 3, ETag: `"r3"`, Errors: []apiv1.ConfigError{{Field: "partners[0]", Message: "bad"}}}
	if err := c.ReportConfigStatus(ctx, cs); err != nil {
		t.Fatalf("ReportConfigStatus = %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff(urls, f.crlURLs); diff != "" {
		t.Errorf("CRL URLs differ (-sent +stored):\n%s", diff)
	}
	if diff := cmp.Diff([]apiv1.LicenseStatus{*ls}, f.licenseStatus); diff != "" {
		t.Errorf("license status differs (-sent +stored):\n%s", diff)
	}
	if diff := cmp.Diff([]apiv1.ConfigStatus{*cs}, f.configStatus); diff != "" {
		t.Errorf("config status differs (-sent +stored):\n%s", diff)
	}
	f.mu.Unlock()
	for _, err := range []error{
		c.ReportCRLURLs(ctx, []string{"ldap://x"}),
		c.PutLicenseStatus(ctx, &apiv1.LicenseStatus{}),
		c.ReportConfigStatus(ctx, &apiv1.ConfigStatus{Revision: -1}),
	} {
		var fe *apiv1.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("invalid report = %v, want an *apiv1.FieldError", err)
		}
	}
	f.mu.Lock()
	if len(f.crlURLs) != 2 || len(f.licenseStatus) != 1 || len(f.configStatus) != 1 {
		t.Errorf("an invalid report reached the backend")
	}
}

func TestHealth(t *testing.T) {
	f := newFakeBackend(t)
	c := newClient(t, f.start(false), nil)
	if err := c.Health(context.Background()); err != nil {
		t.Fatalf("Health = %v", err)
	}
	if got := f.auth["GET /v1/health"]; got != "" {
		t.Errorf("Health sent Authorization %q, want none", got)
	}
	f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
		_, _ = w.Write([]byte(`{"status":"degraded"}`))
		return true
	}
	if err := c.Health(context.Background()); err == nil || !strings.Contains(err.Error(), `"degraded"`) {
		t.Errorf("Health of a degraded backend = %v, want an error", err)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		fails     int
		status    int
		call      func(*apiclient.Client) error
		wantHits  int
		wantErr   bool
		wantRetry time.Duration // RetryAfter of the returned *APIError
	}{
		{"503 twice then 200", "GET /v1/config", 2, 503, getConfig, 3, false, 0},
		{"500 forever", "GET /v1/config", 99, 500, getConfig, 4, true, 0},
		{"400 not retried", "GET /v1/config", 99, 400, getConfig, 1, true, 0},
		{"404 not retried", "GET /v1/license", 99, 404, getLicense, 1, true, 0},
		{"401 not retried", "GET /v1/config", 99, 401, getConfig, 1, true, 0},
		{"408 retried", "GET /v1/license", 1, 408, getLicense, 2, false, 0},
		{"429 retried", "PUT /v1/license-status", 1, 429, putLicenseStatus, 2, false, 0},
		{"501 not retried", "GET /v1/config", 99, 501, getConfig, 1, true, 0},
		{"events retried", "POST /v1/events", 3, 502, postEvents, 4, false, 0},
		{"config-status not retried", "POST /v1/config-status", 1, 503, reportConfigStatus, 1, true, 0},
		{"crl-urls not retried", "POST /v1/crl-urls", 1, 503, reportCRLURLs, 1, true, 0},
		{"crl retried", "GET /v1/crls/ca", 2, 503, getCRL, 3, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBackend(t)
			f.crls["ca"] = []byte{0x30, 0}
			f.fail = failTimes(tc.key, tc.fails, tc.status, "")
			c := newClient(t, f.start(false), nil)
			err := tc.call(c)
			if (err != nil) != tc.wantErr {
				t.Errorf("call = %v, want error %v", err, tc.wantErr)
			}
			if got := f.hitCount(tc.key); got != tc.wantHits {
				t.Errorf("%s requests = %d, want %d", tc.key, got, tc.wantHits)
			}
			var ae *apiclient.APIError
			if tc.wantErr && (!errors.As(err, &ae) || ae.Status != tc.status) {
				t.Errorf("call = %v, want an *APIError with status %d", err, tc.status)
			}
		})
	}
}

func getConfig(c *apiclient.Client) error {
	_, _, _, err := c.Config(context.Background(), "", 0)
	return err
}

func getLicense(c *apiclient.Client) error {
	_, _, _, err := c.License(context.Background(), "")
	if errors.Is(err, apiclient.ErrNotFound) {
		var ae *apiclient.APIError
		if errors.As(err, &ae) && ae.Code == apiv1.CodeNotFound {
			return nil // the fake stores no license: past the injected failures
		}
	}
	return err
}

func getCRL(c *apiclient.Client) error {
	_, _, err := c.CRL(context.Background(), "ca", "", &bytes.Buffer{})
	return err
}

func postEvents(c *apiclient.Client) error {
	_, _, err := c.PostEvents(context.Background(), testEvents())
	return err
}

func putLicenseStatus(c *apiclient.Client) error {
	return c.PutLicenseStatus(context.Background(), &apiv1.LicenseStatus{ProxyID: "PX-1", Reason: "none"})
}

func reportConfigStatus(c *apiclient.Client) error {
	return c.ReportConfigStatus(context.Background(), &apiv1.ConfigStatus{Revision: 1, Applied: true})
}

func reportCRLURLs(c *apiclient.Client) error {
	return c.ReportCRLURLs(context.Background(), []string{"http://crl.example/a.crl"})
}

// TestRetryAfter checks that the delay before a retry is the answer's Retry-After (read from the
// retry log line, not measured), and that a Retry-After beyond Retry.Cap ends the call with
// RetryAfter in the *APIError.
func TestRetryAfter(t *testing.T) {
	f := newFakeBackend(t)
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	f.fail = failTimes("GET /v1/config", 1, 503, "1")
	c := newClient(t, f.start(false), func(cfg *apiclient.Config) {
		cfg.Logger = log
		cfg.Retry.Cap = 2 * time.Second
	})
	if err := getConfig(c); err != nil {
		t.Fatalf("Config after a 503 with Retry-After = %v", err)
	}
	entries := hook.AllEntries()
	if len(entries) != 1 || entries[0].Data["event"] != "api_retry" || entries[0].Data["delay"] != "1s" {
		t.Fatalf("log = %v, want one api_retry line with delay 1s", entries)
	}
	if got := f.hitCount("GET /v1/config"); got != 2 {
		t.Errorf("requests = %d, want 2", got)
	}

	f2 := newFakeBackend(t)
	f2.fail = failTimes("GET /v1/config", 99, 429, "120")
	c2 := newClient(t, f2.start(false), nil)
	err := getConfig(c2)
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.RetryAfter != 120*time.Second || ae.Status != 429 {
		t.Errorf("Config after 429 Retry-After 120 = %v, want an *APIError with RetryAfter 2m0s", err)
	}
	if got := f2.hitCount("GET /v1/config"); got != 1 {
		t.Errorf("requests = %d, want 1 (a Retry-After beyond Retry.Cap is left to the caller)", got)
	}
}

func TestAPIErrorBodies(t *testing.T) {
	tests := []struct {
		name    string
		serve   func(w http.ResponseWriter)
		want    apiclient.APIError
		wantMsg string
	}{
		{"error body", func(w http.ResponseWriter) {
			writeError(w, 400, apiv1.CodeInvalidField, "wait must be 0–60", "wait")
		}, apiclient.APIError{Op: "GET /v1/config", Status: 400, Code: apiv1.CodeInvalidField, Message: "wait must be 0–60", Field: "wait"},
			"GET /v1/config: backend answered 400 Bad Request (invalid_field): wait must be 0–60 (field wait)"},
		{"gateway page", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(403)
			_, _ = w.Write([]byte("<html>\n<b>Forbidden</b>\x01</html>"))
		}, apiclient.APIError{Op: "GET /v1/config", Status: 403, Message: `the body is not an API error (Content-Type "text/html", 31 bytes): <html> <b>Forbidden</b>?</html>`}, "403 Forbidden"},
		{"redirect", func(w http.ResponseWriter) {
			w.Header().Set("Location", "https://elsewhere.example/")
			w.WriteHeader(302)
		}, apiclient.APIError{Op: "GET /v1/config", Status: 302, Message: `redirect to "https://elsewhere.example/" not followed`}, "302 Found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBackend(t)
			f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool { tc.serve(w); return true }
			c := newClient(t, f.start(false), nil)
			err := getConfig(c)
			var ae *apiclient.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("Config = %v, want an *APIError", err)
			}
			if diff := cmp.Diff(&tc.want, ae); diff != "" {
				t.Errorf("APIError differs (-want +got):\n%s", diff)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Error() = %q, want containing %q", err, tc.wantMsg)
			}
		})
	}
}

// TestBasicAuthFromURL checks that the base URL's user information becomes basic authentication
// on every request, that its prefix is kept, and that the password appears in no error, log
// line or printed value.
func TestBasicAuthFromURL(t *testing.T) {
	const user, pass = "proxy-7", "p@ss:w/rd secret"
	f := newFakeBackend(t)
	f.token, f.user, f.pass, f.prefix = "", user, pass, "/api/backend"
	srv := f.start(false)
	log, hook := logtest.NewNullLogger()
	base := strings.Replace(srv.URL, "https://", "https://"+user+":"+strings.NewReplacer("@", "%40", ":", "%3A", "/", "%2F", " ", "%20").Replace(pass)+"@", 1) + "/api/backend/"
	c := newClient(t, srv, func(cfg *apiclient.Config) {
		cfg.BaseURL, cfg.Token, cfg.Logger = base, "", log
	})
	ctx := context.Background()
	if _, _, _, err := c.Config(ctx, "", 0); err != nil {
		t.Fatalf("Config = %v", err)
	}
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health = %v", err)
	}
	if f.hitCount("GET /v1/config") != 1 || f.hitCount("GET /v1/health") != 1 {
		t.Errorf("hits = %v, want one config and one health request below the prefix", f.hits)
	}
	if f.auth["GET /v1/health"] == "" {
		t.Error("Health sent no basic authentication; it goes on every request")
	}

	// Errors of every kind: refused credentials, a retried 503, a transport failure.
	f.mu.Lock()
	f.pass = "other"
	f.mu.Unlock()
	var errs []error
	_, _, _, err := c.Config(ctx, "", 0)
	if !errors.Is(err, apiclient.ErrUnauthorized) {
		t.Errorf("Config with a refused password = %v, want ErrUnauthorized", err)
	}
	errs = append(errs, err)
	f.fail = failTimes("GET /v1/license", 99, 503, "")
	_, _, _, err = c.License(ctx, "")
	errs = append(errs, err)
	srv.Close()
	_, _, _, err = c.Config(ctx, "", 0)
	var oe *apiclient.OpError
	if !errors.As(err, &oe) {
		t.Errorf("Config of a closed server = %v, want an *OpError", err)
	}
	errs = append(errs, err)
	for _, e := range errs {
		if e == nil {
			t.Fatal("want an error")
		}
		noSecrets(t, "error", e.Error(), pass, "p%40ss", "ss:w")
		noSecrets(t, "error %+v", fmt.Sprintf("%+v", e), pass, "p%40ss")
	}
	for _, e := range hook.AllEntries() {
		s, _ := e.String()
		noSecrets(t, "log line", s, pass, "p%40ss")
	}
	if len(hook.AllEntries()) == 0 {
		t.Error("no retry was logged")
	}
	cfg := apiclient.Config{BaseURL: base}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		noSecrets(t, "printed value", s, pass, "p%40ss")
	}
}

// TestTokenNeverShown checks that the bearer token is sent and appears in no error or printed
// value.
func TestTokenNeverShown(t *testing.T) {
	f := newFakeBackend(t)
	f.token = "something-else"
	srv := f.start(false)
	c := newClient(t, srv, nil)
	_, _, _, err := c.Config(context.Background(), "", 0)
	if !errors.Is(err, apiclient.ErrUnauthorized) {
		t.Fatalf("Config with a wrong token = %v, want ErrUnauthorized", err)
	}
	if got := f.auth["GET /v1/config"]; got != "Bearer "+testToken {
		t.Errorf("Authorization = %q, want the bearer token", got)
	}
	cfg := apiclient.Config{BaseURL: srv.URL, Token: testToken}
	for _, s := range []string{err.Error(), fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprintf("%v %+v %#v", cfg.Token, cfg.Token, cfg.Token), fmt.Sprintf("%+v", c)} {
		noSecrets(t, "printed value", s, testToken)
	}
	if _, err := apiclient.New(apiclient.Config{BaseURL: "https://u:p@h/", Token: testToken}); err == nil {
		t.Error("New with user information and Token = nil, want an error")
	} else {
		noSecrets(t, "New error", err.Error(), testToken, "u:p")
	}
}

// TestPinning checks the SHA-256 pin of the backend's certificate with and without CAs.
func TestPinning(t *testing.T) {
	f := newFakeBackend(t)
	srv := f.start(false)
	good := apiclient.Fingerprint(srv.Certificate())
	wrong := strings.Repeat("AB:", 31) + "AB"
	tests := []struct {
		name    string
		mod     func(*apiclient.Config)
		wantErr string
	}{
		{"pin only", func(c *apiclient.Config) { c.RootCAs, c.PinSHA256 = nil, good }, ""},
		{"pin lower-case without colons", func(c *apiclient.Config) {
			c.RootCAs, c.PinSHA256 = nil, strings.ToLower(strings.ReplaceAll(good, ":", ""))
		}, ""},
		{"pin and CA", func(c *apiclient.Config) { c.PinSHA256 = good }, ""},
		{"wrong pin", func(c *apiclient.Config) { c.RootCAs, c.PinSHA256 = nil, wrong }, "not the pinned " + wrong},
		{"wrong pin with CA", func(c *apiclient.Config) { c.PinSHA256 = wrong }, "not the pinned"},
		{"no CA, no pin", func(c *apiclient.Config) { c.RootCAs = nil }, "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, srv, tc.mod)
			before := f.connCount()
			err := c.Health(context.Background())
			if got := f.connCount() - before; got != 1 {
				t.Errorf("connections = %d, want 1 (an untrusted certificate is not retried)", got)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Health = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Health = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCAFile(t *testing.T) {
	f := newFakeBackend(t)
	srv := f.start(false)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "backend.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv, func(cfg *apiclient.Config) { cfg.RootCAs, cfg.CAFile = nil, caFile })
	if err := c.Health(context.Background()); err != nil {
		t.Errorf("Health with CAFile = %v", err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []apiclient.Config{
		{BaseURL: srv.URL, CAFile: empty},
		{BaseURL: srv.URL, CAFile: filepath.Join(dir, "missing.pem")},
		{BaseURL: srv.URL, CAFile: caFile, RootCAs: x509.NewCertPool()},
	} {
		if _, err := apiclient.New(cfg); err == nil {
			t.Errorf("New(%v) = nil error, want one", cfg)
		}
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  apiclient.Config
		want string
	}{
		{"empty", apiclient.Config{}, "not a valid URL"},
		{"http", apiclient.Config{BaseURL: "http://backend.example"}, `scheme "http"`},
		{"no host", apiclient.Config{BaseURL: "https:///v1"}, "no host"},
		{"query", apiclient.Config{BaseURL: "https://backend.example/?a=b"}, "query"},
		{"bad URL keeps password out", apiclient.Config{BaseURL: "https://u:hunter2@backend.example:port/"}, "not a valid URL"},
		{"token with space", apiclient.Config{BaseURL: "https://b.example", Token: "a b"}, "offset 1"},
		{"negative timeout", apiclient.Config{BaseURL: "https://b.example", Timeout: -1}, "negative"},
		{"negative attempts", apiclient.Config{BaseURL: "https://b.example", Retry: apiclient.Retry{Attempts: -1}}, "negative"},
		{"cap below base", apiclient.Config{BaseURL: "https://b.example", Retry: apiclient.Retry{Base: time.Second, Cap: time.Millisecond}}, "below"},
		{"bad pin", apiclient.Config{BaseURL: "https://b.example", PinSHA256: "abc"}, "64 hexadecimal"},
		{"transport with pin", apiclient.Config{BaseURL: "https://b.example", PinSHA256: strings.Repeat("a", 64), Transport: http.DefaultTransport}, "no effect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := apiclient.New(tc.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("New = nil error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error containing %q", err, tc.want)
			}
			noSecrets(t, "New error", err.Error(), "hunter2")
		})
	}
}

// TestTransportOverride checks that Config.Transport carries the requests.
func TestTransportOverride(t *testing.T) {
	f := newFakeBackend(t)
	srv := f.start(false)
	rt := &countingTransport{next: srv.Client().Transport}
	c := newClient(t, srv, func(cfg *apiclient.Config) { cfg.RootCAs, cfg.Transport = nil, rt })
	if err := c.Health(context.Background()); err != nil {
		t.Fatalf("Health = %v", err)
	}
	if rt.n != 1 {
		t.Errorf("transport carried %d requests, want 1", rt.n)
	}
}

type countingTransport struct {
	next http.RoundTripper
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	return c.next.RoundTrip(r)
}

// TestContextCancel checks that cancelling the context ends a long poll and a retry backoff.
func TestContextCancel(t *testing.T) {
	f := newFakeBackend(t)
	srv := f.start(false)
	c := newClient(t, srv, nil)
	_, etag, _, err := c.Config(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, _, err := c.Config(ctx, etag, 60*time.Second)
		done <- err
	}()
	<-f.polling
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled long poll = %v, want context.Canceled", err)
	}

	// A backoff of up to 1 h is cut short by the context.
	f.fail = failTimes("GET /v1/config", 99, 503, "")
	slow := newClient(t, srv, func(cfg *apiclient.Config) { cfg.Retry = apiclient.Retry{Attempts: 3, Base: time.Hour, Cap: time.Hour} })
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		_, _, _, err := slow.Config(ctx2, "", 0)
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); f.hitCount("GET /v1/config") < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second attempt did not come")
		}
	}
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled backoff = %v, want context.Canceled", err)
	}
	if got := f.hitCount("GET /v1/config"); got != 2 {
		t.Errorf("requests = %d, want 2 (one before the first backoff)", got)
	}
}

// TestAttemptTimeout checks that an attempt without answer ends after Config.Timeout and is
// retried.
func TestAttemptTimeout(t *testing.T) {
	f := newFakeBackend(t)
	release := make(chan struct{})
	f.fail = func(w http.ResponseWriter, r *http.Request, hit int) bool {
		if hit > 1 {
			return false
		}
		f.mu.Unlock()
		defer f.mu.Lock()
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	}
	defer close(release)
	c := newClient(t, f.start(false), func(cfg *apiclient.Config) { cfg.Timeout = 100 * time.Millisecond })
	if err := c.Health(context.Background()); err != nil {
		t.Errorf("Health after a hanging first attempt = %v, want nil", err)
	}
	if got := f.hitCount("GET /v1/health"); got != 2 {
		t.Errorf("requests = %d, want 2", got)
	}
}
