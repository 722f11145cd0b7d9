package webadmin

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend"
	"smartproxy/backend/store"
)

// TestReadPages checks what the dashboard, the event detail and the CRL
// page show for what proxy clients reported.
func TestReadPages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.st.CreateToken(ctx, "proxy-1"); err != nil {
		t.Fatal(err)
	}
	now := f.clock.now()
	if err := f.st.SetLicenseStatus(ctx, 1, store.LicenseStatus{ProxyID: "PROXY-ID-1", Valid: true, ExpiresAt: now.Add(9*24*time.Hour + time.Hour)}); err != nil {
		t.Fatal(err)
	}
	rev, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.AddConfigStatus(ctx, 1, store.ConfigStatus{Revision: rev - 1, Applied: true}); err != nil {
		t.Fatal(err)
	}
	fresh, _, err := f.st.AddEvents(ctx, 1, []store.Event{{ID: "e1", Time: now, Severity: "critical", Name: "license_invalid",
		Message: "no <b>valid</b> license", Fields: map[string]string{"proxy_id": "PROXY-ID-1"}, Source: "server"}})
	if err != nil {
		t.Fatal(err)
	}
	since := now.Add(-3 * time.Hour)
	report := backend.TunnelReport{TunnelState: apiv1.TunnelState{Streams: 2, OpenSessions: 17, ConnectedAt: &since}, ReportedAt: now}
	h, err := New(Config{Store: f.st, Now: f.clock.now, Tunnel: func(id int64) (backend.TunnelReport, bool) { return report, id == 1 }})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	cookie := f.login(t)
	get := func(path string) string {
		t.Helper()
		rec := f.request(http.MethodGet, path, nil, cookie)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d", path, rec.Code)
		}
		return rec.Body.String()
	}
	dash := get("/admin/")
	for _, want := range []string{"revision " + strconv.FormatInt(rev-1, 10) + " applied", "(current " + strconv.FormatInt(rev, 10) + ")",
		"valid, 9 days left", "PROXY-ID-1", "license_invalid", "no &lt;b&gt;valid&lt;/b&gt; license",
		"up, 2 streams</span> <small>since 2026-03-01 09:00:00Z</small></td>\n  <td>17</td>"} {
		if !strings.Contains(dash, want) {
			t.Errorf("the dashboard lacks %q", want)
		}
	}
	// A report older than 90 s is not shown as current.
	f.clock.advance(2 * time.Minute)
	if live := get("/admin/live/dashboard"); !strings.Contains(live, "unknown: last report 2m0s ago") || strings.Contains(live, "<td>17</td>") {
		t.Errorf("the dashboard shows a stale tunnel report as current:\n%s", live)
	}
	report.Streams, report.ConnectedAt, report.ReportedAt = 0, nil, f.clock.now()
	if live := get("/admin/live/dashboard"); !strings.Contains(live, `<span class="bad">down</span>`) {
		t.Errorf("the dashboard does not show the tunnel down:\n%s", live)
	}
	detail := get("/admin/events/" + strconv.FormatInt(fresh[0].Seq, 10))
	for _, want := range []string{"<dt>proxy_id</dt><dd>PROXY-ID-1</dd>", "<dt>Event ID</dt><dd class=\"mono\">e1</dd>", "critical"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the event detail lacks %q", want)
		}
	}
	if rec := f.request(http.MethodGet, "/admin/events/999", nil, cookie); rec.Code != http.StatusNotFound {
		t.Errorf("a missing event = %d, want 404", rec.Code)
	}
	if rec := f.request(http.MethodGet, "/admin/events?severity=loud", nil, cookie); rec.Code != http.StatusBadRequest {
		t.Errorf("an unknown severity = %d, want 400", rec.Code)
	}

	// "Fetch now" calls the server's downloader with the URL's id.
	var fetched []int64
	h, err = New(Config{Store: f.st, Now: f.clock.now, FetchCRL: func(_ context.Context, id int64) error {
		fetched = append(fetched, id)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	if _, err := f.st.AddCRLURL(ctx, "http://crl.partner.example/ca.crl"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(get("/admin/crls"), `action="/admin/crl-urls/1/fetch"`) {
		t.Error("the CRL page offers no fetch now")
	}
	if rec := f.request(http.MethodPost, "/admin/crl-urls/1/fetch", url.Values{}, cookie); rec.Code != http.StatusSeeOther || len(fetched) != 1 || fetched[0] != 1 {
		t.Errorf("fetch now = %d, downloader called with %v", rec.Code, fetched)
	}
}

// TestListSearchAndPages checks the search and paging of the in-memory lists.
func TestListSearchAndPages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 60 {
		if _, err := f.st.AddIgnoreRule(ctx, store.IgnoreRule{Substring: "probe-" + strconv.Itoa(i), Description: "scanner"}); err != nil {
			t.Fatal(err)
		}
	}
	cookie := f.login(t)
	for _, tc := range []struct {
		query string
		want  []string
		not   []string
	}{
		{"", []string{"1–50 of 60", "probe-49<", `href="?offset=50&amp;q="`}, []string{"probe-50<", "previous"}},
		{"?offset=50", []string{"51–60 of 60", "probe-59<", `href="?offset=0&amp;q="`}, []string{"probe-49<", "next"}},
		{"?q=PROBE-5", []string{"1–11 of 11", "probe-5<", "probe-55<"}, []string{"probe-6<", "next"}},
		{"?q=nothing", []string{"none matches"}, []string{"probe-"}},
	} {
		body := f.request(http.MethodGet, "/admin/rules"+tc.query, nil, cookie).Body.String()
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("rules%s lacks %q", tc.query, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(body, n) {
				t.Errorf("rules%s shows %q", tc.query, n)
			}
		}
	}
}
