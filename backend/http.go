package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
)

// apiError is an error answered with a status and an ErrorBody.
type apiError struct {
	status int
	code   string
	msg    string
	field  string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errorf(status int, code, field, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, field: field, msg: fmt.Sprintf(format, args...)}
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, status = []byte(`{"error":{"code":"internal","message":"cannot encode the answer"}}`), http.StatusInternalServerError
	}
	w.Header().Set(apiv1.HeaderContentType, apiv1.ContentTypeJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// fail answers err: a validation error as 400 invalid_field, a missing
// record as 404, a conflict as 409, anything else as 500 (logged).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		ae *apiError
		ve *store.ValidationError
		fe *apiv1.FieldError
	)
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ve):
		ae = errorf(http.StatusBadRequest, apiv1.CodeInvalidField, ve.Field, "%s", ve.Msg)
	case errors.As(err, &fe):
		ae = errorf(http.StatusBadRequest, apiv1.CodeInvalidField, fe.Field, "%s", fe.Message)
	case errors.Is(err, store.ErrNotFound):
		ae = errorf(http.StatusNotFound, apiv1.CodeNotFound, "", "%v", err)
	case errors.Is(err, store.ErrConflict):
		ae = errorf(http.StatusConflict, apiv1.CodeConflict, "", "%v", err)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client went away
	default:
		s.log.WithError(err).WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path}).Error("API request failed")
		ae = errorf(http.StatusInternalServerError, apiv1.CodeInternal, "", "the backend failed; the request may be retried")
	}
	if ae.status == http.StatusMethodNotAllowed || ae.status == http.StatusServiceUnavailable {
		w.Header().Set("Connection", "close")
	}
	writeJSON(w, ae.status, apiv1.NewErrorBody(ae.code, ae.msg, ae.field))
}

// decodeJSON reads a JSON request body of at most limit bytes into v. It
// refuses another media type (415), a larger body (413), a body that is not
// UTF-8, not JSON, has unknown fields or trailing data (400 invalid_json).
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get(apiv1.HeaderContentType); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || mt != apiv1.ContentTypeJSON || params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8") {
			return errorf(http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedMediaType, "",
				"Content-Type %q is not %s", ct, apiv1.ContentTypeJSON)
		}
	} else {
		return errorf(http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedMediaType, "",
			"Content-Type is missing; send %s", apiv1.ContentTypeJSON)
	}
	if r.ContentLength > limit {
		return errorf(http.StatusRequestEntityTooLarge, apiv1.CodeBodyTooLarge, "",
			"the body of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, apiv1.CodeBodyTooLarge, "", "the body exceeds the limit of %d bytes", limit)
		}
		return fmt.Errorf("read request body: %w", err)
	}
	if !utf8.Valid(body) {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidJSON, "", "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidJSON, jsonErrorField(err), "%s", jsonErrorText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidJSON, "", "the body has data after the JSON document")
	}
	return nil
}

// jsonErrorField names the field of a JSON type error.
func jsonErrorField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	return ""
}

// jsonErrorText describes a decoding error without Go type names where
// possible.
func jsonErrorText(err error) string {
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("not JSON: %v (at byte %d)", se, se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s: a JSON %s cannot be used here", te.Field, te.Value)
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON document is incomplete"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field " + f + " (the contract has no such field)"
	}
	return msg
}

// etagMatches reports whether an If-None-Match header names etag (weak
// comparison, RFC 9110 §13.1.2), or is "*".
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	if strings.TrimSpace(header) == "*" {
		return true
	}
	for part := range strings.SplitSeq(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(part), "W/") == etag {
			return true
		}
	}
	return false
}

// statusWriter records the status and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs one line per request: 2xx and 3xx at INFO (health checks,
// unchanged long polls and the web admin's page views, which refresh
// themselves, at DEBUG; its changes are in the audit log), 4xx at INFO, 5xx
// at ERROR.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		ci := &clientInfo{}
		r = r.WithContext(context.WithValue(r.Context(), clientKey{}, ci))
		defer func() {
			if sw.status == 0 {
				sw.status = http.StatusOK
			}
			s.metrics.request(r.Pattern, sw.status)
			fields := logrus.Fields{"method": r.Method, "path": r.URL.Path, "http_status": sw.status, "bytes": sw.bytes,
				"duration": time.Since(start).Round(time.Microsecond).String(), "remote_addr": r.RemoteAddr}
			if ci.name != "" {
				fields["client"] = ci.name
			}
			entry := s.log.WithFields(fields)
			switch {
			case sw.status >= 500:
				entry.Error("API request")
			case r.URL.Path == apiv1.PathHealth || sw.status == http.StatusNotModified ||
				(r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, AdminPath) && r.URL.Path != AdminPath+"login"):
				entry.Debug("API request")
			default:
				entry.Info("API request")
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

type clientKey struct{}

// clientInfo carries the authenticated client's name to the request log.
type clientInfo struct{ name string }

// authHandler is a handler of an authenticated endpoint.
type authHandler func(w http.ResponseWriter, r *http.Request, c store.Client) error

// auth checks the bearer token and calls h with the client, or answers 401
// and logs one line with event=api_auth_failed.
func (s *Server) auth(h authHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, reason := bearerToken(r.Header.Get(apiv1.HeaderAuthorization))
		var c store.Client
		if reason == "" {
			var err error
			c, err = s.st.Authenticate(r.Context(), token)
			var ae *store.AuthError
			switch {
			case errors.As(err, &ae):
				reason = ae.Reason
			case err != nil:
				s.fail(w, r, err)
				return
			}
		}
		if reason != "" {
			s.metrics.authFailures.WithLabelValues(reason).Inc()
			s.log.WithFields(logrus.Fields{"event": "api_auth_failed", "remote_addr": r.RemoteAddr,
				"path": r.URL.Path, "reason": reason}).Warn("API request refused")
			w.Header().Set("WWW-Authenticate", `Bearer realm="smartproxy-api"`)
			writeJSON(w, http.StatusUnauthorized, apiv1.NewErrorBody(apiv1.CodeUnauthorized,
				"a valid bearer token is required", ""))
			return
		}
		if ci, ok := r.Context().Value(clientKey{}).(*clientInfo); ok {
			ci.name = c.Name
		}
		s.touch(r.Context(), c, r.RemoteAddr)
		if err := h(w, r, c); err != nil {
			s.fail(w, r, err)
		}
	}
}

// bearerToken extracts the token of an Authorization header, or says why
// there is none.
func bearerToken(h string) (token, reason string) {
	if h == "" {
		return "", "missing bearer token"
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "not a bearer token"
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", "missing bearer token"
	}
	return tok, ""
}

// touchEvery is how often a client's last request is recorded.
const touchEvery = time.Minute

// touch records the client's request at most once per touchEvery.
func (s *Server) touch(ctx context.Context, c store.Client, remote string) {
	now := s.now()
	s.touchMu.Lock()
	last, ok := s.touched[c.ID]
	if ok && now.Sub(last) < touchEvery {
		s.touchMu.Unlock()
		return
	}
	s.touched[c.ID] = now
	s.touchMu.Unlock()
	if err := s.st.TouchClient(ctx, c.ID, remote); err != nil && ctx.Err() == nil {
		s.log.WithError(err).Warn("cannot record the client's last request")
	}
}
