package webadmin

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"smartproxy/backend/store"
)

// TestForms submits the forms the browser test does not, each followed by
// what the database holds and what the next page says.
func TestForms(t *testing.T) {
	f := newFixture(t)
	cookie := f.login(t)
	ctx := context.Background()
	const id = "O0013000000000PARTNER"
	post := func(path string, form url.Values) string {
		t.Helper()
		rec := f.request(http.MethodPost, path, form, cookie)
		if rec.Code != http.StatusSeeOther {
			t.Fatalf("POST %s = %d, want 303\n%s", path, rec.Code, rec.Body)
		}
		for _, c := range rec.Result().Cookies() {
			if c.Name == flashCookie {
				msg, _ := url.QueryUnescape(c.Value)
				return msg
			}
		}
		t.Fatalf("POST %s left no message", path)
		return ""
	}
	partner := func() store.Partner {
		t.Helper()
		p, err := f.st.Partner(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	if msg := post("/admin/partners", url.Values{"odette_id": {id}, "name": {"Partner AG"}, "password": {"SECRET1"},
		"enabled": {"1"}, "max_credit": {"99"}, "networks": {"192.0.2.0/24\n198.51.100.7/32"}, "binding_serial": {id}}); msg != "Partner "+id+" added." {
		t.Fatalf("add partner: %q", msg)
	}
	if p := partner(); p.Password != "SECRET1" || p.MaxCredit != 99 || len(p.AllowedNetworks) != 2 || p.AllowedNetworks[1] != "198.51.100.7/32" ||
		len(p.CertificateBindings) != 1 || !p.Enabled {
		t.Errorf("added partner = %+v", p)
	}
	// Saving the form without a password keeps the password; the store's checks apply.
	if msg := post("/admin/partners/"+id, url.Values{"name": {"Partner AG & Co"}, "direction": {"incoming"}, "max_credit": {"1000"}}); !strings.Contains(msg, "partners.max_credit: 1000 is out of range") {
		t.Errorf("credit 1000: %q", msg)
	}
	post("/admin/partners/"+id, url.Values{"name": {"Partner AG & Co"}, "direction": {"incoming"}, "charset": {"strict"}})
	if p := partner(); p.Password != "SECRET1" || p.Name != "Partner AG & Co" || p.Direction != "incoming" || p.Enabled ||
		len(p.AllowedNetworks) != 0 || p.MaxCredit != 0 {
		t.Errorf("saved partner = %+v; want the password kept and the other fields from the form", p)
	}
	post("/admin/partners/"+id, url.Values{"clear_password": {"1"}, "enabled": {"1"}})
	if p := partner(); p.Password != "" || !p.Enabled {
		t.Errorf("after clearing the password: %+v", p)
	}
	post("/admin/partners/"+id+"/bindings", url.Values{"binding_subject": {"CN=edi.partner.example,O=Partner AG,C=DE"}})
	post("/admin/partners/"+id+"/bindings/0/delete", nil)
	if p := partner(); len(p.CertificateBindings) != 1 || p.CertificateBindings[0].Subject != "CN=edi.partner.example,O=Partner AG,C=DE" {
		t.Errorf("bindings = %+v, want the subject binding alone", p.CertificateBindings)
	}
	if msg := post("/admin/partners/"+id+"/bindings/5/delete", nil); !strings.Contains(msg, "has no binding 5") {
		t.Errorf("removing a missing binding: %q", msg)
	}
	post("/admin/partners/"+id+"/enabled", url.Values{"enabled": {"0"}})
	if partner().Enabled {
		t.Error("the partner is still enabled after Disable")
	}

	post("/admin/routes", url.Values{"name": {"to-partner"}, "listen": {"127.0.0.1:3305"}, "partner_address": {"oftp.partner.example:6619"},
		"partner_odette_id": {id}})
	if routes, _ := f.st.Routes(ctx); len(routes) != 1 || routes[0].PartnerAddress != "oftp.partner.example:6619" {
		t.Errorf("routes = %+v", routes)
	}
	post("/admin/crl-urls", url.Values{"url": {"http://crl.partner.example/ca.crl"}})
	urls, _ := f.st.CRLURLs(ctx)
	if len(urls) != 1 {
		t.Fatalf("CRL URLs = %+v", urls)
	}
	if msg := post("/admin/crl-urls/1/fetch", nil); !strings.Contains(msg, "not run by this process") {
		t.Errorf("fetch now without a downloader: %q", msg)
	}
	post("/admin/settings", url.Values{"partner_listen_address": {":16619"}, "log_level": {"debug"}})
	if msg := post("/admin/settings", url.Values{"limits.max_credit": {"0"}}); !strings.Contains(msg, "limits.max_credit") {
		t.Errorf("invalid setting: %q", msg)
	}
	post("/admin/settings/unset", url.Values{"key": {"log_level"}})
	if vals, _ := f.st.SettingValues(ctx); len(vals) != 1 || vals[0].Key != "partner_listen_address" || vals[0].Value != ":16619" {
		t.Errorf("settings = %+v", vals)
	}
	rec := f.request(http.MethodPost, "/admin/tokens", url.Values{"client": {"proxy-9"}}, cookie)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), store.TokenPrefix) {
		t.Errorf("token create = %d", rec.Code)
	}
	post("/admin/tokens/1/revoke", nil)
	post("/admin/routes/to-partner/delete", nil)
	post("/admin/crl-urls/1/delete", nil)
	post("/admin/partners/"+id+"/delete", nil)
	if _, err := f.st.Partner(ctx, id); err == nil {
		t.Error("the partner is still there after Delete")
	}
	if counts, _ := f.st.TableCounts(ctx); counts["routes"] != 0 || counts["crl_urls"] != 0 || counts["partners"] != 0 {
		t.Errorf("after the deletes: %v", counts)
	}

	// The audit page lists the changes, newest first, searchable.
	body := f.request(http.MethodGet, "/admin/audit?q=partner+binding", nil, cookie).Body.String()
	if !strings.Contains(body, "partner binding remove") || !strings.Contains(body, "partner binding add") || strings.Contains(body, "route add") ||
		strings.Index(body, "partner binding remove") > strings.Index(body, "partner binding add") {
		t.Errorf("audit page searched for partner binding:\n%s", body)
	}
	if n := strings.Count(f.request(http.MethodGet, "/admin/audit", nil, cookie).Body.String(), "<td>192.0.2.10:50000</td>"); n < 15 {
		t.Errorf("the audit page shows %d changes from the browser's address, want every change", n)
	}
}
