package webadmin_test

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"smartproxy/backend/store"
	"smartproxy/internal/pki"
)

var (
	scriptTagRE   = regexp.MustCompile(`<script\b[^>]*>`)
	handlerAttrRE = regexp.MustCompile(`\son[a-z]+\s*=`)
)

// session is an HTTP client of the web admin, logged in or not.
type session struct {
	t    *testing.T
	be   *backendProc
	http *http.Client
}

func (s *session) do(req *http.Request) (*http.Response, string) {
	s.t.Helper()
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, string(body)
}

func (s *session) get(path string) (*http.Response, string) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.be.base+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.do(req)
}

// post sends a form as a same-origin browser does.
func (s *session) post(path string, form url.Values) (*http.Response, string) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.be.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.be.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return s.do(req)
}

// postFiles sends a multipart form with files as a same-origin browser does.
func (s *session) postFiles(path string, files map[string][]byte) (*http.Response, string) {
	s.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for field, data := range files {
		w, err := mw.CreateFormFile(field, field+".pem")
		if err != nil {
			s.t.Fatal(err)
		}
		w.Write(data)
	}
	mw.Close()
	req, err := http.NewRequest(http.MethodPost, s.be.base+path, &buf)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Origin", s.be.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return s.do(req)
}

func (s *session) login(user, password string) (*http.Response, string) {
	s.t.Helper()
	return s.post("/admin/login", url.Values{"user": {user}, "password": {password}})
}

// TestSecurity checks the web admin's defences over HTTP against a real
// smartproxy-api process.
func TestSecurity(t *testing.T) {
	be := startBackend(t)
	ctx := context.Background()
	s := &session{t: t, be: be, http: be.client(t)}

	// Session cookie flags.
	resp, _ := s.login("admin", adminPassword)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %s, want 303", resp.Status)
	}
	sc := resp.Header.Values("Set-Cookie")
	if len(sc) != 1 || !strings.HasPrefix(sc[0], "__Host-smartproxy-admin=") {
		t.Fatalf("login Set-Cookie = %q", sc)
	}
	for _, attr := range []string{"; Path=/", "; HttpOnly", "; Secure", "; SameSite=Strict", "; Max-Age="} {
		if !strings.Contains(sc[0], attr) {
			t.Errorf("session cookie %q lacks %q", sc[0], attr)
		}
	}
	if strings.Contains(sc[0], "Domain=") {
		t.Errorf("session cookie %q has a Domain", sc[0])
	}

	// Secrets through the forms: the company key, a partner password, tokens.
	ca, err := pki.NewCA("Company CA")
	if err != nil {
		t.Fatal(err)
	}
	company, err := ca.Issue(pki.Request{CommonName: "oftp.company.example"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := s.postFiles("/admin/settings", map[string][]byte{"company_certificate": company.CertPEM, "company_key": company.KeyPEM}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("settings upload = %s\n%s", resp.Status, body)
	}
	if vals, err := be.st.SettingValues(ctx); err != nil || len(vals) != 2 || vals[1].Key != "company_key" || vals[1].Value != string(company.KeyPEM) {
		t.Fatalf("stored settings = %d values, %v; want the company certificate and key", len(vals), err)
	}
	const partnerPassword = "PW4TEST"
	if resp, _ := s.post("/admin/partners", url.Values{"odette_id": {"O0013000000000PARTNER"}, "password": {partnerPassword},
		"enabled": {"1"}}); resp.Header.Get("Location") != "/admin/partners/O0013000000000PARTNER" {
		t.Fatalf("partner add = %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	resp, body := s.post("/admin/tokens", url.Values{"client": {"proxy-2"}})
	webToken := tokenRE.FindString(body)
	if resp.StatusCode != http.StatusOK || webToken == "" {
		t.Fatalf("token create = %s, token %q", resp.Status, webToken)
	}
	keyLines := strings.Split(strings.TrimSpace(string(company.KeyPEM)), "\n")
	secrets := map[string]string{
		"private key":      keyLines[1],
		"partner password": partnerPassword,
		"admin password":   adminPassword,
		"init token":       be.token,
		"web token":        webToken,
	}
	pages := []string{"/admin/", "/admin/partners", "/admin/partners/new", "/admin/partners/O0013000000000PARTNER",
		"/admin/cas", "/admin/crls", "/admin/routes", "/admin/rules", "/admin/events", "/admin/license", "/admin/tokens",
		"/admin/settings", "/admin/audit", "/admin/live/dashboard", "/admin/live/events", "/admin/login", "/admin/nowhere"}
	for _, p := range pages {
		resp, body := s.get(p)
		if want := map[string]int{"/admin/nowhere": 404, "/admin/login": 303}[p]; resp.StatusCode != max(want, 200) {
			t.Errorf("GET %s = %s", p, resp.Status)
		}
		for what, secret := range secrets {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s shows the %s", p, what)
			}
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
		if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q, want DENY", p, got)
		}
		for _, tag := range scriptTagRE.FindAllString(body, -1) {
			if !strings.Contains(tag, ` src="/admin/static/`) {
				t.Errorf("GET %s has inline script: %s", p, tag)
			}
		}
		if m := handlerAttrRE.FindString(body); m != "" {
			t.Errorf("GET %s has an inline event handler: %s", p, m)
		}
	}
	if _, body := s.get("/admin/settings"); !strings.Contains(body, "redacted") || !strings.Contains(body, "CN=oftp.company.example") {
		t.Errorf("the settings page does not say the key is set:\n%s", body)
	}

	// A cross-origin POST is refused and changes nothing.
	req, err := http.NewRequest(http.MethodPost, be.base+"/admin/partners",
		strings.NewReader(url.Values{"odette_id": {"O0013000000000EVIL"}, "enabled": {"1"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, _ := s.do(req); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST = %s, want 403", resp.Status)
	}
	if _, err := be.st.Partner(ctx, "O0013000000000EVIL"); err == nil {
		t.Error("the cross-origin POST added a partner")
	}
	be.proc.WaitLog(t, regexp.MustCompile(`event=admin_cross_origin_refused`), 1)

	// The audit log holds every change: who, what, when, from where.
	list, err := be.st.AuditLog(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(list) - 1; i >= 0; i-- {
		e := list[i]
		if e.Action == "user add" {
			// The CLI's entry: the operating-system user, no address, the password file hidden.
			if !strings.HasPrefix(e.Actor, "cli:") || e.RemoteAddr != "" || !strings.HasPrefix(e.Target, "admin --password-file … ") {
				t.Errorf("audit entry of the CLI = %+v", e)
			}
			got = append(got, e.Action)
			continue
		}
		got = append(got, e.Action+" "+e.Target)
		if e.Actor != "admin" || !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") || time.Since(e.Time) > time.Minute {
			t.Errorf("audit entry %+v: want actor admin from 127.0.0.1 within the last minute", e)
		}
	}
	want := "user add,login ,config set company_certificate company_key,partner add O0013000000000PARTNER,token create proxy-2"
	if strings.Join(got, ",") != want {
		t.Errorf("audit log = %q, want %q", got, want)
	}

	// Five wrong passwords: each refused and logged; then even the right one
	// is refused for a while, without being checked.
	anon := &session{t: t, be: be, http: be.client(t)}
	for i := range 5 {
		if resp, body := anon.login("admin", "wrong password "+string(rune('a'+i))); resp.StatusCode != http.StatusUnauthorized ||
			!strings.Contains(body, "Wrong user name or password") {
			t.Errorf("wrong password %d = %s", i+1, resp.Status)
		}
	}
	be.proc.WaitLog(t, regexp.MustCompile(`event=admin_login_failed`), 5)
	if resp, body := anon.login("admin", adminPassword); resp.StatusCode != http.StatusTooManyRequests ||
		!strings.Contains(body, "Too many failed logins") {
		t.Errorf("login after five failures = %s, want 429", resp.Status)
	}
	be.proc.WaitLog(t, regexp.MustCompile(`event=admin_login_refused`), 1)
	if counts, err := be.st.TableCounts(ctx); err != nil || counts["admin_login_failures"] != 5 {
		t.Errorf("stored login failures = %d, %v; want 5", counts["admin_login_failures"], err)
	}
	// The logged-in session is not affected.
	if resp, _ := s.get("/admin/"); resp.StatusCode != http.StatusOK {
		t.Errorf("dashboard of the logged-in session during the lockout = %s", resp.Status)
	}
}
