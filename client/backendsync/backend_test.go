package backendsync_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
)

const testToken = "sync-test-token-0c1d2e3f"

// backend is an API v1 backend in memory behind real TLS on loopback, for the Syncer's tests:
// strict about the token and bodies, it keeps each event id once as the real backend does and
// records what it received.
type backend struct {
	srv *httptest.Server

	mu        sync.Mutex
	doc       *apiv1.ConfigDocument
	etag      string
	changed   chan struct{} // closed and replaced when doc changes
	crls      map[string][]byte
	crlGets   map[string]int
	license   []byte
	events    map[string]apiv1.Event
	posts     int
	statuses  []apiv1.ConfigStatus
	urls      []string
	licStatus []apiv1.LicenseStatus
	down      bool // answer 503 to every request
	requests  int  // requests that reached the handler (TLS passed)
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{changed: make(chan struct{}), crls: make(map[string][]byte), crlGets: make(map[string]int),
		events: make(map[string]apiv1.Event)}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	b.srv.StartTLS()
	t.Cleanup(b.close)
	return b
}

func (b *backend) close() {
	b.mu.Lock()
	close(b.changed) // ends long polls
	b.changed = make(chan struct{})
	b.mu.Unlock()
	b.srv.Close()
}

// api returns a real apiclient.Client for the backend.
func (b *backend) api(t *testing.T) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(apiclient.Config{BaseURL: b.srv.URL, Token: testToken, RootCAs: rootsOf(b.srv),
		Retry: apiclient.Retry{Attempts: 1}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// setDoc makes doc the configuration; its etag follows its content.
func (b *backend) setDoc(doc *apiv1.ConfigDocument) {
	data, _ := json.Marshal(doc)
	sum := sha256.Sum256(data)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.doc = doc
	b.etag = fmt.Sprintf(`"r%d-%x"`, doc.Revision, sum[:6])
	close(b.changed)
	b.changed = make(chan struct{})
}

// addCRL stores a CRL and returns its metadata for a document.
func (b *backend) addCRL(id, url string, der []byte) apiv1.CRLInfo {
	sum := sha256.Sum256(der)
	b.mu.Lock()
	b.crls[id] = der
	b.mu.Unlock()
	return apiv1.CRLInfo{ID: id, URL: url, ETag: fmt.Sprintf(`"%x"`, sum[:8]), Size: int64(len(der)), SHA256: hex.EncodeToString(sum[:]),
		ThisUpdate: time.Now().Add(-time.Hour).UTC()}
}

func (b *backend) setDown(down bool) {
	b.mu.Lock()
	b.down = down
	b.mu.Unlock()
}

func (b *backend) setLicense(file []byte) {
	b.mu.Lock()
	b.license = file
	b.mu.Unlock()
}

func writeError(w http.ResponseWriter, status int, code, msg, field string) {
	w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiv1.NewErrorBody(code, msg, field))
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, apiv1.MaxEventsRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, apiv1.CodeInvalidJSON, err.Error(), "")
		return false
	}
	return true
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	down := b.down
	b.requests++
	b.mu.Unlock()
	if down {
		writeError(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "down for the test", "")
		return
	}
	if r.Header.Get(apiv1.HeaderAuthorization) != apiv1.BearerPrefix+testToken {
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "bad token", "")
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == apiv1.PathConfig:
		b.serveConfig(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, apiv1.PathCRLPrefix):
		id := strings.TrimPrefix(r.URL.Path, apiv1.PathCRLPrefix)
		b.mu.Lock()
		der, ok := b.crls[id]
		b.crlGets[id]++
		b.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no such CRL", "")
			return
		}
		sum := sha256.Sum256(der)
		w.Header().Set("ETag", fmt.Sprintf(`"%x"`, sum[:8]))
		w.Header().Set("Content-Type", apiv1.ContentTypeCRL)
		w.Write(der)
	case r.Method == http.MethodPost && r.URL.Path == apiv1.PathEvents:
		var req apiv1.EventsRequest
		if !decode(w, r, &req) {
			return
		}
		if err := apiv1.ValidateEventsRequest(&req); err != nil {
			fe := err.(*apiv1.FieldError)
			writeError(w, http.StatusBadRequest, apiv1.CodeInvalidField, fe.Message, fe.Field)
			return
		}
		var resp apiv1.EventsResponse
		b.mu.Lock()
		b.posts++
		for _, ev := range req.Events {
			if _, dup := b.events[ev.ID]; dup {
				resp.Duplicates++
				continue
			}
			b.events[ev.ID] = ev
			resp.Accepted++
		}
		b.mu.Unlock()
		w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
		json.NewEncoder(w).Encode(resp)
	case r.Method == http.MethodPost && r.URL.Path == apiv1.PathConfigStatus:
		var st apiv1.ConfigStatus
		if !decode(w, r, &st) {
			return
		}
		b.mu.Lock()
		b.statuses = append(b.statuses, st)
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == apiv1.PathCRLURLs:
		var req apiv1.CRLURLsRequest
		if !decode(w, r, &req) {
			return
		}
		b.mu.Lock()
		b.urls = append(b.urls, req.URLs...)
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut && r.URL.Path == apiv1.PathLicenseStatus:
		var st apiv1.LicenseStatus
		if !decode(w, r, &st) {
			return
		}
		b.mu.Lock()
		b.licStatus = append(b.licStatus, st)
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && r.URL.Path == apiv1.PathLicense:
		b.mu.Lock()
		lic := b.license
		b.mu.Unlock()
		if lic == nil {
			writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no license stored", "")
			return
		}
		sum := sha256.Sum256(lic)
		etag := fmt.Sprintf(`"%x"`, sum[:8])
		if r.Header.Get(apiv1.HeaderIfNoneMatch) == etag {
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", apiv1.ContentTypeLicense)
		w.Write(lic)
	default:
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no such endpoint", "")
	}
}

func (b *backend) serveConfig(w http.ResponseWriter, r *http.Request) {
	wait, _ := strconv.Atoi(r.URL.Query().Get(apiv1.QueryWait))
	inm := r.Header.Get(apiv1.HeaderIfNoneMatch)
	deadline := time.NewTimer(time.Duration(wait) * time.Second)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		doc, etag, changed := b.doc, b.etag, b.changed
		b.mu.Unlock()
		if doc == nil {
			writeError(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "no configuration yet", "")
			return
		}
		if inm != etag {
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", apiv1.ContentTypeJSON)
			json.NewEncoder(w).Encode(doc)
			return
		}
		if wait == 0 {
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// eventIDs returns the stored events by id.
func (b *backend) eventsByID() map[string]apiv1.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]apiv1.Event, len(b.events))
	for k, v := range b.events {
		out[k] = v
	}
	return out
}

func (b *backend) configStatuses() []apiv1.ConfigStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]apiv1.ConfigStatus(nil), b.statuses...)
}
