package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
	"smartproxy/internal/pki"
)

// crlServer serves CRLs by path with ETag and Last-Modified, answers
// If-None-Match with 304 and records the conditional headers it got.
type crlServer struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   map[string][]byte
	requests []http.Header
}

func newCRLServer(t testing.TB) *crlServer {
	cs := &crlServer{bodies: map[string][]byte{}}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		body, ok := cs.bodies[r.URL.Path]
		cs.requests = append(cs.requests, r.Header.Clone())
		cs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", "Sun, 01 Mar 2026 10:00:00 GMT")
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *crlServer) set(path string, body []byte) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.bodies[path] = body
}

func (cs *crlServer) lastRequest() http.Header {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.requests[len(cs.requests)-1]
}

// fetcherEnv is a store with a trusted CA and a Fetcher whose interval is
// zero-ish, so that every URL is due at every pass.
type fetcherEnv struct {
	st   *store.Store
	f    *Fetcher
	ca   *pki.CA
	logs *logBuffer
	srv  *crlServer
}

func newFetcherEnv(t *testing.T, cfg FetcherConfig) *fetcherEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "api.db"), store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := pki.NewCA("Partner CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddCA(ctx, ca.Cert.Raw); err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger()
	if cfg.Interval == 0 {
		cfg.Interval = time.Nanosecond
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = time.Nanosecond
	}
	f, err := NewFetcher(st, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fetcherEnv{st: st, f: f, ca: ca, logs: logs, srv: newCRLServer(t)}
}

func (e *fetcherEnv) crl(t *testing.T, serials ...int64) []byte {
	t.Helper()
	var revoked []pki.RevokedCert
	for _, s := range serials {
		revoked = append(revoked, pki.RevokedCert{SerialNumber: big.NewInt(s)})
	}
	now := time.Now()
	der, err := e.ca.CRL(revoked, now.Add(-time.Minute), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (e *fetcherEnv) url(t *testing.T, u string) store.CRLURL {
	t.Helper()
	list, err := e.st.CRLURLs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range list {
		if x.URL == u {
			return x
		}
	}
	t.Fatalf("no CRL URL %s", u)
	return store.CRLURL{}
}

func (e *fetcherEnv) stored(t *testing.T, u string) []byte {
	t.Helper()
	ctx := context.Background()
	crls, err := e.st.CRLs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crls {
		if c.URL == u {
			b, err := e.st.ReadCRL(ctx, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	return nil
}

func TestFetcherDownloadsAndRevalidates(t *testing.T) {
	e := newFetcherEnv(t, FetcherConfig{})
	ctx := context.Background()
	first := e.crl(t, 1, 2, 3)
	e.srv.set("/ca.crl", pki.EncodeCRLPEM(first)) // served as PEM: stored as DER
	u := e.srv.URL + "/ca.crl"
	if _, err := e.st.AddCRLURL(ctx, u); err != nil {
		t.Fatal(err)
	}
	if n := e.f.FetchDue(ctx); n != 1 {
		t.Fatalf("FetchDue() = %d, want 1", n)
	}
	if got := e.stored(t, u); !bytes.Equal(got, first) {
		t.Fatalf("stored CRL = %d bytes, want the served one (%d)", len(got), len(first))
	}
	st := e.url(t, u)
	if st.LastStatus != "updated" || st.ETag == "" || st.LastModified == "" || st.Failures != 0 {
		t.Errorf("URL status = %+v", st)
	}
	crls, _ := e.st.CRLs(ctx)
	if len(crls) != 1 || crls[0].Entries != 3 || crls[0].Source != "download" || crls[0].Number == "" {
		t.Errorf("CRL metadata = %+v", crls)
	}
	// The next pass sends the validators and gets 304.
	rev, _ := e.st.Revision(ctx)
	e.f.FetchDue(ctx)
	h := e.srv.lastRequest()
	if h.Get("If-None-Match") != st.ETag || h.Get("If-Modified-Since") != st.LastModified {
		t.Errorf("conditional headers = %q / %q, want %q / %q", h.Get("If-None-Match"), h.Get("If-Modified-Since"), st.ETag, st.LastModified)
	}
	if got := e.url(t, u).LastStatus; got != "not_modified" {
		t.Errorf("status after 304 = %q", got)
	}
	if r, _ := e.st.Revision(ctx); r != rev {
		t.Errorf("revision changed by a 304")
	}
	// A new CRL replaces the old one and bumps the revision.
	second := e.crl(t, 1, 2, 3, 4)
	e.srv.set("/ca.crl", second)
	e.f.FetchDue(ctx)
	if got := e.stored(t, u); !bytes.Equal(got, second) {
		t.Errorf("stored CRL after an update differs")
	}
	if r, _ := e.st.Revision(ctx); r <= rev {
		t.Errorf("revision not bumped by a new CRL")
	}
	if l := e.logs.lines("CRL downloaded and stored", `url="`+u+`"`); len(l) != 2 {
		t.Errorf("%d download lines, want 2:\n%s", len(l), e.logs)
	}
}

func TestFetcherKeepsOldCRLOnBadInput(t *testing.T) {
	e := newFetcherEnv(t, FetcherConfig{MaxSize: 64 << 10})
	ctx := context.Background()
	good := e.crl(t, 7)
	u := e.srv.URL + "/ca.crl"
	e.srv.set("/ca.crl", good)
	if _, err := e.st.AddCRLURL(ctx, u); err != nil {
		t.Fatal(err)
	}
	e.f.FetchDue(ctx)
	if !bytes.Equal(e.stored(t, u), good) {
		t.Fatal("the good CRL was not stored")
	}
	badSig := bytes.Clone(e.crl(t, 7, 8))
	badSig[len(badSig)-1] ^= 0xff            // inside the signature
	impostor, err := pki.NewCA("Partner CA") // same name, other key
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	foreign, err := impostor.CRL(nil, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		body   []byte
		status string
		errHas string
	}{
		{"bad signature", badSig, "rejected", ""},
		{"impostor CA", foreign, "rejected", "issuer"},
		{"not a CRL", []byte("'; DROP TABLE crls; --"), "rejected", ""},
		{"PEM of something else", pki.EncodeCertPEM(e.ca.Cert), "rejected", "X509 CRL"},
		{"too large", bytes.Repeat([]byte{0x30}, 65<<10), "rejected", "limit"},
		{"gone", nil, "failed", "404"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.body == nil {
				e.srv.mu.Lock()
				delete(e.srv.bodies, "/ca.crl")
				e.srv.mu.Unlock()
			} else {
				e.srv.set("/ca.crl", tc.body)
			}
			e.f.FetchDue(ctx)
			st := e.url(t, u)
			if st.LastStatus != tc.status || !strings.Contains(st.LastError, tc.errHas) || st.Failures != i+1 {
				t.Errorf("status = %q %q (failures %d), want %q containing %q", st.LastStatus, st.LastError, st.Failures, tc.status, tc.errHas)
			}
			if !bytes.Equal(e.stored(t, u), good) {
				t.Error("the stored CRL was replaced")
			}
		})
	}
	if l := e.logs.lines("event=crl_fetch_failed", `url="`+u+`"`); len(l) != len(tests) {
		t.Errorf("%d crl_fetch_failed lines, want %d", len(l), len(tests))
	}
}

func TestFetcherBackoff(t *testing.T) {
	e := newFetcherEnv(t, FetcherConfig{Interval: time.Hour, RetryInterval: time.Minute})
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	next := at.Add(30 * time.Minute)
	tests := []struct {
		u    store.CRLURL
		crl  *store.CRL
		want time.Time
	}{
		{store.CRLURL{}, nil, time.Time{}},
		{store.CRLURL{LastAttemptAt: at}, nil, at.Add(time.Hour)},
		{store.CRLURL{LastAttemptAt: at}, &store.CRL{NextUpdate: next}, next},
		{store.CRLURL{LastAttemptAt: at, Failures: 1}, nil, at.Add(time.Minute)},
		{store.CRLURL{LastAttemptAt: at, Failures: 3}, nil, at.Add(4 * time.Minute)},
		{store.CRLURL{LastAttemptAt: at, Failures: 30}, nil, at.Add(time.Hour)},
	}
	for _, tc := range tests {
		if got := e.f.due(tc.u, tc.crl); !got.Equal(tc.want) {
			t.Errorf("due(%+v) = %v, want %v", tc.u, got, tc.want)
		}
	}
}

// TestReportedURLFetchedSoon reports a new URL through the API and expects
// the running downloader to fetch it at once, not at its next check.
func TestReportedURLFetchedSoon(t *testing.T) {
	srv := newCRLServer(t)
	e := newEnv(t, func(c *Config) { c.CRL.CheckInterval = time.Hour })
	ctx := context.Background()
	ca, err := pki.NewCA("Reported CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.AddCA(ctx, ca.Cert.Raw); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := ca.CRL([]pki.RevokedCert{{SerialNumber: big.NewInt(99)}}, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	srv.set("/reported.crl", der)
	u := srv.URL + "/reported.crl"
	resp, body := e.do("POST", apiv1.PathCRLURLs, e.token, mustJSON(t, apiv1.CRLURLsRequest{URLs: []string{u}}), nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST crl-urls = %d %s", resp.StatusCode, body)
	}
	// The CRL is stored first and the URL's fetch status written after it: wait for both.
	waitFor(t, "the reported CRL to be stored and its fetch recorded", func() bool {
		crls, err := e.st.CRLs(ctx)
		list, lerr := e.st.CRLURLs(ctx)
		return err == nil && len(crls) == 1 && crls[0].URL == u && lerr == nil && len(list) == 1 && list[0].LastStatus != ""
	})
	_, doc, _ := getConfig(t, e, nil, "")
	if len(doc.CRLs) != 1 || doc.CRLs[0].URL != u {
		t.Errorf("document CRLs = %+v", doc.CRLs)
	}
	list, _ := e.st.CRLURLs(ctx)
	if len(list) != 1 || !list[0].Reported || list[0].ReportedBy != "dmz-1" || list[0].LastStatus != "updated" {
		t.Errorf("CRL URLs = %+v", list)
	}
}
