package apiclient_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "tok-3f2a9c11d0e8b7a6"

// fakeBackend is an in-memory implementation of the API v1 for the client's tests. It checks
// every request as strictly as the contract demands (token, media type, unknown fields) and
// records what it saw.
type fakeBackend struct {
	t      testing.TB
	token  string // the bearer token required; "" when basic authentication is required instead
	user   string // basic authentication user, if required
	pass   string // basic authentication password, if required
	prefix string // path prefix before /v1

	mu            sync.Mutex
	doc           apiv1.ConfigDocument
	changed       chan struct{} // closed and replaced when doc changes
	crls          map[string][]byte
	license       []byte
	events        map[string]apiv1.Event
	crlURLs       []string
	licenseStatus []apiv1.LicenseStatus
	configStatus  []apiv1.ConfigStatus
	hits          map[string]int    // "METHOD /v1/path" → requests
	auth          map[string]string // "METHOD /v1/path" → last Authorization header
	queries       []string          // raw queries of GET /v1/config
	polling       chan struct{}     // gets a value when a long poll starts waiting
	conns         int               // TCP connections accepted
	// fail, if set, may answer a request itself (it returns true then); called with mu held.
	fail func(w http.ResponseWriter, r *http.Request, hit int) bool
}

func newFakeBackend(t testing.TB) *fakeBackend {
	return &fakeBackend{
		t: t, token: testToken,
		doc:     apiv1.ConfigDocument{Revision: 1, PartnerListenAddress: ":6619", LogLevel: "info"},
		changed: make(chan struct{}),
		crls:    map[string][]byte{},
		events:  map[string]apiv1.Event{},
		hits:    map[string]int{}, auth: map[string]string{},
		polling: make(chan struct{}, 16),
	}
}

// start serves f over TLS on 127.0.0.1 and returns the server; it is closed when the test ends.
func (f *fakeBackend) start(http2 bool) *httptest.Server {
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = http2
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are part of the tests
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
		}
	}
	srv.StartTLS()
	f.t.Cleanup(srv.Close)
	return srv
}

func (f *fakeBackend) etagLocked() string { return `"r` + strconv.FormatInt(f.doc.Revision, 10) + `"` }

func bodyETag(b []byte) string {
	s := sha256.Sum256(b)
	return `"` + hex.EncodeToString(s[:8]) + `"`
}

// setConfig replaces the document with a higher revision and wakes long polls.
func (f *fakeBackend) setConfig(mod func(*apiv1.ConfigDocument)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mod(&f.doc)
	f.doc.Revision++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeBackend) connCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

func (f *fakeBackend) hitCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[key]
}

func writeError(w http.ResponseWriter, status int, code, msg, field string) {
	w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiv1.NewErrorBody(code, msg, field))
}

func (f *fakeBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, f.prefix)
	if !ok {
		writeError(w, 404, apiv1.CodeNotFound, "no such path", "")
		return
	}
	key := r.Method + " " + path
	f.mu.Lock()
	f.hits[key]++
	f.auth[key] = r.Header.Get("Authorization")
	if f.fail != nil && f.fail(w, r, f.hits[key]) {
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()

	if path != apiv1.PathHealth && !f.authorized(r) {
		writeError(w, 401, apiv1.CodeUnauthorized, "missing or invalid token", "")
		return
	}
	switch {
	case key == "GET "+apiv1.PathHealth:
		w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
		_ = json.NewEncoder(w).Encode(apiv1.HealthResponse{Status: apiv1.HealthOK})
	case key == "GET "+apiv1.PathConfig:
		f.serveConfig(w, r)
	case r.Method == "GET" && strings.HasPrefix(path, apiv1.PathCRLPrefix):
		id := strings.TrimPrefix(path, apiv1.PathCRLPrefix)
		f.mu.Lock()
		body, ok := f.crls[id]
		f.mu.Unlock()
		f.serveBytes(w, r, body, ok, apiv1.ContentTypeCRL)
	case key == "GET "+apiv1.PathLicense:
		f.mu.Lock()
		body := f.license
		f.mu.Unlock()
		f.serveBytes(w, r, body, body != nil, apiv1.ContentTypeLicense)
	case key == "POST "+apiv1.PathEvents:
		var req apiv1.EventsRequest
		if !f.decode(w, r, &req, apiv1.MaxEventsRequestBytes) {
			return
		}
		if err := apiv1.ValidateEventsRequest(&req); err != nil {
			writeError(w, 400, apiv1.CodeInvalidField, err.Error(), "")
			return
		}
		var out apiv1.EventsResponse
		f.mu.Lock()
		for _, e := range req.Events {
			if _, dup := f.events[e.ID]; dup {
				out.Duplicates++
				continue
			}
			f.events[e.ID] = e
			out.Accepted++
		}
		f.mu.Unlock()
		w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
		_ = json.NewEncoder(w).Encode(out)
	case key == "POST "+apiv1.PathCRLURLs:
		var req apiv1.CRLURLsRequest
		if f.decode(w, r, &req, apiv1.MaxRequestBytes) {
			f.mu.Lock()
			f.crlURLs = append(f.crlURLs, req.URLs...)
			f.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	case key == "PUT "+apiv1.PathLicenseStatus:
		var req apiv1.LicenseStatus
		if f.decode(w, r, &req, apiv1.MaxRequestBytes) {
			f.mu.Lock()
			f.licenseStatus = append(f.licenseStatus, req)
			f.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	case key == "POST "+apiv1.PathConfigStatus:
		var req apiv1.ConfigStatus
		if f.decode(w, r, &req, apiv1.MaxRequestBytes) {
			f.mu.Lock()
			f.configStatus = append(f.configStatus, req)
			f.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	default:
		writeError(w, 404, apiv1.CodeNotFound, "no such endpoint", "")
	}
}

func (f *fakeBackend) authorized(r *http.Request) bool {
	if f.token != "" {
		return r.Header.Get("Authorization") == "Bearer "+f.token
	}
	u, p, ok := r.BasicAuth()
	return ok && u == f.user && p == f.pass
}

func (f *fakeBackend) decode(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if ct := r.Header.Get("Content-Type"); ct != apiv1.ContentTypeJSON {
		writeError(w, 415, apiv1.CodeUnsupportedMediaType, "Content-Type "+ct, "")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, 400, apiv1.CodeInvalidJSON, err.Error(), "")
		return false
	}
	return true
}

func (f *fakeBackend) serveConfig(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	etag, changed := f.etagLocked(), f.changed
	f.mu.Unlock()
	inm := r.Header.Get("If-None-Match")
	if inm == etag {
		wait := 0
		if s := r.URL.Query().Get("wait"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > 60 {
				writeError(w, 400, apiv1.CodeInvalidField, "wait must be 0–60", "wait")
				return
			}
			wait = n
		}
		if wait > 0 {
			f.polling <- struct{}{}
			t := time.NewTimer(time.Duration(wait) * time.Second)
			defer t.Stop()
			select {
			case <-changed:
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		f.mu.Lock()
		etag = f.etagLocked()
		f.mu.Unlock()
		if inm == etag {
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	f.mu.Lock()
	b, err := json.Marshal(f.doc)
	etag = f.etagLocked()
	f.mu.Unlock()
	if err != nil {
		writeError(w, 500, apiv1.CodeInternal, err.Error(), "")
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
	_, _ = w.Write(b)
}

func (f *fakeBackend) serveBytes(w http.ResponseWriter, r *http.Request, body []byte, ok bool, ct string) {
	if !ok {
		writeError(w, 404, apiv1.CodeNotFound, "none stored", "")
		return
	}
	etag := bodyETag(body)
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// newClient returns a client of srv that trusts its certificate, with tiny retry delays; it is
// closed when the test ends.
func newClient(t testing.TB, srv *httptest.Server, mod func(*apiclient.Config)) *apiclient.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	cfg := apiclient.Config{
		BaseURL: srv.URL, Token: testToken, RootCAs: pool,
		Retry: apiclient.Retry{Attempts: 4, Base: time.Millisecond, Cap: 5 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatalf("New(%v) = %v", cfg, err)
	}
	t.Cleanup(c.Close)
	return c
}

// failTimes answers the first n requests to key with status (and Retry-After, if not empty).
func failTimes(key string, n, status int, retryAfter string) func(http.ResponseWriter, *http.Request, int) bool {
	return func(w http.ResponseWriter, r *http.Request, hit int) bool {
		if r.Method+" "+r.URL.Path != key || hit > n {
			return false
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeError(w, status, fmt.Sprintf("code_%d", status), "injected failure", "")
		return true
	}
}

// noSecrets fails the test when s contains one of the secrets.
func noSecrets(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains the secret %q: %s", what, sec, s)
		}
	}
}
