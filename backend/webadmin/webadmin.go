package webadmin

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/internal/logging"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Path is the path below which the web admin is served.
const Path = backend.AdminPath

// Config configures a Handler. Store is required; every other zero value
// selects the documented default.
type Config struct {
	// Store is the open database. Required.
	Store *store.Store
	// Logger receives logins, refusals and failures. If nil, they are
	// discarded.
	Logger logrus.FieldLogger
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// FetchCRL downloads the CRL of a distribution point at once ("fetch
	// now"). If nil, the CRL page offers no such button.
	FetchCRL func(ctx context.Context, urlID int64) error
	// Tunnel returns the tunnel state a proxy client last reported (backend.Server.Tunnel). If
	// nil, the dashboard shows no tunnel state.
	Tunnel func(clientID int64) (backend.TunnelReport, bool)
	// IdleTimeout ends a session without activity for this long. If zero,
	// 30 minutes.
	IdleTimeout time.Duration
	// MaxAge ends a session this long after login, active or not. If zero,
	// 12 hours.
	MaxAge time.Duration
	// MaxLoginFailures is how many failed logins per user name or per
	// address within LoginWindow are allowed before further logins of that
	// name or from that address are refused. If zero, 5.
	MaxLoginFailures int
	// LoginWindow is the period failed logins are counted over. If zero,
	// 15 minutes.
	LoginWindow time.Duration
}

// Handler serves the web admin. Create it with New.
type Handler struct {
	// Immutable after New.
	cfg   Config
	st    *store.Store
	log   logrus.FieldLogger
	now   func() time.Time
	pages map[string]*template.Template
	h     http.Handler
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("webadmin: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	if cfg.MaxLoginFailures <= 0 {
		cfg.MaxLoginFailures = 5
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = 15 * time.Minute
	}
	h := &Handler{cfg: cfg, st: cfg.Store, log: cfg.Logger, now: cfg.Now}
	var err error
	if h.pages, err = parseTemplates(h.funcs()); err != nil {
		return nil, err
	}
	h.h = h.routes()
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.h.ServeHTTP(w, r) }

// parseTemplates returns one template set per page: the layout with that
// page's blocks.
func parseTemplates(funcs template.FuncMap) (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := make(map[string]*template.Template)
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFiles, n)
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

// securityHeaders are sent with every answer. The policy allows scripts,
// styles and images from the web admin itself only: no inline script, no
// framing.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":            "DENY",
	"X-Content-Type-Options":     "nosniff",
	"Referrer-Policy":            "no-referrer",
	"Cache-Control":              "no-store",
	"Cross-Origin-Opener-Policy": "same-origin",
}

func (h *Handler) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET "+Path+"static/", http.StripPrefix(Path+"static/", http.FileServerFS(static)))
	mux.HandleFunc("GET "+Path+"login", h.getLogin)
	mux.HandleFunc("POST "+Path+"login", h.postLogin)
	mux.HandleFunc("POST "+Path+"logout", h.postLogout)

	page := func(pattern string, fn func(w http.ResponseWriter, r *http.Request, s *store.AdminSession)) {
		mux.HandleFunc(pattern, h.authed(fn, true))
	}
	live := func(pattern string, fn func(w http.ResponseWriter, r *http.Request, s *store.AdminSession)) {
		mux.HandleFunc(pattern, h.authed(fn, false))
	}
	page("GET "+Path+"{$}", h.dashboard)
	live("GET "+Path+"live/dashboard", h.dashboardLive)
	page("GET "+Path+"partners", h.partners)
	page("GET "+Path+"partners/new", h.partnerNew)
	page("POST "+Path+"partners", h.partnerCreate)
	page("GET "+Path+"partners/{id}", h.partnerEdit)
	page("POST "+Path+"partners/{id}", h.partnerSave)
	page("POST "+Path+"partners/{id}/enabled", h.partnerToggle)
	page("POST "+Path+"partners/{id}/delete", h.partnerDelete)
	page("POST "+Path+"partners/{id}/bindings", h.bindingAdd)
	page("POST "+Path+"partners/{id}/bindings/{n}/delete", h.bindingDelete)
	page("GET "+Path+"cas", h.cas)
	page("POST "+Path+"cas", h.caAdd)
	page("POST "+Path+"cas/{id}/delete", h.caDelete)
	page("GET "+Path+"crls", h.crls)
	page("POST "+Path+"crls", h.crlImport)
	page("POST "+Path+"crls/{id}/delete", h.crlDelete)
	page("POST "+Path+"crl-urls", h.crlURLAdd)
	page("POST "+Path+"crl-urls/{id}/delete", h.crlURLDelete)
	page("POST "+Path+"crl-urls/{id}/fetch", h.crlURLFetch)
	page("GET "+Path+"routes", h.routesPage)
	page("POST "+Path+"routes", h.routeAdd)
	page("POST "+Path+"routes/{name}/delete", h.routeDelete)
	page("GET "+Path+"rules", h.rules)
	page("POST "+Path+"rules", h.ruleAdd)
	page("POST "+Path+"rules/{id}/delete", h.ruleDelete)
	page("GET "+Path+"events", h.events)
	live("GET "+Path+"live/events", h.eventsLive)
	page("GET "+Path+"events/{seq}", h.event)
	page("GET "+Path+"license", h.license)
	page("POST "+Path+"license", h.licenseImport)
	page("GET "+Path+"tokens", h.tokens)
	page("POST "+Path+"tokens", h.tokenCreate)
	page("POST "+Path+"tokens/{id}/revoke", h.tokenRevoke)
	page("GET "+Path+"settings", h.settings)
	page("POST "+Path+"settings", h.settingSet)
	page("POST "+Path+"settings/unset", h.settingUnset)
	page("GET "+Path+"audit", h.audit)
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		h.render(w, r, http.StatusNotFound, "error", nil, view{Title: "Not found", Error: "There is no page " + r.URL.Path + "."})
	})
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.log.WithFields(logrus.Fields{"event": "admin_cross_origin_refused", "remote_addr": r.RemoteAddr, "path": r.URL.Path,
			"origin": r.Header.Get("Origin")}).Warn("cross-origin request to the web admin refused")
		h.render(w, r, http.StatusForbidden, "error", nil, view{Title: "Refused", Error: "Cross-origin request refused."})
	}))
	return h.headers(cop.Handler(mux))
}

// headers sets the security headers on every answer.
func (h *Handler) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		next.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	// Title is the page's title; Nav names the menu entry to highlight.
	Title, Nav string
	// User is the logged-in user's name; empty on the login page.
	User string
	// Flash is the message of the previous request (after a redirect);
	// Error is a message about this one.
	Flash, Error string
	// Data is the page's own data.
	Data any
	// Now is the time the page is rendered at.
	Now time.Time
}

// render writes page with status.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, s *store.AdminSession, v view) {
	h.renderTemplate(w, r, status, name, "layout.html", s, v)
}

// renderTemplate writes the template tmpl of page name, buffered so that
// a template error does not leave half a page.
func (h *Handler) renderTemplate(w http.ResponseWriter, r *http.Request, status int, name, tmpl string, s *store.AdminSession, v view) {
	t, ok := h.pages[name]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	if s != nil {
		v.User = s.User.Name
	}
	v.Now = h.now()
	if v.Flash == "" && tmpl == "layout.html" {
		v.Flash = h.takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, v); err != nil {
		h.log.WithError(err).WithField("page", name).Error("web admin page cannot be rendered")
		http.Error(w, "the page cannot be rendered; see the log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// flashCookie carries a message across the redirect after a form.
const flashCookie = "__Host-smartproxy-flash"

// done redirects to the page at path (below Path) with a message for it.
func (h *Handler) done(w http.ResponseWriter, r *http.Request, path, format string, args ...any) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(fmt.Sprintf(format, args...)), Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: 60})
	http.Redirect(w, r, Path+path, http.StatusSeeOther)
}

// failed redirects to the page at path with the message of err.
func (h *Handler) failed(w http.ResponseWriter, r *http.Request, path string, err error) {
	h.done(w, r, path, "Error: %s", message(err))
}

// message turns a store error into a sentence for the page. Errors never
// carry secret values (store.ValidationError promises so).
func message(err error) string {
	var ve *store.ValidationError
	switch {
	case errors.As(err, &ve):
		return ve.Error()
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		return err.Error()
	}
	return err.Error()
}

func (h *Handler) takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	msg, err := url.QueryUnescape(c.Value)
	if err != nil {
		return ""
	}
	return msg
}

// remoteHost returns the host part of the request's remote address.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// audited returns the request's context with the audit entry of a change.
func audited(r *http.Request, s *store.AdminSession, action, target string) context.Context {
	return store.WithAudit(r.Context(), store.Audit{Actor: s.User.Name, RemoteAddr: r.RemoteAddr, Action: action, Target: target})
}
