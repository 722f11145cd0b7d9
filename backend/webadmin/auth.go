package webadmin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/backend/store"
)

// sessionCookie is the name of the session cookie. The __Host- prefix makes
// browsers accept it only with Secure, Path=/ and no Domain, so no other
// host can set or shadow it.
const sessionCookie = "__Host-smartproxy-admin"

// touchEvery bounds how often a session's activity is written.
const touchEvery = time.Minute

// session returns the valid session of the request, or nil. An expired
// session is deleted.
func (h *Handler) session(r *http.Request) (*store.AdminSession, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, nil
	}
	s, err := h.st.AdminSessionBySecret(r.Context(), c.Value)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := h.now()
	if now.Sub(s.LastSeenAt) >= h.cfg.IdleTimeout || now.Sub(s.CreatedAt) >= h.cfg.MaxAge {
		h.log.WithFields(logrus.Fields{"event": "admin_session_expired", "user": s.User.Name, "remote_addr": r.RemoteAddr}).
			Info("web admin session expired")
		return nil, h.endSession(r, s.ID)
	}
	return &s, nil
}

// endSession deletes session id and every expired one.
func (h *Handler) endSession(r *http.Request, id int64) error {
	now := h.now()
	return h.st.EndAdminSession(r.Context(), id, now.Add(-h.cfg.IdleTimeout), now.Add(-h.cfg.MaxAge))
}

// authed wraps a page that needs a logged-in user. activity says whether
// the request counts as the user's activity (a page, a form) or not (the
// periodic refresh of a page, which must not keep an abandoned browser
// logged in).
func (h *Handler) authed(fn func(w http.ResponseWriter, r *http.Request, s *store.AdminSession), activity bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := h.session(r)
		if err != nil {
			h.log.WithError(err).Error("web admin: cannot read the session")
			http.Error(w, "the database does not answer", http.StatusServiceUnavailable)
			return
		}
		if s == nil {
			if r.Method == http.MethodGet && activity {
				http.Redirect(w, r, Path+"login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		if activity && h.now().Sub(s.LastSeenAt) >= touchEvery {
			if err := h.st.TouchAdminSession(r.Context(), s.ID); err != nil {
				h.log.WithError(err).Warn("web admin: cannot record session activity")
			}
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxUpload)
			var err error
			if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
				err = r.ParseMultipartForm(maxUpload)
			} else {
				err = r.ParseForm()
			}
			if err != nil {
				h.failed(w, r, "", fmt.Errorf("the form cannot be read: %w", err))
				return
			}
		}
		fn(w, r, s)
	}
}

// maxUpload bounds a form with files: enough for a large CRL.
const maxUpload = 64 << 20

func (h *Handler) getLogin(w http.ResponseWriter, r *http.Request) {
	if s, _ := h.session(r); s != nil {
		http.Redirect(w, r, Path, http.StatusSeeOther)
		return
	}
	h.render(w, r, http.StatusOK, "login", nil, view{Title: "Log in"})
}

func (h *Handler) postLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	name, pw := r.PostFormValue("user"), r.PostFormValue("password")
	host := remoteHost(r)
	entry := h.log.WithFields(logrus.Fields{"user": name, "remote_addr": r.RemoteAddr})
	byUser, byAddr, err := h.st.LoginFailures(r.Context(), name, host, h.now().Add(-h.cfg.LoginWindow))
	if err != nil {
		entry.WithError(err).Error("web admin: cannot count failed logins")
		http.Error(w, "the database does not answer", http.StatusServiceUnavailable)
		return
	}
	if byUser >= h.cfg.MaxLoginFailures || byAddr >= h.cfg.MaxLoginFailures {
		// The password is not even checked: guessing goes no faster than
		// MaxLoginFailures per LoginWindow, for one name and from one address.
		entry.WithFields(logrus.Fields{"event": "admin_login_refused", "failures_user": byUser, "failures_addr": byAddr}).
			Warn("web admin login refused after too many failed logins")
		h.render(w, r, http.StatusTooManyRequests, "login", nil, view{Title: "Log in",
			Error: "Too many failed logins. Try again in " + h.cfg.LoginWindow.String() + "."})
		return
	}
	u, ok, err := h.st.CheckAdminLogin(r.Context(), name, pw, host)
	if err != nil {
		entry.WithError(err).Error("web admin: cannot check a login")
		http.Error(w, "the database does not answer", http.StatusServiceUnavailable)
		return
	}
	if !ok {
		entry.WithFields(logrus.Fields{"event": "admin_login_failed", "failures_user": byUser + 1, "failures_addr": byAddr + 1}).
			Warn("web admin login failed")
		h.render(w, r, http.StatusUnauthorized, "login", nil, view{Title: "Log in", Error: "Wrong user name or password."})
		return
	}
	secret, err := h.st.CreateAdminSession(store.WithAudit(r.Context(), store.Audit{Actor: u.Name, RemoteAddr: r.RemoteAddr,
		Action: "login"}), u.ID, host)
	if err != nil {
		entry.WithError(err).Error("web admin: cannot create a session")
		http.Error(w, "the database does not answer", http.StatusServiceUnavailable)
		return
	}
	entry.WithField("event", "admin_login").Info("web admin login")
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: secret, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(h.cfg.MaxAge / time.Second)})
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (h *Handler) postLogout(w http.ResponseWriter, r *http.Request) {
	s, err := h.session(r)
	if err == nil && s != nil {
		ctx := store.WithAudit(r.Context(), store.Audit{Actor: s.User.Name, RemoteAddr: r.RemoteAddr, Action: "logout"})
		if err := h.endSession(r.WithContext(ctx), s.ID); err != nil {
			h.log.WithError(err).Error("web admin: cannot end a session")
		}
		h.log.WithFields(logrus.Fields{"event": "admin_logout", "user": s.User.Name, "remote_addr": r.RemoteAddr}).Info("web admin logout")
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, Path+"login", http.StatusSeeOther)
}
