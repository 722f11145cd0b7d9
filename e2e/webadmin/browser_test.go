package webadmin_test

import (
	"context"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"smartproxy/backend/store"
	"smartproxy/internal/pki"
)

// chromiumPath returns the Chromium binary, skipping the test without one
// unless SMARTPROXY_REQUIRE_CHROMIUM=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SMARTPROXY_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("chromium is required (SMARTPROXY_REQUIRE_CHROMIUM=1) but not found; apt-get install chromium")
	}
	t.Skip("chromium not installed; set SMARTPROXY_REQUIRE_CHROMIUM=1 to make this a failure")
	return ""
}

// browser is a headless Chromium tab. It accepts every confirm() dialog
// (the web admin asks before deleting) and records every alert(), which
// the web admin never shows: one means injected script ran.
type browser struct {
	ctx  context.Context
	done chan struct{} // closed when the dialog goroutine has ended

	mu     sync.Mutex
	alerts []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.IgnoreCertErrors,
		chromedp.WindowSize(1280, 860),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &browser{ctx: ctx, done: make(chan struct{})}
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		defer close(b.done)
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			if ev.Type == page.DialogTypeAlert {
				b.mu.Lock()
				b.alerts = append(b.alerts, ev.Message)
				b.mu.Unlock()
			}
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancelCtx()
		<-b.done
		cancelAlloc()
	})
	return b
}

// do runs steps with a time limit.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// clickAndLoad clicks the element sel and waits for the page it leads to
// (a form's answer) to load.
func clickAndLoad(sel string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))(ctx, t)
		return chromedp.Void{}, err
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text returns the text of the first element matching sel.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	return eval[string](t, b, `document.querySelector(`+jsString(sel)+`).textContent`)
}

// waitText waits until the element sel contains want.
func (b *browser) waitText(t *testing.T, sel, want string) {
	t.Helper()
	js := `(function(){const e=document.querySelector(` + jsString(sel) + `);return !!e && e.textContent.includes(` + jsString(want) + `);})()`
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("wait for %q in %s: %v (it holds %q)", want, sel, err, b.text(t, "body"))
	}
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}

// screenshot saves a PNG of the page to SMARTPROXY_SCREENSHOTS/name, if set.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("SMARTPROXY_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// markPage sets a marker in the page's JavaScript state; pageMarked tells
// whether the marker is still there, that is whether the page was not
// reloaded in between.
func (b *browser) markPage(t *testing.T) { eval[int](t, b, `window.smartproxyTestMark = 42`) }

func (b *browser) pageMarked(t *testing.T) bool {
	return eval[bool](t, b, `window.smartproxyTestMark === 42`)
}

// TestBrowserAdminFlow drives the web admin as an operator would: each
// step checks what the page shows and what the database holds.
func TestBrowserAdminFlow(t *testing.T) {
	be := startBackend(t)
	br := newBrowser(t)
	ctx := context.Background()
	files := t.TempDir()
	ca, err := pki.NewCA("Partner Root CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "edi.partner.example", SerialNumber: "O0013000000000PARTNER"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	crl, err := ca.CRL([]pki.RevokedCert{{SerialNumber: big.NewInt(77)}, {SerialNumber: big.NewInt(78)}}, now.Add(-time.Minute), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leafFile := write("partner.pem", pki.EncodeCertPEM(leaf.Cert))
	caFile := write("partner-ca.pem", pki.EncodeCertPEM(ca.Cert))
	crlFile := write("partner-ca.crl", pki.EncodeCRLPEM(crl))
	base := be.base + "/admin/"

	// Log in.
	br.do(t, "log in", chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), "admin"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), adminPassword),
		clickAndLoad(`#login`),
		chromedp.WaitVisible(chromedp.CSS(`#clients`)))
	if got := br.text(t, "#clients"); !strings.Contains(got, "proxy-1") {
		t.Errorf("dashboard clients = %q, want proxy-1", got)
	}
	res, err := chromedp.Call(br.ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	cookies := res.Cookies
	if len(cookies) != 1 || cookies[0].Name != "__Host-smartproxy-admin" || !cookies[0].HTTPOnly || !cookies[0].Secure ||
		cookies[0].SameSite != network.CookieSameSiteStrict {
		t.Errorf("cookies after login = %+v, want one HttpOnly, Secure, SameSite=Strict session cookie", cookies)
	}
	if a := be.auditActions(t); strings.Join(a, ",") != "user add,login" {
		t.Errorf("audit log after login = %q", a)
	}

	// Add a partner with a certificate binding (the certificate uploaded).
	const partnerID = "O0013000000000PARTNER"
	br.do(t, "add partner", chromedp.Navigate(base+"partners/new"),
		chromedp.WaitVisible(chromedp.CSS(`#partner-form`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=odette_id]`), partnerID),
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "Partner AG"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "SECRET1"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name=networks]`), "192.0.2.0/24"),
		chromedp.SetUploadFiles(chromedp.CSS(`input[name=binding_certificate]`), []string{leafFile}),
		clickAndLoad(`#save`),
		chromedp.WaitVisible(chromedp.CSS(`#bindings`)))
	fp := store.Fingerprint(leaf.Cert)
	br.waitText(t, "#flash", "Partner "+partnerID+" added.")
	br.waitText(t, "#bindings", fp)
	p, err := be.st.Partner(ctx, partnerID)
	if err != nil {
		t.Fatalf("partner not stored: %v", err)
	}
	if p.Name != "Partner AG" || p.Password != "SECRET1" || len(p.CertificateBindings) != 1 ||
		p.CertificateBindings[0].SHA256Fingerprint != fp || len(p.AllowedNetworks) != 1 || !p.Enabled {
		t.Errorf("stored partner = %+v, want the form's values with the certificate's fingerprint bound", p)
	}
	if pwValue := eval[string](t, br, `document.querySelector('input[name=password]').value`); pwValue != "" {
		t.Errorf("the partner form shows the password back: %q", pwValue)
	}
	br.screenshot(t, "webadmin-partner.png")

	// A partner whose name is markup: shown as text, never run.
	const hostile = `<script>alert(1)</script>`
	br.do(t, "add hostile partner", chromedp.Navigate(base+"partners/new"),
		chromedp.WaitVisible(chromedp.CSS(`#partner-form`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=odette_id]`), "O0013000000000HOSTILE"),
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), hostile),
		clickAndLoad(`#save`),
		chromedp.WaitVisible(chromedp.CSS(`#bindings`)),
		chromedp.Navigate(base+"partners"),
		chromedp.WaitVisible(chromedp.CSS(`#partners`)))
	br.waitText(t, "#partners", hostile)
	if scripts := eval[int](t, br, `document.scripts.length`); scripts != 1 {
		t.Errorf("the partner list has %d script elements, want 1 (the admin's own)", scripts)
	}

	// Upload a CA.
	br.do(t, "upload CA", chromedp.Navigate(base+"cas"),
		chromedp.WaitVisible(chromedp.CSS(`#ca-form`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#ca-form input[name=file]`), []string{caFile}),
		clickAndLoad(`#ca-form button`))
	br.waitText(t, "#flash", "Added: CN=Partner Root CA")
	br.waitText(t, "#cas", store.Fingerprint(ca.Cert))
	if cas, err := be.st.CAs(ctx); err != nil || len(cas) != 1 || cas[0].SHA256 != store.Fingerprint(ca.Cert) {
		t.Errorf("stored CAs = %+v, %v", cas, err)
	}

	// Import a CRL.
	br.do(t, "import CRL", chromedp.Navigate(base+"crls"),
		chromedp.WaitVisible(chromedp.CSS(`#crl-form`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#crl-form input[name=file]`), []string{crlFile}),
		clickAndLoad(`#crl-form button`))
	br.waitText(t, "#flash", "stored (2 entries)")
	br.waitText(t, "#crls", "CN=Partner Root CA")
	if crls, err := be.st.CRLs(ctx); err != nil || len(crls) != 1 || crls[0].Entries != 2 || crls[0].Source != "import" {
		t.Errorf("stored CRLs = %+v, %v", crls, err)
	}

	// An ignore rule with a validity window.
	from := now.UTC().Add(-time.Hour).Truncate(time.Minute)
	until := now.UTC().Add(48 * time.Hour).Truncate(time.Minute)
	br.do(t, "add ignore rule", chromedp.Navigate(base+"rules"),
		chromedp.WaitVisible(chromedp.CSS(`#rule-form`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=substring]`), "scanner.example"),
		chromedp.SendKeys(chromedp.CSS(`input[name=description]`), "monthly audit scan"),
		chromedp.SetValue(chromedp.CSS(`input[name=valid_from]`), from.Format("2006-01-02T15:04")),
		chromedp.SetValue(chromedp.CSS(`input[name=valid_until]`), until.Format("2006-01-02T15:04")),
		clickAndLoad(`#rule-form button`))
	br.waitText(t, "#flash", "Rule 1 added.")
	br.waitText(t, "#rules", "active")
	if rules, err := be.st.IgnoreRules(ctx); err != nil || len(rules) != 1 || !rules[0].ValidFrom.Equal(from) ||
		!rules[0].ValidUntil.Equal(until) || rules[0].Substring != "scanner.example" {
		t.Errorf("stored rules = %+v, %v; want scanner.example from %v until %v", rules, err, from, until)
	}

	// An event posted through the API appears on the events page without a reload.
	br.do(t, "events page", chromedp.Navigate(base+"events"), chromedp.WaitVisible(chromedp.CSS(`#events`)))
	br.markPage(t)
	be.postEvent(t, "browser-test-event-1", "warning", "partner_certificate_mismatch", "certificate does not match the binding")
	br.waitText(t, "#events", "partner_certificate_mismatch")
	if !br.pageMarked(t) {
		t.Error("the events page was reloaded; want the new event shown in place")
	}
	if evs, err := be.st.EventPage(ctx, store.EventPageFilter{Name: "partner_certificate_mismatch"}); err != nil || len(evs) != 1 {
		t.Errorf("stored events = %+v, %v", evs, err)
	}
	br.screenshot(t, "webadmin-events.png")

	// And a critical one on the dashboard, also without a reload, with the state the
	// client reports: configuration applied, license, tunnel and sessions.
	br.do(t, "dashboard", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS(`#critical`)))
	br.markPage(t)
	rev, err := be.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	be.apiCall(t, http.MethodPost, "/v1/config-status", fmt.Sprintf(`{"revision":%d,"etag":"","applied":true,"errors":[]}`, rev), http.StatusNoContent)
	be.apiCall(t, http.MethodPut, "/v1/license-status", fmt.Sprintf(`{"proxy_id":"PX-7F3A-21C9","valid":true,"expires_at":%q,"reason":"",`+
		`"tunnel":{"streams":1,"open_sessions":3,"connected_at":%q}}`, now.Add(200*24*time.Hour+time.Hour).UTC().Format(time.RFC3339),
		now.Add(-90*time.Minute).UTC().Format(time.RFC3339)), http.StatusNoContent)
	br.waitText(t, "#clients", "up, 1 stream")
	br.waitText(t, "#clients", fmt.Sprintf("revision %d applied", rev))
	br.waitText(t, "#clients", "valid, 200 days left")
	be.postEvent(t, "browser-test-event-2", "critical", "license_invalid", "no valid license: partner sessions refused")
	br.waitText(t, "#critical", "license_invalid")
	if !br.pageMarked(t) {
		t.Error("the dashboard was reloaded; want the new event shown in place")
	}
	br.screenshot(t, "webadmin-dashboard.png")

	// Revoke the client's token (the page asks first; the test accepts).
	if got := be.apiStatus(t); got != 200 {
		t.Fatalf("GET /v1/config with the token = %d before revoking", got)
	}
	br.do(t, "revoke token", chromedp.Navigate(base+"tokens"),
		chromedp.WaitVisible(chromedp.CSS(`#revoke-1`)),
		clickAndLoad(`#revoke-1`))
	br.waitText(t, "#flash", "Token 1 revoked.")
	br.waitText(t, "#tokens", "revoked")
	if toks, err := be.st.Tokens(ctx); err != nil || len(toks) != 1 || toks[0].RevokedAt.IsZero() {
		t.Errorf("stored tokens = %+v, %v; want token 1 revoked", toks, err)
	}
	if got := be.apiStatus(t); got != 401 {
		t.Errorf("GET /v1/config with the revoked token = %d, want 401", got)
	}

	// Log out.
	br.do(t, "log out", clickAndLoad(`.logout button`),
		chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)),
		chromedp.Navigate(base+"partners"), chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)))
	if counts, err := be.st.TableCounts(ctx); err != nil || counts["admin_sessions"] != 0 {
		t.Errorf("sessions after logout = %d, %v; want 0", counts["admin_sessions"], err)
	}

	want := []string{"user add", "login", "partner add", "partner add", "ca add", "crl import", "ignore add", "token revoke", "logout"}
	if got := be.auditActions(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("audit log = %q, want %q", got, want)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.alerts) > 0 {
		t.Errorf("alert() ran in the page: %q (injected script)", br.alerts)
	}
}
