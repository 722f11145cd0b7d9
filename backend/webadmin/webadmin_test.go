package webadmin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"smartproxy/backend/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for the store and the handler.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a Handler over a new database with the user "admin", on a
// clock the test moves.
type fixture struct {
	h     *Handler
	st    *store.Store
	clock *clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "api.db"), store.Options{Create: true, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddAdminUser(context.Background(), "admin", "a long admin pass phrase"); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Store: st, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{h: h, st: st, clock: c}
}

// request sends a same-origin request with the cookie, if any.
func (f *fixture) request(method, path string, form url.Values, cookie string) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(method, "https://admin.example"+path, body)
	req.RemoteAddr = "192.0.2.10:50000"
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func (f *fixture) login(t *testing.T) string {
	t.Helper()
	rec := f.request(http.MethodPost, "/admin/login", url.Values{"user": {"admin"}, "password": {"a long admin pass phrase"}}, "")
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie {
			return c.Value
		}
	}
	t.Fatalf("login = %d without a session cookie", rec.Code)
	return ""
}

func TestSessionExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []time.Duration // activity after each step
		last  time.Duration
		ok    bool
	}{
		{"active", nil, 29 * time.Minute, true},
		{"idle", nil, 30 * time.Minute, false},
		{"kept alive by activity", []time.Duration{25 * time.Minute, 25 * time.Minute}, 25 * time.Minute, true},
		{"absolute limit", slices.Repeat([]time.Duration{25 * time.Minute}, 28), 25 * time.Minute, false}, // 12 h 5 min
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			cookie := f.login(t)
			for _, d := range tc.steps {
				f.clock.advance(d)
				if rec := f.request(http.MethodGet, "/admin/partners", nil, cookie); rec.Code != http.StatusOK {
					t.Fatalf("page after %v = %d, want 200 (sessions last 12 h)", d, rec.Code)
				}
			}
			f.clock.advance(tc.last)
			rec := f.request(http.MethodGet, "/admin/partners", nil, cookie)
			if got := rec.Code == http.StatusOK; got != tc.ok {
				t.Errorf("page after %v more = %d, want ok %v", tc.last, rec.Code, tc.ok)
			}
			if !tc.ok && rec.Header().Get("Location") != "/admin/login" {
				t.Errorf("expired session redirected to %q, want the login page", rec.Header().Get("Location"))
			}
		})
	}
}

func TestLiveRefreshIsNotActivity(t *testing.T) {
	f := newFixture(t)
	cookie := f.login(t)
	for range 2 {
		f.clock.advance(10 * time.Minute)
		if rec := f.request(http.MethodGet, "/admin/live/dashboard", nil, cookie); rec.Code != http.StatusOK {
			t.Fatalf("refresh = %d", rec.Code)
		}
	}
	// 30 minutes of refreshes only: the session is idle.
	f.clock.advance(10 * time.Minute)
	if rec := f.request(http.MethodGet, "/admin/live/dashboard", nil, cookie); rec.Code != http.StatusUnauthorized {
		t.Errorf("refresh of an idle session = %d, want 401", rec.Code)
	}
}

func TestIgnoreRuleStates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.now()
	for _, r := range []store.IgnoreRule{
		{Substring: "soon-over", ValidUntil: now.Add(time.Hour)},
		{Substring: "later", ValidFrom: now.Add(3 * time.Hour)},
		{Substring: "forever"},
	} {
		if _, err := f.st.AddIgnoreRule(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.advance(2 * time.Hour) // the first rule is over, not yet removed by the expiry job
	cookie := f.login(t)
	body := f.request(http.MethodGet, "/admin/rules", nil, cookie).Body.String()
	for _, want := range []string{
		`soon-over</td><td></td><td>—</td><td>2026-03-01 13:00:00Z</td>
<td><span class="bad">expired</span>`,
		`later</td><td></td><td>2026-03-01 15:00:00Z</td><td>—</td>
<td><span class="warn">not yet valid</span>`,
		`forever</td><td></td><td>—</td><td>—</td>
<td><span class="ok">active</span>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the rules page lacks %q:\n%s", want, body)
		}
	}
	// A window that is already over is refused with the store's message.
	rec := f.request(http.MethodPost, "/admin/rules", url.Values{"substring": {"x"}, "valid_until": {"2026-03-01T13:30"}}, cookie)
	flash := rec.Result().Cookies()
	if rec.Code != http.StatusSeeOther || len(flash) != 1 || !strings.Contains(flash[0].Value, "not+in+the+future") {
		t.Errorf("past window = %d, flash %v", rec.Code, flash)
	}
}
