package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
	"smartproxy/internal/pki"
)

// decodeError decodes an error body and checks its code.
func decodeError(t *testing.T, body []byte, wantCode string) apiv1.ErrorDetail {
	t.Helper()
	eb, err := apiv1.ParseError(body)
	if err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if eb.Error.Code != wantCode {
		t.Errorf("error code = %q (%s), want %q", eb.Error.Code, eb.Error.Message, wantCode)
	}
	return eb.Error
}

func TestHealth(t *testing.T) {
	e := newEnv(t, nil)
	resp, body := e.do("GET", apiv1.PathHealth, "", nil, nil)
	var h apiv1.HealthResponse
	if resp.StatusCode != 200 || json.Unmarshal(body, &h) != nil || h.Status != apiv1.HealthOK {
		t.Errorf("GET /v1/health = %d %s, want 200 ok", resp.StatusCode, body)
	}
}

func TestAuthRefused(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	revoked, info, err := e.st.CreateToken(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.RevokeToken(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, header, reason string
	}{
		{"no header", "", "missing bearer token"},
		{"basic auth", "Basic dXNlcjpwdw==", "not a bearer token"},
		{"empty bearer", "Bearer ", "missing bearer token"},
		{"malformed token", "Bearer '; DROP TABLE tokens; --", "malformed token"},
		{"unknown token", "Bearer " + store.TokenPrefix + strings.Repeat("x", 43), "unknown token"},
		{"revoked token", "Bearer " + revoked, "revoked token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.logs.lines("event=api_auth_failed"))
			resp, body := e.do("GET", apiv1.PathConfig, "", nil, map[string]string{"Authorization": tc.header})
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("GET /v1/config = %d, want 401", resp.StatusCode)
			}
			decodeError(t, body, apiv1.CodeUnauthorized)
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			lines := e.logs.lines("event=api_auth_failed")
			if len(lines) != before+1 {
				t.Fatalf("%d api_auth_failed lines, want exactly one more than %d:\n%s", len(lines), before, e.logs)
			}
			last := lines[len(lines)-1]
			for _, want := range []string{"remote_addr=\"127.0.0.1:", "path=/v1/config", fmt.Sprintf("reason=%q", tc.reason)} {
				if !strings.Contains(last, want) {
					t.Errorf("log line %q lacks %s", last, want)
				}
			}
		})
	}
	// Every authenticated endpoint refuses a request without token, before
	// looking at the body.
	for _, ep := range apiv1.Endpoints() {
		path := strings.Replace(ep.Path, "{id}", "crl-1", 1)
		resp, body := e.do(ep.Method, path, "", []byte(`{`), nil)
		want := http.StatusUnauthorized
		if !ep.Auth {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Errorf("%s %s without token = %d %s, want %d", ep.Method, path, resp.StatusCode, body, want)
		}
	}
	if n := e.count("events") + e.count("crl_urls") + e.count("license_status") + e.count("config_status"); n != 0 {
		t.Errorf("%d rows stored by refused requests", n)
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	e := newEnv(t, nil)
	resp, body := e.do("GET", "/v1/nothing", e.token, nil, nil)
	if resp.StatusCode != 404 {
		t.Errorf("GET /v1/nothing = %d", resp.StatusCode)
	}
	decodeError(t, body, apiv1.CodeNotFound)
	resp, body = e.do("DELETE", apiv1.PathConfig, e.token, nil, nil)
	if resp.StatusCode != 405 || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Errorf("DELETE /v1/config = %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	decodeError(t, body, apiv1.CodeMethodNotAllowed)
	resp, body = e.do("GET", apiv1.PathEvents, e.token, nil, nil)
	if resp.StatusCode != 405 {
		t.Errorf("GET /v1/events = %d", resp.StatusCode)
	}
	decodeError(t, body, apiv1.CodeMethodNotAllowed)
}

// fixture fills the store with one of everything a configuration holds.
type fixture struct {
	ca      *pki.CA
	company *pki.Leaf
	crlDER  []byte
}

func fill(t *testing.T, st *store.Store) fixture {
	t.Helper()
	ctx := context.Background()
	ca, err := pki.NewCA("Partner CA")
	if err != nil {
		t.Fatal(err)
	}
	company, err := ca.Issue(pki.Request{CommonName: "edi.company.example", DNSNames: []string{"edi.company.example"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	crl, err := ca.CRL([]pki.RevokedCert{{SerialNumber: big.NewInt(42)}}, now.Add(-time.Minute), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetSettings(ctx, []store.SettingChange{
		{Key: "partner_listen_address", Value: ":6619"},
		{Key: "company_certificate", Value: string(company.CertPEM)},
		{Key: "company_key", Value: string(company.KeyPEM)},
		{Key: "internal_server.address", Value: "127.0.0.1:3305"},
		{Key: "internal_server.connect_timeout", Value: "5s"},
		{Key: "limits.max_sessions", Value: "100"},
		{Key: "limits.idle_timeout", Value: "10m"},
		{Key: "log_level", Value: "debug"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddCA(ctx, ca.Cert.Raw); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.PutCRL(ctx, store.NewCRL{URL: "http://crl.example/ca.crl", Issuer: "CN=Partner CA", Source: "import",
		DER: crl, Entries: 1, Number: "1", ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddPartner(ctx, store.Partner{OdetteID: "O0013PARTNER", Name: "Partner AG", Enabled: true, Password: "SECRET",
		AllowedNetworks: []string{"127.0.0.0/8"}, CertificateBindings: []store.CertificateBinding{{SubjectSerialNumber: "O0013PARTNER"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddRoute(ctx, store.Route{Name: "out-1", ListenAddress: "127.0.0.1:7001", PartnerAddress: "partner.example:6619",
		PartnerOdetteID: "O0013PARTNER"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddIgnoreRule(ctx, store.IgnoreRule{Substring: "scanner", Description: "known scanner"}); err != nil {
		t.Fatal(err)
	}
	return fixture{ca: ca, company: company, crlDER: crl}
}

func getConfig(t *testing.T, e *env, header map[string]string, query string) (*http.Response, *apiv1.ConfigDocument, []byte) {
	t.Helper()
	resp, doc, body, err := fetchConfig(e, header, query)
	if err != nil {
		t.Fatal(err)
	}
	return resp, doc, body
}

// configResult is what fetchConfig answers, for a poll run in a goroutine.
type configResult struct {
	resp *http.Response
	doc  *apiv1.ConfigDocument
	err  error
}

// pollConfig runs fetchConfig in a goroutine and hands its answer over the
// returned channel; the test's goroutine reports any error.
func pollConfig(e *env, header map[string]string, query string) <-chan configResult {
	done := make(chan configResult, 1)
	go func() {
		resp, doc, _, err := fetchConfig(e, header, query)
		done <- configResult{resp, doc, err}
	}()
	return done
}

// fetchConfig is getConfig without the test: it returns the error instead,
// so that a goroutine other than the test's can use it.
func fetchConfig(e *env, header map[string]string, query string) (*http.Response, *apiv1.ConfigDocument, []byte, error) {
	resp, body, err := e.send("GET", apiv1.PathConfig+query, e.token, nil, header)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, nil, body, err
	}
	var doc apiv1.ConfigDocument
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return resp, nil, body, fmt.Errorf("configuration document: %w\n%s", err, body)
	}
	return resp, &doc, body, nil
}

func TestConfigDocument(t *testing.T) {
	e := newEnv(t, nil)
	fx := fill(t, e.st)
	resp, doc, body := getConfig(t, e, nil, "")
	if doc == nil {
		t.Fatalf("GET /v1/config = %d %s", resp.StatusCode, body)
	}
	sum := sha256.Sum256(body)
	if got, want := resp.Header.Get("ETag"), `"`+hex.EncodeToString(sum[:])+`"`; got != want {
		t.Errorf("ETag = %s, want %s (the hash of the body)", got, want)
	}
	rev, _ := e.st.Revision(context.Background())
	if doc.Revision != rev || doc.PartnerListenAddress != ":6619" || doc.CompanyIdentity.CertificateChainPEM != string(fx.company.CertPEM) ||
		string(doc.CompanyIdentity.PrivateKeyPEM) != string(fx.company.KeyPEM) || doc.LogLevel != "debug" ||
		doc.Limits.MaxSessions != 100 || doc.Limits.IdleTimeout.Std() != 10*time.Minute {
		t.Errorf("document = %+v", doc)
	}
	if doc.InternalServer == nil || doc.InternalServer.Address != "127.0.0.1:3305" || doc.InternalServer.ConnectTimeout.Std() != 5*time.Second ||
		doc.InternalServer.TLS != nil {
		t.Errorf("internal server = %+v", doc.InternalServer)
	}
	if len(doc.TrustedCACertificatesPEM) != 1 || doc.TrustedCACertificatesPEM[0] != string(fx.ca.CertPEM) {
		t.Errorf("trusted CAs = %q", doc.TrustedCACertificatesPEM)
	}
	if len(doc.Partners) != 1 || doc.Partners[0].Password != "SECRET" || doc.Partners[0].Direction != apiv1.DirectionBoth ||
		doc.Partners[0].AllowedNetworks[0] != "127.0.0.0/8" {
		t.Errorf("partners = %+v", doc.Partners)
	}
	if len(doc.Routes) != 1 || doc.Routes[0].Name != "out-1" || len(doc.LogIgnoreRules) != 1 || doc.LogIgnoreRules[0].Substring != "scanner" {
		t.Errorf("routes = %+v, rules = %+v", doc.Routes, doc.LogIgnoreRules)
	}
	crlSum := sha256.Sum256(fx.crlDER)
	if len(doc.CRLs) != 1 || doc.CRLs[0].SHA256 != hex.EncodeToString(crlSum[:]) || doc.CRLs[0].Size != int64(len(fx.crlDER)) ||
		doc.CRLs[0].URL != "http://crl.example/ca.crl" || doc.CRLs[0].NextUpdate == nil {
		t.Errorf("crls = %+v", doc.CRLs)
	}
	if err := apiv1.ValidateCRLID(doc.CRLs[0].ID); err != nil {
		t.Errorf("CRL id %q: %v", doc.CRLs[0].ID, err)
	}
	// If-None-Match with the current ETag: 304 without body.
	etag := resp.Header.Get("ETag")
	resp, _, body = getConfig(t, e, map[string]string{"If-None-Match": etag}, "")
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != etag {
		t.Errorf("GET with If-None-Match = %d, %d bytes, ETag %q, want 304 without body", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
	// A stale ETag gets the document.
	resp, doc, _ = getConfig(t, e, map[string]string{"If-None-Match": `"old"`}, "?wait=5")
	if resp.StatusCode != http.StatusOK || doc == nil {
		t.Errorf("GET with a stale ETag = %d, want 200 at once", resp.StatusCode)
	}
	for _, q := range []string{"?wait=61", "?wait=-1", "?wait=abc", "?wait=1.5", "?wait='%3B%20DROP%20TABLE%20partners"} {
		resp, _, body := getConfig(t, e, nil, q)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /v1/config%s = %d, want 400", q, resp.StatusCode)
			continue
		}
		if d := decodeError(t, body, apiv1.CodeInvalidField); d.Field != "wait" {
			t.Errorf("GET /v1/config%s: field %q, want wait", q, d.Field)
		}
	}
	if doc.ProxyProtocol != nil {
		t.Errorf("proxy_protocol = %+v without the setting, want absent (off)", doc.ProxyProtocol)
	}
	if err := e.st.SetSettings(context.Background(), []store.SettingChange{{Key: "proxy_protocol.allowed_sources", Value: "10.0.0.5,10.0.1.0/29"}}); err != nil {
		t.Fatal(err)
	}
	if _, doc, body = getConfig(t, e, nil, ""); doc == nil || doc.ProxyProtocol == nil ||
		strings.Join(doc.ProxyProtocol.AllowedSources, " ") != "10.0.0.5 10.0.1.0/29" {
		t.Errorf("document after setting proxy_protocol.allowed_sources: %s", body)
	}
}

// TestLongPollWokenByOtherProcess holds a long poll and changes the
// database through a second store handle, as `smartproxy-api partner add`
// does from another process. The poll must answer 200 with the new document
// within its wait.
func TestLongPollWokenByOtherProcess(t *testing.T) {
	e := newEnv(t, nil)
	fill(t, e.st)
	resp, doc, _ := getConfig(t, e, nil, "")
	etag := resp.Header.Get("ETag")
	cli, err := store.Open(context.Background(), e.dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	done := pollConfig(e, map[string]string{"If-None-Match": etag}, "?wait=30")
	// The change must come while the poll waits, or the wake-up is not what
	// this test sees.
	waitFor(t, "the long poll to start", func() bool {
		return e.srv.waiting.Load() == 1
	})
	changed := time.Now()
	if err := cli.AddPartner(context.Background(), store.Partner{OdetteID: "O0013NEW", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.StatusCode != http.StatusOK || r.doc == nil {
		t.Fatalf("long poll = %d, want 200 with the changed document", r.resp.StatusCode)
	}
	if r.doc.Revision <= doc.Revision || len(r.doc.Partners) != 2 || r.resp.Header.Get("ETag") == etag {
		t.Errorf("long poll answer: revision %d (was %d), %d partners, want the new partner", r.doc.Revision, doc.Revision, len(r.doc.Partners))
	}
	t.Logf("long poll answered %v after the change in the other handle", time.Since(changed).Round(time.Millisecond))
}

func TestLongPollTimesOut(t *testing.T) {
	e := newEnv(t, nil)
	resp, _, _ := getConfig(t, e, nil, "")
	etag := resp.Header.Get("ETag")
	resp, _, body := getConfig(t, e, map[string]string{"If-None-Match": "W/" + etag}, "?wait=1")
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != etag {
		t.Errorf("long poll without change = %d %q, want 304 with the ETag", resp.StatusCode, body)
	}
}

func TestCRLDownload(t *testing.T) {
	e := newEnv(t, nil)
	fx := fill(t, e.st)
	_, doc, _ := getConfig(t, e, nil, "")
	info := doc.CRLs[0]
	resp, body := e.do("GET", apiv1.CRLPath(info.ID), e.token, nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, fx.crlDER) || resp.Header.Get("ETag") != info.ETag ||
		resp.Header.Get("Content-Type") != apiv1.ContentTypeCRL {
		t.Fatalf("GET %s = %d, %d bytes, ETag %q, type %q", apiv1.CRLPath(info.ID), resp.StatusCode, len(body),
			resp.Header.Get("ETag"), resp.Header.Get("Content-Type"))
	}
	resp, body = e.do("GET", apiv1.CRLPath(info.ID), e.token, nil, map[string]string{"If-None-Match": info.ETag})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("GET CRL with If-None-Match = %d, want 304", resp.StatusCode)
	}
	resp, body = e.do("HEAD", apiv1.CRLPath(info.ID), e.token, nil, nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(fx.crlDER)) || len(body) != 0 {
		t.Errorf("HEAD CRL = %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	for _, id := range []string{"crl-999", "crl-abc", "crl-01", "..", "%27%3B%20DROP%20TABLE%20crls%3B%20--"} {
		resp, body := e.do("GET", apiv1.PathCRLPrefix+id, e.token, nil, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET CRL %q = %d, want 404", id, resp.StatusCode)
			continue
		}
		decodeError(t, body, apiv1.CodeNotFound)
	}
}

// TestBadBodies sends broken bodies to every endpoint that takes one and
// expects a clear error and nothing stored.
func TestBadBodies(t *testing.T) {
	e := newEnv(t, nil)
	big := func(n int) []byte {
		return []byte(`{"urls":["http://x/` + strings.Repeat("a", n) + `"]}`)
	}
	tests := []struct {
		name, method, path string
		body               []byte
		header             map[string]string
		status             int
		code, field        string
	}{
		{"malformed", "POST", apiv1.PathEvents, []byte(`{"events":[{"id":`), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"not an object", "POST", apiv1.PathCRLURLs, []byte(`["http://x/a.crl"]`), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"unknown field", "POST", apiv1.PathCRLURLs, []byte(`{"urls":["http://x/a.crl"],"drop":"table"}`), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"unknown nested field", "PUT", apiv1.PathLicenseStatus, []byte(`{"proxy_id":"P","valid":false,"expires_at":null,"reason":"","x":1}`), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"wrong type", "POST", apiv1.PathConfigStatus, []byte(`{"revision":"one","etag":"","applied":true,"errors":[]}`), nil, 400, apiv1.CodeInvalidJSON, "revision"},
		{"trailing data", "POST", apiv1.PathCRLURLs, []byte(`{"urls":["http://x/a.crl"]} {}`), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"empty", "POST", apiv1.PathCRLURLs, []byte(``), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"invalid UTF-8", "POST", apiv1.PathCRLURLs, []byte("{\"urls\":[\"http://x/\xff.crl\"]}"), nil, 400, apiv1.CodeInvalidJSON, ""},
		{"text/plain", "POST", apiv1.PathCRLURLs, []byte(`{"urls":["http://x/a.crl"]}`), map[string]string{"Content-Type": "text/plain"}, 415, apiv1.CodeUnsupportedMediaType, ""},
		{"no content type", "POST", apiv1.PathCRLURLs, []byte(`{"urls":["http://x/a.crl"]}`), map[string]string{"Content-Type": ""}, 415, apiv1.CodeUnsupportedMediaType, ""},
		{"too large", "POST", apiv1.PathCRLURLs, big(apiv1.MaxRequestBytes), nil, 413, apiv1.CodeBodyTooLarge, ""},
		{"events too large", "POST", apiv1.PathEvents, []byte(`{"events":[{"id":"` + strings.Repeat("a", apiv1.MaxEventsRequestBytes) + `"}]}`), nil, 413, apiv1.CodeBodyTooLarge, ""},
		{"chunked too large", "POST", apiv1.PathConfigStatus, append([]byte(`{"etag":"`), bytes.Repeat([]byte("a"), apiv1.MaxRequestBytes)...), map[string]string{"X-Chunked": "1"}, 413, apiv1.CodeBodyTooLarge, ""},
		{"bad URL", "POST", apiv1.PathCRLURLs, []byte(`{"urls":["http://x/a.crl","ftp://x/b.crl"]}`), nil, 400, apiv1.CodeInvalidField, "urls[1]"},
		{"no URL", "POST", apiv1.PathCRLURLs, []byte(`{"urls":[]}`), nil, 400, apiv1.CodeInvalidField, "urls"},
		{"bad severity", "POST", apiv1.PathEvents, []byte(`{"events":[{"id":"a1","time":"2026-03-01T00:00:00Z","severity":"loud","name":"x","source":"server"}]}`), nil, 400, apiv1.CodeInvalidField, "events[0].severity"},
		{"bad event id", "POST", apiv1.PathEvents, []byte(`{"events":[{"id":"'; DROP TABLE events; --","time":"2026-03-01T00:00:00Z","severity":"info","name":"x","source":"server"}]}`), nil, 400, apiv1.CodeInvalidField, "events[0].id"},
		{"NUL in message", "POST", apiv1.PathEvents, []byte(`{"events":[{"id":"a2","time":"2026-03-01T00:00:00Z","severity":"info","name":"x","source":"server","message":"a\u0000b"}]}`), nil, 400, apiv1.CodeInvalidField, "events[0].message"},
		{"valid without expiry", "PUT", apiv1.PathLicenseStatus, []byte(`{"proxy_id":"P","valid":true,"expires_at":null,"reason":""}`), nil, 400, apiv1.CodeInvalidField, "expires_at"},
		{"bad etag", "POST", apiv1.PathConfigStatus, []byte(`{"revision":1,"etag":"'; DROP TABLE config_status; --","applied":true,"errors":[]}`), nil, 400, apiv1.CodeInvalidField, "etag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.header["X-Chunked"] != "" {
				// Send without Content-Length so that only the reader's limit catches it.
				req, _ := http.NewRequest(tc.method, e.base+tc.path, struct{ *bytes.Reader }{bytes.NewReader(tc.body)})
				req.Header.Set("Authorization", "Bearer "+e.token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := e.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var eb apiv1.ErrorBody
				json.NewDecoder(resp.Body).Decode(&eb)
				if resp.StatusCode != tc.status || eb.Error.Code != tc.code {
					t.Errorf("%s %s = %d %q, want %d %s", tc.method, tc.path, resp.StatusCode, eb.Error.Code, tc.status, tc.code)
				}
				return
			}
			resp, body := e.do(tc.method, tc.path, e.token, tc.body, tc.header)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.status)
			}
			if resp.Header.Get("Content-Type") != apiv1.ContentTypeJSON {
				t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
			}
			d := decodeError(t, body, tc.code)
			if d.Field != tc.field {
				t.Errorf("field = %q, want %q (%s)", d.Field, tc.field, d.Message)
			}
			if d.Message == "" {
				t.Error("no message")
			}
		})
	}
	for _, table := range []string{"events", "crl_urls", "license_status", "config_status"} {
		if n := e.count(table); n != 0 {
			t.Errorf("%d rows in %s after refused requests", n, table)
		}
	}
}

// hostile are texts with SQL metacharacters, quotes and other specials.
var hostile = []string{
	"'; DROP TABLE partners; --",
	`Robert'); DELETE FROM events; --`,
	`"double" 'single' ` + "`back` \\ % _ ;",
	"1 OR 1=1 /* comment */",
	"ünïcödé 漢字 \t tab",
}

func TestSQLMetacharactersThroughAPI(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	before, err := e.st.TableCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var evs []apiv1.Event
	for i, s := range hostile {
		evs = append(evs, apiv1.Event{ID: fmt.Sprintf("ev-%d", i), Time: time.Now().UTC(), Severity: apiv1.SeverityInfo,
			Name: "name_" + strings.Map(func(r rune) rune {
				if r <= ' ' || r >= 0x7f {
					return '_'
				}
				return r
			}, s),
			OdetteID: s, RemoteAddr: s, Message: s, Fields: map[string]string{s: s}, Source: apiv1.SourceServer})
	}
	resp, body := e.do("POST", apiv1.PathEvents, e.token, mustJSON(t, apiv1.EventsRequest{Events: evs}), nil)
	var er apiv1.EventsResponse
	if resp.StatusCode != 200 || json.Unmarshal(body, &er) != nil || er.Accepted != len(hostile) {
		t.Fatalf("POST events = %d %s", resp.StatusCode, body)
	}
	stored, err := e.st.Events(ctx, store.EventFilter{})
	if err != nil || len(stored) != len(hostile) {
		t.Fatalf("Events() = %d, %v", len(stored), err)
	}
	for i, ev := range stored {
		s := hostile[i]
		if ev.OdetteID != s || ev.RemoteAddr != s || ev.Message != s || ev.Fields[s] != s || ev.Name != evs[i].Name {
			t.Errorf("event %d stored as %+v, want the texts verbatim", i, ev)
		}
	}
	// CRL URLs: stored verbatim or refused, never interpreted.
	urls := []string{"http://crl.example/a.crl?q=';DROP%20TABLE%20crl_urls;--", `http://crl.example/"quoted"`}
	resp, body = e.do("POST", apiv1.PathCRLURLs, e.token, mustJSON(t, apiv1.CRLURLsRequest{URLs: urls}), nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST crl-urls = %d %s", resp.StatusCode, body)
	}
	list, _ := e.st.CRLURLs(ctx)
	if len(list) != 2 || list[0].URL != urls[0] || list[1].URL != urls[1] {
		t.Errorf("CRL URLs = %+v", list)
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	ls := apiv1.LicenseStatus{ProxyID: hostile[0], Valid: true, ExpiresAt: &exp, Reason: hostile[2]}
	if resp, body := e.do("PUT", apiv1.PathLicenseStatus, e.token, mustJSON(t, ls), nil); resp.StatusCode != 204 {
		t.Fatalf("PUT license-status = %d %s", resp.StatusCode, body)
	}
	cs := apiv1.ConfigStatus{Revision: 3, ETag: `"abc"`, Errors: []apiv1.ConfigError{{Field: hostile[0], Message: hostile[1]}}}
	if resp, body := e.do("POST", apiv1.PathConfigStatus, e.token, mustJSON(t, cs), nil); resp.StatusCode != 204 {
		t.Fatalf("POST config-status = %d %s", resp.StatusCode, body)
	}
	clients, err := e.st.Clients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := clients[0]
	if c.Name != "dmz-1" || c.License == nil || c.License.ProxyID != hostile[0] || c.License.Reason != hostile[2] ||
		c.Config == nil || c.Config.Errors[0].Field != hostile[0] || c.Config.Errors[0].Message != hostile[1] {
		t.Errorf("client status = %+v %+v %+v", c, c.License, c.Config)
	}
	after, err := e.st.TableCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("tables before %v, after %v", before, after)
	}
	if after["partners"] != before["partners"] || after["tokens"] != before["tokens"] {
		t.Errorf("rows changed: before %v, after %v", before, after)
	}
}

func TestEventsDedup(t *testing.T) {
	e := newEnv(t, nil)
	req := apiv1.EventsRequest{Events: []apiv1.Event{
		{ID: "5f0c6e1e2b7d4c3a9e8f7a6b5c4d3e2f", Time: time.Now().UTC(), Severity: apiv1.SeverityInfo, Name: "tunnel_up", Source: apiv1.SourceClient},
		{ID: "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5", Time: time.Now().UTC(), Severity: apiv1.SeverityWarning, Name: "partner_unknown", Source: apiv1.SourceServer},
	}}
	for i, want := range []apiv1.EventsResponse{{Accepted: 2}, {Duplicates: 2}} {
		resp, body := e.do("POST", apiv1.PathEvents, e.token, mustJSON(t, req), nil)
		var got apiv1.EventsResponse
		if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || got != want {
			t.Errorf("POST events #%d = %d %s, want %+v", i+1, resp.StatusCode, body, want)
		}
	}
	// Another client resending the same ids is deduplicated too.
	resp, body := e.do("POST", apiv1.PathEvents, e.client2, mustJSON(t, req), nil)
	var got apiv1.EventsResponse
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || got.Duplicates != 2 {
		t.Errorf("POST events from a second client = %s", body)
	}
	if n := e.count("events"); n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
}

func TestLicense(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	resp, body := e.do("GET", apiv1.PathLicense, e.token, nil, nil)
	if resp.StatusCode != 404 {
		t.Errorf("GET license before any status = %d", resp.StatusCode)
	}
	decodeError(t, body, apiv1.CodeNotFound)
	ls := apiv1.LicenseStatus{ProxyID: "SPX-AAAA-BBBB-CCCC-DDDD", Reason: "no license installed"}
	if resp, body := e.do("PUT", apiv1.PathLicenseStatus, e.token, mustJSON(t, ls), nil); resp.StatusCode != 204 {
		t.Fatalf("PUT license-status = %d %s", resp.StatusCode, body)
	}
	resp, body = e.do("GET", apiv1.PathLicense, e.token, nil, nil)
	if resp.StatusCode != 404 || !strings.Contains(string(body), "SPX-AAAA-BBBB-CCCC-DDDD") {
		t.Errorf("GET license without one stored = %d %s", resp.StatusCode, body)
	}
	file := []byte(`{"license":"bytes"}`)
	sum := sha256.Sum256(file)
	if err := e.st.PutLicense(ctx, store.License{ProxyID: ls.ProxyID, Customer: "ACME", NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), SHA256: hex.EncodeToString(sum[:]), File: file}); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do("GET", apiv1.PathLicense, e.token, nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, file) || resp.Header.Get("Content-Type") != apiv1.ContentTypeLicense {
		t.Fatalf("GET license = %d %q", resp.StatusCode, body)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := e.do("GET", apiv1.PathLicense, e.token, nil, map[string]string{"If-None-Match": etag}); resp.StatusCode != 304 {
		t.Errorf("GET license with If-None-Match = %d, want 304", resp.StatusCode)
	}
	// The other client has not reported a Proxy ID.
	if resp, _ := e.do("GET", apiv1.PathLicense, e.client2, nil, nil); resp.StatusCode != 404 {
		t.Errorf("GET license for another client = %d, want 404", resp.StatusCode)
	}
}

// TestShutdownEndsLongPoll stops the server while a long poll waits: the
// poll is answered with 304 at once instead of holding the shutdown.
func TestShutdownEndsLongPoll(t *testing.T) {
	e := newEnv(t, nil)
	resp, _, _ := getConfig(t, e, nil, "")
	etag := resp.Header.Get("ETag")
	done := pollConfig(e, map[string]string{"If-None-Match": etag}, "?wait=60")
	waitFor(t, "the long poll to start", func() bool {
		return e.srv.waiting.Load() == 1
	})
	start := time.Now()
	e.stop()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := r.resp.StatusCode; got != http.StatusNotModified {
		t.Errorf("long poll during shutdown = %d, want 304", got)
	}
	t.Logf("shutdown with a waiting long poll took %v", time.Since(start).Round(time.Millisecond))
}

// TestTunnelReport checks that the tunnel state of a license status report is kept for the
// web admin, and that a repeated report is not logged again.
func TestTunnelReport(t *testing.T) {
	e := newEnv(t, nil)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	since := exp.Add(-2 * time.Hour)
	put := func(tun *apiv1.TunnelState) {
		t.Helper()
		ls := apiv1.LicenseStatus{ProxyID: "PX-1", Reason: "no license installed", Tunnel: tun}
		if resp, body := e.do("PUT", apiv1.PathLicenseStatus, e.token, mustJSON(t, ls), nil); resp.StatusCode != 204 {
			t.Fatalf("PUT license-status = %d %s", resp.StatusCode, body)
		}
	}
	if _, ok := e.srv.Tunnel(1); ok {
		t.Fatal("a tunnel state before any report")
	}
	put(&apiv1.TunnelState{Streams: 2, OpenSessions: 5, ConnectedAt: &since})
	put(&apiv1.TunnelState{Streams: 2, OpenSessions: 7, ConnectedAt: &since})
	rep, ok := e.srv.Tunnel(1)
	if !ok || rep.Streams != 2 || rep.OpenSessions != 7 || !rep.ConnectedAt.Equal(since) || time.Since(rep.ReportedAt) > time.Minute {
		t.Errorf("Tunnel(1) = %+v, %v; want the second report", rep, ok)
	}
	if n := strings.Count(e.logs.String(), "the DMZ server has no valid license"); n != 1 {
		t.Errorf("the unchanged license status was logged %d times, want once", n)
	}
	put(nil) // from a client that does not report its tunnel: the last state stays
	if rep, ok := e.srv.Tunnel(1); !ok || rep.OpenSessions != 7 {
		t.Errorf("Tunnel(1) after a report without tunnel = %+v, %v", rep, ok)
	}
}
