package backend

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
)

// routes builds the API's handler. Paths and methods not in the contract
// are answered with JSON errors too.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiv1.PathConfig, s.auth(s.getConfig))
	mux.HandleFunc("GET "+apiv1.PathCRLPrefix+"{id}", s.auth(s.getCRL))
	mux.HandleFunc("POST "+apiv1.PathCRLURLs, s.auth(s.postCRLURLs))
	mux.HandleFunc("POST "+apiv1.PathEvents, s.auth(s.postEvents))
	mux.HandleFunc("PUT "+apiv1.PathLicenseStatus, s.auth(s.putLicenseStatus))
	mux.HandleFunc("GET "+apiv1.PathLicense, s.auth(s.getLicense))
	mux.HandleFunc("POST "+apiv1.PathConfigStatus, s.auth(s.postConfigStatus))
	mux.HandleFunc("GET "+apiv1.PathHealth, s.getHealth)
	if s.cfg.Admin != nil {
		mux.Handle(AdminPath, s.cfg.Admin)
	}
	allowed := map[string]string{}
	for _, e := range apiv1.Endpoints() {
		p := e.Path
		if p == apiv1.PathCRL {
			p = apiv1.PathCRLPrefix + "{id}"
		}
		if allowed[p] != "" {
			allowed[p] += ", "
		}
		allowed[p] += e.Method
		if e.Method == http.MethodGet {
			allowed[p] += ", HEAD"
		}
	}
	for p, methods := range allowed {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			s.fail(w, r, errorf(http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed, "",
				"%s is not allowed on %s; use %s", r.Method, r.URL.Path, methods))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, errorf(http.StatusNotFound, apiv1.CodeNotFound, "", "no endpoint %s", r.URL.Path))
	})
	return s.logRequests(mux)
}

func (s *Server) getHealth(w http.ResponseWriter, r *http.Request) {
	if _, err := s.st.Revision(r.Context()); err != nil {
		s.log.WithError(err).Error("health check: the database does not answer")
		writeJSON(w, http.StatusServiceUnavailable, apiv1.NewErrorBody(apiv1.CodeUnavailable, "the database does not answer", ""))
		return
	}
	writeJSON(w, http.StatusOK, apiv1.HealthResponse{Status: apiv1.HealthOK})
}

// document returns the configuration document of the current revision,
// built once per revision.
func (s *Server) document(ctx context.Context) (rev int64, body []byte, etag string, err error) {
	cur, err := s.st.Revision(ctx)
	if err != nil {
		return 0, nil, "", err
	}
	s.docMu.Lock()
	if s.docBody != nil && s.docRev == cur {
		defer s.docMu.Unlock()
		return s.docRev, s.docBody, s.docETag, nil
	}
	s.docMu.Unlock()
	snap, err := s.st.Snapshot(ctx)
	if err != nil {
		return 0, nil, "", err
	}
	body, etag, err = encodeDocument(Document(snap, true))
	if err != nil {
		return 0, nil, "", err
	}
	s.docMu.Lock()
	if snap.Revision >= s.docRev {
		s.docRev, s.docBody, s.docETag = snap.Revision, body, etag
	}
	s.docMu.Unlock()
	return snap.Revision, body, etag, nil
}

// parseWait reads the wait query parameter: whole seconds from 0 to MaxWait.
func (s *Server) parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get(apiv1.QueryWait)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	max := int64(s.cfg.MaxWait / time.Second)
	if err != nil || int64(n) > max {
		return 0, errorf(http.StatusBadRequest, apiv1.CodeInvalidField, apiv1.QueryWait,
			"%q is not a whole number of seconds from 0 to %d", v, max)
	}
	return time.Duration(n) * time.Second, nil
}

// getConfig answers GET /v1/config. With If-None-Match naming the current
// document and wait > 0 it waits until the document changes (200) or the
// wait has passed (304).
func (s *Server) getConfig(w http.ResponseWriter, r *http.Request, c store.Client) error {
	wait, err := s.parseWait(r)
	if err != nil {
		return err
	}
	inm := r.Header.Get(apiv1.HeaderIfNoneMatch)
	ctx := r.Context()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		rev, body, etag, err := s.document(ctx)
		if err != nil {
			return err
		}
		if !etagMatches(inm, etag) {
			w.Header().Set(apiv1.HeaderETag, etag)
			w.Header().Set(apiv1.HeaderContentType, apiv1.ContentTypeJSON)
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				w.Write(body)
			}
			return nil
		}
		if wait == 0 {
			return notModified(w, etag)
		}
		// Wait for a newer revision, the end of the wait, the client or shutdown.
		wctx, cancel := context.WithCancel(ctx)
		changed := make(chan struct{})
		go func() {
			defer close(changed)
			s.st.WaitRevision(wctx, rev)
		}()
		s.waiting.Add(1)
		// Tests wait for this line: a change made after it must wake the poll.
		s.log.WithFields(map[string]any{"client": c.Name, "revision": rev}).Debug("long poll waiting for a change")
		select {
		case <-changed:
			s.waiting.Add(-1)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			continue
		case <-deadline.C:
		case <-s.stopping:
		case <-ctx.Done():
		}
		s.waiting.Add(-1)
		cancel()
		<-changed
		if ctx.Err() != nil {
			return nil // the client went away
		}
		return notModified(w, etag)
	}
}

func notModified(w http.ResponseWriter, etag string) error {
	w.Header().Set(apiv1.HeaderETag, etag)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotModified)
	return nil
}

// getCRL streams one CRL from the database, piece by piece.
func (s *Server) getCRL(w http.ResponseWriter, r *http.Request, _ store.Client) error {
	ref := r.PathValue("id")
	id, ok := parseCRLID(ref)
	if err := apiv1.ValidateCRLID(ref); err != nil || !ok {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "", "no CRL %q", ref)
	}
	c, rd, err := s.st.OpenCRL(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "", "no CRL %q (it may have been removed; fetch the configuration again)", ref)
	}
	if err != nil {
		return err
	}
	etag := CRLETag(c)
	if etagMatches(r.Header.Get(apiv1.HeaderIfNoneMatch), etag) {
		return notModified(w, etag)
	}
	h := w.Header()
	h.Set(apiv1.HeaderETag, etag)
	h.Set(apiv1.HeaderContentType, apiv1.ContentTypeCRL)
	h.Set("Content-Length", strconv.FormatInt(c.Size, 10))
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, rd); err != nil {
		if r.Context().Err() == nil {
			s.log.WithError(err).WithField("crl", ref).Warn("CRL download aborted")
		}
		// The status line is out: only breaking the connection tells the
		// client that the body is incomplete.
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *Server) postCRLURLs(w http.ResponseWriter, r *http.Request, c store.Client) error {
	var req apiv1.CRLURLsRequest
	if err := decodeJSON(w, r, apiv1.MaxRequestBytes, &req); err != nil {
		return err
	}
	if err := apiv1.ValidateCRLURLsRequest(&req); err != nil {
		return err
	}
	n, err := s.st.ReportCRLURLs(r.Context(), c.Name, req.URLs)
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.WithFields(map[string]any{"client": c.Name, "new": n}).Info("proxy client reported new CRL distribution points")
		s.fetcher.Wake()
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) postEvents(w http.ResponseWriter, r *http.Request, c store.Client) error {
	var req apiv1.EventsRequest
	if err := decodeJSON(w, r, apiv1.MaxEventsRequestBytes, &req); err != nil {
		return err
	}
	if err := apiv1.ValidateEventsRequest(&req); err != nil {
		return err
	}
	events := make([]store.Event, len(req.Events))
	for i, e := range req.Events {
		events[i] = store.Event{ID: e.ID, Time: e.Time, Severity: string(e.Severity), Name: e.Name, SessionID: e.SessionID,
			OdetteID: e.OdetteID, RemoteAddr: e.RemoteAddr, Message: e.Message, Fields: e.Fields, Source: string(e.Source)}
	}
	fresh, dups, err := s.st.AddEvents(r.Context(), c.ID, events)
	if err != nil {
		return err
	}
	s.metrics.events.WithLabelValues("stored").Add(float64(len(fresh)))
	s.metrics.events.WithLabelValues("duplicate").Add(float64(dups))
	s.esc.Submit(fresh)
	writeJSON(w, http.StatusOK, apiv1.EventsResponse{Accepted: len(fresh), Duplicates: dups})
	return nil
}

func (s *Server) putLicenseStatus(w http.ResponseWriter, r *http.Request, c store.Client) error {
	var req apiv1.LicenseStatus
	if err := decodeJSON(w, r, apiv1.MaxRequestBytes, &req); err != nil {
		return err
	}
	if err := apiv1.ValidateLicenseStatus(&req); err != nil {
		return err
	}
	st := store.LicenseStatus{ProxyID: req.ProxyID, Valid: req.Valid, Reason: req.Reason}
	if req.ExpiresAt != nil {
		st.ExpiresAt = *req.ExpiresAt
	}
	if err := s.st.SetLicenseStatus(r.Context(), c.ID, st); err != nil {
		return err
	}
	if !s.recordTunnel(c.ID, req) {
		w.WriteHeader(http.StatusNoContent)
		return nil // a periodic repetition: logged when it changes
	}
	entry := s.log.WithFields(map[string]any{"client": c.Name, "proxy_id": req.ProxyID, "valid": req.Valid})
	if req.Valid {
		entry.WithField("expires_at", req.ExpiresAt.UTC().Format(time.RFC3339)).Debug("license status reported")
	} else {
		entry.WithField("reason", req.Reason).Warn("the DMZ server has no valid license")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getLicense answers the license file stored for the Proxy ID the client
// last reported in PUT /v1/license-status.
func (s *Server) getLicense(w http.ResponseWriter, r *http.Request, c store.Client) error {
	st, err := s.st.ClientLicenseStatus(r.Context(), c.ID)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "",
			"no license: the client has not reported its server's Proxy ID (PUT %s) yet", apiv1.PathLicenseStatus)
	}
	if err != nil {
		return err
	}
	l, err := s.st.LicenseFor(r.Context(), st.ProxyID)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "", "no license is stored for Proxy ID %s", st.ProxyID)
	}
	if err != nil {
		return err
	}
	etag := `"` + l.SHA256 + `"`
	if etagMatches(r.Header.Get(apiv1.HeaderIfNoneMatch), etag) {
		return notModified(w, etag)
	}
	w.Header().Set(apiv1.HeaderETag, etag)
	w.Header().Set(apiv1.HeaderContentType, apiv1.ContentTypeLicense)
	w.Header().Set("Content-Length", strconv.Itoa(len(l.File)))
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(l.File)
	}
	return nil
}

func (s *Server) postConfigStatus(w http.ResponseWriter, r *http.Request, c store.Client) error {
	var req apiv1.ConfigStatus
	if err := decodeJSON(w, r, apiv1.MaxRequestBytes, &req); err != nil {
		return err
	}
	if err := apiv1.ValidateConfigStatus(&req); err != nil {
		return err
	}
	st := store.ConfigStatus{Revision: req.Revision, ETag: req.ETag, Applied: req.Applied}
	for _, e := range req.Errors {
		st.Errors = append(st.Errors, store.FieldMessage{Field: e.Field, Message: e.Message})
	}
	if err := s.st.AddConfigStatus(r.Context(), c.ID, st); err != nil {
		return err
	}
	entry := s.log.WithFields(map[string]any{"client": c.Name, "revision": req.Revision})
	if req.Applied {
		entry.Info("configuration applied by the DMZ server")
	} else {
		var parts []string
		for _, e := range req.Errors {
			parts = append(parts, e.Field+": "+e.Message)
		}
		entry.WithField("errors", strings.Join(parts, "; ")).Error("configuration refused by the DMZ server")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
