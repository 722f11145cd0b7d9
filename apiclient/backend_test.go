package apiclient_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/internal/testwait"
)

// syncBuffer is a log sink shared by the backend's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// realBackend is the reference backend smartproxy-api running in-process on 127.0.0.1 with a
// generated certificate and a SQLite database in a temporary directory.
type realBackend struct {
	dbPath      string
	st          *store.Store
	base        string
	token       string
	fingerprint string
	logs        *syncBuffer
}

func startRealBackend(t *testing.T) *realBackend {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	rb := &realBackend{dbPath: filepath.Join(dir, "api.db"), logs: &syncBuffer{}}
	st, err := store.Open(ctx, rb.dbPath, store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rb.st = st
	if rb.token, _, err = st.CreateToken(ctx, "dmz-1"); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _, err := backend.EnsureSelfSigned(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := backend.LoadCertificateFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	rb.fingerprint = backend.Fingerprint(cf.Leaf())
	log := logrus.New()
	log.SetOutput(rb.logs)
	log.SetFormatter(&logrus.TextFormatter{DisableColors: true, DisableTimestamp: true})
	log.SetLevel(logrus.DebugLevel)
	srv, err := backend.New(backend.Config{Store: st, Logger: log, TLSConfig: cf.TLSConfig(),
		RevisionPollInterval: 50 * time.Millisecond, CRL: backend.FetcherConfig{CheckInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb.base = "https://" + ln.Addr().String()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend Run = %v", err)
		}
	})
	return rb
}

func (rb *realBackend) client(t *testing.T, token string) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(apiclient.Config{BaseURL: rb.base, Token: apiclient.Token(token), PinSHA256: rb.fingerprint,
		Retry: apiclient.Retry{Base: time.Millisecond, Cap: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRealBackend runs every call against the reference backend, with the backend's certificate
// pinned the way an operator pins the fingerprint it prints.
func TestRealBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the reference backend")
	}
	rb := startRealBackend(t)
	c := rb.client(t, rb.token)
	ctx := context.Background()

	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health = %v", err)
	}

	doc, etag, changed, err := c.Config(ctx, "", 0)
	if err != nil || !changed || doc == nil || etag == "" {
		t.Fatalf("Config = %v, %q, %v, %v; want a document with an ETag", doc, etag, changed, err)
	}
	if err := apiv1.ValidateETag(etag); err != nil {
		t.Errorf("the backend's ETag: %v", err)
	}
	if _, e2, ch, err := c.Config(ctx, etag, 0); err != nil || ch || e2 != etag {
		t.Errorf("Config(etag) = %q, %v, %v; want unchanged", e2, ch, err)
	}

	t.Run("long poll sees a change by another database handle", func(t *testing.T) {
		other, err := store.Open(ctx, rb.dbPath, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		type result struct {
			doc  *apiv1.ConfigDocument
			etag string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			d, e, _, err := c.Config(ctx, etag, 30*time.Second)
			done <- result{d, e, err}
		}()
		// The change must come while the poll waits, or the wake-up is not what this test sees.
		testwait.For(t, 10*time.Second, "the long poll to wait", func() bool {
			return strings.Contains(rb.logs.String(), "long poll waiting for a change")
		})
		p := store.Partner{OdetteID: "O0013000000000PARTNER", Name: "Partner AG", Enabled: true, Password: "SECRET",
			AllowedNetworks: []string{"192.0.2.0/24"}}
		if err := other.AddPartner(ctx, p); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || r.doc == nil {
			t.Fatalf("long poll = %v, %v; want the changed document", r.doc, r.err)
		}
		if r.etag == etag || r.doc.Revision <= doc.Revision {
			t.Errorf("long poll ETag %q revision %d; want a new ETag and a revision above %d", r.etag, r.doc.Revision, doc.Revision)
		}
		i := slices.IndexFunc(r.doc.Partners, func(p apiv1.Partner) bool { return p.OdetteID == "O0013000000000PARTNER" })
		if i < 0 {
			t.Fatalf("partners = %+v, want the added partner", r.doc.Partners)
		}
		if got := r.doc.Partners[i]; got.Password != "SECRET" || !got.Enabled || !slices.Equal(got.AllowedNetworks, p.AllowedNetworks) {
			t.Errorf("partner = %+v, want it as added", got)
		}
	})

	t.Run("CRL", func(t *testing.T) {
		der := bytes.Repeat([]byte{0x30, 0x82, 0x01, 0x00}, 100<<10)
		if _, _, err := rb.st.PutCRL(ctx, store.NewCRL{URL: "http://crl.example/ca.crl", Source: "import", DER: der,
			Issuer: "CN=Test CA", ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		doc, _, _, err := c.Config(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(doc.CRLs) != 1 {
			t.Fatalf("crls = %+v, want one", doc.CRLs)
		}
		info := doc.CRLs[0]
		var buf bytes.Buffer
		etag, changed, err := c.CRL(ctx, info.ID, "", &buf)
		sum := sha256.Sum256(buf.Bytes())
		if err != nil || !changed || etag != info.ETag {
			t.Fatalf("CRL(%s) = %q, %v, %v; want ETag %q", info.ID, etag, changed, err, info.ETag)
		}
		if !bytes.Equal(buf.Bytes(), der) || int64(buf.Len()) != info.Size || hex.EncodeToString(sum[:]) != info.SHA256 {
			t.Errorf("CRL body: %d bytes, sha256 %x; want %d bytes (metadata %d), sha256 %s", buf.Len(), sum, len(der), info.Size, info.SHA256)
		}
		buf.Reset()
		if e2, changed, err := c.CRL(ctx, info.ID, etag, &buf); err != nil || changed || e2 != etag || buf.Len() != 0 {
			t.Errorf("CRL(%s, etag) = %q, %v, %v, %d bytes; want unchanged", info.ID, e2, changed, err, buf.Len())
		}
		if _, _, err := c.CRL(ctx, "999999", "", &buf); !errors.Is(err, apiclient.ErrNotFound) {
			t.Errorf("CRL(unknown) = %v, want ErrNotFound", err)
		}
	})

	t.Run("events are stored once", func(t *testing.T) {
		evs := testEvents()
		if acc, dup, err := c.PostEvents(ctx, evs); err != nil || acc != 2 || dup != 0 {
			t.Fatalf("PostEvents = %d, %d, %v; want 2, 0, nil", acc, dup, err)
		}
		if acc, dup, err := c.PostEvents(ctx, evs); err != nil || acc != 0 || dup != 2 {
			t.Fatalf("PostEvents again = %d, %d, %v; want 0, 2, nil", acc, dup, err)
		}
		stored, err := rb.st.Events(ctx, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range stored {
			ids = append(ids, e.ID)
			if e.ID == evs[0].ID && (e.Name != evs[0].Name || e.Message != evs[0].Message || !e.Time.Equal(evs[0].Time) ||
				e.Fields["esid"] != "04" || e.Source != "server" || e.Client != "dmz-1") {
				t.Errorf("stored event = %+v, want it as sent by dmz-1", e)
			}
		}
		slices.Sort(ids)
		if want := []string{evs[0].ID, evs[1].ID}; !slices.Equal(ids, want) {
			t.Errorf("stored event IDs = %v, want %v", ids, want)
		}
	})

	t.Run("reports and license", func(t *testing.T) {
		if err := c.ReportCRLURLs(ctx, []string{"http://crl.partner.example/p.crl"}); err != nil {
			t.Fatalf("ReportCRLURLs = %v", err)
		}
		urls, err := rb.st.CRLURLs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(urls, func(u store.CRLURL) bool {
			return u.URL == "http://crl.partner.example/p.crl" && u.Reported && u.ReportedBy == "dmz-1"
		}) {
			t.Errorf("CRL URLs = %+v, want the reported one", urls)
		}

		if _, _, _, err := c.License(ctx, ""); !errors.Is(err, apiclient.ErrNotFound) {
			t.Errorf("License before any status = %v, want ErrNotFound", err)
		}
		exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
		if err := c.PutLicenseStatus(ctx, &apiv1.LicenseStatus{ProxyID: "PX-TEST-1", Reason: "no license installed"}); err != nil {
			t.Fatalf("PutLicenseStatus = %v", err)
		}
		if _, _, _, err := c.License(ctx, ""); !errors.Is(err, apiclient.ErrNotFound) {
			t.Errorf("License without a stored one = %v, want ErrNotFound", err)
		}
		file := []byte("license file bytes\x00\x01")
		sum := sha256.Sum256(file)
		if err := rb.st.PutLicense(ctx, store.License{ProxyID: "PX-TEST-1", Customer: "Test", NotBefore: time.Now().Add(-time.Hour),
			NotAfter: exp, SHA256: hex.EncodeToString(sum[:]), File: file}); err != nil {
			t.Fatal(err)
		}
		lic, etag, changed, err := c.License(ctx, "")
		if err != nil || !changed || !bytes.Equal(lic, file) || etag == "" {
			t.Fatalf("License = %q, %q, %v, %v; want the stored file", lic, etag, changed, err)
		}
		if lic, e2, changed, err := c.License(ctx, etag); err != nil || changed || lic != nil || e2 != etag {
			t.Errorf("License(etag) = %q, %q, %v, %v; want unchanged", lic, e2, changed, err)
		}
		if err := c.PutLicenseStatus(ctx, &apiv1.LicenseStatus{ProxyID: "PX-TEST-1", Valid: true, ExpiresAt: &exp}); err != nil {
			t.Fatalf("PutLicenseStatus(valid) = %v", err)
		}
		if err := c.ReportConfigStatus(ctx, &apiv1.ConfigStatus{Revision: doc.Revision, ETag: etag, Applied: false,
			Errors: []apiv1.ConfigError{{Field: "partners[0].allowed_networks[0]", Message: "not a CIDR network"}}}); err != nil {
			t.Fatalf("ReportConfigStatus = %v", err)
		}
		clients, err := rb.st.Clients(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(clients, func(c store.ClientStatus) bool { return c.License != nil && c.Config != nil })
		if i < 0 {
			t.Fatalf("clients = %+v, want dmz-1 with its license and configuration status", clients)
		}
		if ls := clients[i].License; ls.ProxyID != "PX-TEST-1" || !ls.Valid || !ls.ExpiresAt.Equal(exp) {
			t.Errorf("stored license status = %+v, want PX-TEST-1 valid until %v", ls, exp)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		const wrong = store.TokenPrefix + "not-a-valid-token-0000000000"
		bad := rb.client(t, wrong)
		_, _, _, err := bad.Config(ctx, "", 0)
		var ae *apiclient.APIError
		if !errors.Is(err, apiclient.ErrUnauthorized) || !errors.As(err, &ae) || ae.Code != apiv1.CodeUnauthorized {
			t.Fatalf("Config with a wrong token = %v, want an *APIError unauthorized", err)
		}
		noSecrets(t, "error", err.Error(), wrong, rb.token)
		if !strings.Contains(rb.logs.String(), "event=api_auth_failed") {
			t.Errorf("backend log lacks event=api_auth_failed:\n%s", rb.logs)
		}
	})

	t.Run("wrong pin", func(t *testing.T) {
		bad, err := apiclient.New(apiclient.Config{BaseURL: rb.base, Token: apiclient.Token(rb.token),
			PinSHA256: strings.Repeat("00", 32)})
		if err != nil {
			t.Fatal(err)
		}
		defer bad.Close()
		_, _, _, err = bad.Config(ctx, "", 0)
		if err == nil || !strings.Contains(err.Error(), "not the pinned") {
			t.Errorf("Config with a wrong pin = %v, want a pin mismatch", err)
		}
	})
}
