package backendsync_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"smartproxy/internal/event"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"smartproxy/admin"
	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
	"smartproxy/client"
	"smartproxy/client/backendsync"
	"smartproxy/client/clienttest"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/backoff"
	"smartproxy/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLong = 10 * time.Second

func rootsOf(srv *httptest.Server) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}

// document returns a valid configuration document over the fixture files, with the fixture
// CRL stored in b.
func document(b *backend, files *clienttest.Files, rev int64) *apiv1.ConfigDocument {
	crl := b.addCRL("partner-ca", "http://crl.partner-ca.test/ca.crl", files.CRL)
	return &apiv1.ConfigDocument{
		Revision:                 rev,
		PartnerListenAddress:     "127.0.0.1:0",
		CompanyIdentity:          apiv1.CompanyIdentity{CertificateChainPEM: string(files.Company.CertPEM), PrivateKeyPEM: apiv1.Secret(files.Company.KeyPEM)},
		TrustedCACertificatesPEM: []string{string(files.PartnerCA.CertPEM)},
		CRLs:                     []apiv1.CRLInfo{crl},
		Partners: []apiv1.Partner{
			{OdetteID: clienttest.PartnerID, Name: "Partner AG", Enabled: true, Password: clienttest.PartnerPassword, Direction: apiv1.DirectionBoth},
			{OdetteID: clienttest.OtherPartnerID, Name: "Other GmbH", Enabled: true, Charset: apiv1.CharsetLenient},
		},
		Limits:         apiv1.Limits{MaxSessions: 100},
		InternalServer: &apiv1.InternalServer{Address: "127.0.0.1:3305"},
		LogLevel:       "info",
	}
}

// env is a Syncer between a backend and a real client connected to a harness DMZ server.
type env struct {
	files   *clienttest.Files
	backend *backend
	dmz     *clienttest.Server
	state   string
	hook    *logtest.Hook
	log     *logrus.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{files: clienttest.NewFiles(t, t.TempDir()), backend: newBackend(t), state: filepath.Join(t.TempDir(), "state")}
	e.dmz = clienttest.NewServer(t, clienttest.ServerConfig{ProxyID: "PROXY-1"})
	e.log, e.hook = logtest.NewNullLogger()
	e.log.SetLevel(logrus.DebugLevel)
	return e
}

// running is one started Syncer with its client.
type running struct {
	syncer *backendsync.Syncer
	client *client.Client
	health *admin.Health // the tunnel and backend parts
	stop   func()
}

func (e *env) newSyncer(t *testing.T, health *admin.Health) *backendsync.Syncer {
	t.Helper()
	s, err := backendsync.New(backendsync.Config{
		API: e.backend.api(t), StateDir: e.state, Wait: 2 * time.Second, LicenseInterval: 100 * time.Millisecond, StateInterval: 100 * time.Millisecond,
		Backoff: backoff.Exponential{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}, Logger: e.log,
		Health: health,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start gets the initial configuration and runs client and Syncer.
func (e *env) start(t *testing.T) *running {
	t.Helper()
	health := admin.NewHealth(e.log, admin.HealthClientTunnel, admin.HealthClientBackend)
	s := e.newSyncer(t, health)
	ctx, cancel := context.WithCancel(context.Background())
	ictx, icancel := context.WithTimeout(ctx, waitLong)
	snap, err := s.Initial(ictx)
	icancel()
	if err != nil {
		cancel()
		s.Spool().Close()
		t.Fatalf("Initial() = %v", err)
	}
	c, err := client.New(client.Config{
		Servers: []string{e.dmz.Addr}, ServerName: "localhost", Credentials: e.dmz.ClientCredentials, Version: "test",
		Config: snap, Logger: e.log, Observer: s, ShutdownTimeout: time.Second, Health: health,
		Backoff: backoff.Exponential{Base: 20 * time.Millisecond, Cap: 100 * time.Millisecond},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := c.Run(ctx); err != nil {
			t.Errorf("client Run() = %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.Run(ctx, c); err != nil {
			t.Errorf("Syncer Run() = %v", err)
		}
	}()
	var once sync.Once
	r := &running{syncer: s, client: c, health: health, stop: func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			e.log.ReplaceHooks(logrus.LevelHooks{})
			e.log.AddHook(e.hook)
		})
	}}
	t.Cleanup(r.stop)
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, waitLong, what, cond)
}

func partnerEnabled(cfg *tunnelv1.ConfigSnapshot, id string) (enabled, found bool) {
	for _, p := range cfg.GetConfig().GetPartners() {
		if p.GetOdetteId() == id {
			return p.GetEnabled(), true
		}
	}
	return false, false
}

func TestSyncFollowsBackend(t *testing.T) {
	e := newEnv(t)
	first := document(e.backend, e.files, 5)
	first.ProxyProtocol = &apiv1.ProxyProtocol{AllowedSources: []string{"10.0.0.5", "10.0.1.0/29"}}
	e.backend.setDoc(first)
	r := e.start(t)
	conn := e.dmz.WaitConn(t, waitLong)
	cfg := conn.WaitConfig(t, waitLong)
	if cfg.GetVersion() != 5 {
		t.Errorf("pushed version = %d, want 5 (the revision)", cfg.GetVersion())
	}
	if got := cfg.GetConfig().GetProxyProtocol().GetAllowedSources(); !slices.Equal(got, []string{"10.0.0.5", "10.0.1.0/29"}) {
		t.Errorf("pushed proxy_protocol.allowed_sources = %q, want the backend's", got)
	}
	if crls := cfg.GetConfig().GetCrls(); len(crls) != 1 || string(crls[0].GetDer()) != string(e.files.CRL) || crls[0].GetUrl() != "http://crl.partner-ca.test/ca.crl" {
		t.Errorf("pushed CRLs = %v, want the backend's CRL with its URL", crls)
	}
	if en, ok := partnerEnabled(cfg, clienttest.PartnerID); !ok || !en {
		t.Errorf("partner %s enabled = %v (found %v), want enabled", clienttest.PartnerID, en, ok)
	}
	waitFor(t, "the applied status", func() bool { return len(e.backend.configStatuses()) >= 1 })
	st := e.backend.configStatuses()[0]
	if st.Revision != 5 || !st.Applied || !strings.HasPrefix(st.ETag, `"r5-`) {
		t.Errorf("config status = %+v, want revision 5 applied with the document's ETag", st)
	}

	// Disable the partner: the change reaches the DMZ server through the long poll.
	doc := document(e.backend, e.files, 6)
	doc.Partners[0].Enabled = false
	e.backend.setDoc(doc)
	cfg = conn.WaitConfig(t, waitLong)
	if en, _ := partnerEnabled(cfg, clienttest.PartnerID); cfg.GetVersion() != 6 || en {
		t.Errorf("pushed version %d with partner enabled %v, want version 6 with the partner disabled", cfg.GetVersion(), en)
	}
	if pp := cfg.GetConfig().GetProxyProtocol(); pp != nil {
		t.Errorf("pushed proxy_protocol = %v after the backend dropped it, want unset (off)", pp)
	}
	if got := r.client.Current().Version; got != 6 {
		t.Errorf("client version = %d, want 6", got)
	}
	// The unchanged CRL was downloaded once.
	e.backend.mu.Lock()
	gets := e.backend.crlGets["partner-ca"]
	e.backend.mu.Unlock()
	if gets != 1 {
		t.Errorf("CRL downloads = %d, want 1 (the content did not change)", gets)
	}

	// A revision that is not higher than the version in force gets the next version.
	e.backend.setDoc(document(e.backend, e.files, 3))
	cfg = conn.WaitConfig(t, waitLong)
	if cfg.GetVersion() != 7 {
		t.Errorf("pushed version for revision 3 = %d, want 7", cfg.GetVersion())
	}
	waitFor(t, "the status of revision 3", func() bool {
		return slices.ContainsFunc(e.backend.configStatuses(), func(s apiv1.ConfigStatus) bool { return s.Revision == 3 && s.Applied })
	})
}

func TestStateDirectory(t *testing.T) {
	e := newEnv(t)
	e.backend.setDoc(document(e.backend, e.files, 2))
	r := e.start(t)
	e.dmz.WaitConn(t, waitLong).WaitConfig(t, waitLong)
	r.stop()
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{
		{e.state, 0o700},
		{filepath.Join(e.state, "state.json"), 0o600},
		{filepath.Join(e.state, "crls"), 0o700},
		{filepath.Join(e.state, "spool"), 0o700},
	} {
		st, err := os.Stat(p.path)
		if err != nil {
			t.Errorf("%s: %v", p.path, err)
			continue
		}
		if got := st.Mode().Perm(); got != p.mode {
			t.Errorf("%s mode = %04o, want %04o", p.path, got, p.mode)
		}
	}
	crls, _ := filepath.Glob(filepath.Join(e.state, "crls", "*"))
	if len(crls) != 1 {
		t.Fatalf("CRL files = %v, want one", crls)
	}
	if st, _ := os.Stat(crls[0]); st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %04o, want 0600", crls[0], st.Mode().Perm())
	}
	data, err := os.ReadFile(crls[0])
	if err != nil || string(data) != string(e.files.CRL) {
		t.Errorf("CRL file content differs from the backend's CRL (%v)", err)
	}
}

// TestRestartWhileBackendDown restarts the client with the backend down: it configures the
// server from the state directory, and catches up when the backend is back.
func TestRestartWhileBackendDown(t *testing.T) {
	e := newEnv(t)
	e.backend.setDoc(document(e.backend, e.files, 8))
	r := e.start(t)
	conn := e.dmz.WaitConn(t, waitLong)
	first := conn.WaitConfig(t, waitLong)
	r.stop()

	e.backend.setDown(true)
	e.dmz.SetWelcomeVersion(0) // a restarted DMZ server holds nothing
	conn.Drop()
	r = e.start(t)
	conn = e.dmz.WaitConn(t, waitLong)
	cached := conn.WaitConfig(t, waitLong)
	if cached.GetVersion() != first.GetVersion() || len(cached.GetConfig().GetPartners()) != 2 || len(cached.GetConfig().GetCrls()) != 1 {
		t.Errorf("configuration from the state directory = version %d with %d partners and %d CRLs, want version %d with 2 partners and 1 CRL",
			cached.GetVersion(), len(cached.GetConfig().GetPartners()), len(cached.GetConfig().GetCrls()), first.GetVersion())
	}
	waitFor(t, "the cached-configuration warning", func() bool { return logged(e.hook, backendsync.EventCachedConfig) })
	waitFor(t, "the unreachable warning", func() bool { return logged(e.hook, backendsync.EventBackendUnreachable) })
	waitFor(t, "backend health NOT_SERVING", func() bool { return healthIs(r.health, admin.HealthClientBackend, false) })
	waitFor(t, "tunnel health SERVING", func() bool { return healthIs(r.health, admin.HealthClientTunnel, true) })
	if healthIs(r.health, "", true) {
		t.Error("overall health SERVING while the backend is down")
	}

	doc := document(e.backend, e.files, 9)
	doc.Partners = doc.Partners[:1]
	e.backend.setDoc(doc)
	e.backend.setDown(false)
	next := conn.WaitConfig(t, waitLong)
	if next.GetVersion() != 9 || len(next.GetConfig().GetPartners()) != 1 {
		t.Errorf("configuration after the backend returned = version %d with %d partners, want version 9 with 1", next.GetVersion(), len(next.GetConfig().GetPartners()))
	}
	waitFor(t, "the reachable line", func() bool { return logged(e.hook, backendsync.EventBackendReachable) })
	waitFor(t, "overall health SERVING", func() bool { return healthIs(r.health, "", true) })
}

// healthIs reports whether service of h has the status serving.
func healthIs(h *admin.Health, service string, serving bool) bool {
	r, err := h.Server().Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	return err == nil && (r.GetStatus() == healthpb.HealthCheckResponse_SERVING) == serving
}

func logged(h *logtest.Hook, event string) bool {
	for _, en := range h.AllEntries() {
		if en.Data["event"] == event {
			return true
		}
	}
	return false
}

func TestRefusedDocument(t *testing.T) {
	e := newEnv(t)
	e.backend.setDoc(document(e.backend, e.files, 1))
	r := e.start(t)
	conn := e.dmz.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)

	bad := document(e.backend, e.files, 2)
	bad.Partners[0].OdetteID = "bad id!"
	bad.CompanyIdentity.PrivateKeyPEM = ""
	e.backend.setDoc(bad)
	waitFor(t, "the refusal status", func() bool {
		return slices.ContainsFunc(e.backend.configStatuses(), func(s apiv1.ConfigStatus) bool { return s.Revision == 2 })
	})
	var st apiv1.ConfigStatus
	for _, s := range e.backend.configStatuses() {
		if s.Revision == 2 {
			st = s
		}
	}
	var fields []string
	for _, ce := range st.Errors {
		fields = append(fields, ce.Field)
	}
	if st.Applied || !slices.Equal(fields, []string{"company_identity.private_key_pem", "partners[0].odette_id"}) {
		t.Errorf("status of the refused document = %+v, want not applied with the key and the Odette ID named", st)
	}
	if got := r.client.Current().Version; got != 1 {
		t.Errorf("version in force = %d, want 1 (the refused document changes nothing)", got)
	}
	select {
	case cfg := <-conn.Configs():
		t.Errorf("a refused document reached the server as version %d", cfg.GetVersion())
	case <-time.After(200 * time.Millisecond):
	}
	// The next good document is used.
	e.backend.setDoc(document(e.backend, e.files, 3))
	if cfg := conn.WaitConfig(t, waitLong); cfg.GetVersion() != 3 {
		t.Errorf("version after the refused one = %d, want 3", cfg.GetVersion())
	}
}

// TestRelay sends the server's reports through the client and checks what reached the backend.
func TestRelay(t *testing.T) {
	e := newEnv(t)
	e.backend.setDoc(document(e.backend, e.files, 1))
	e.backend.setLicense([]byte("license for PROXY-1"))
	r := e.start(t)
	conn := e.dmz.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)

	// The backend's license reaches the server.
	select {
	case lic := <-conn.Licenses():
		if string(lic) != "license for PROXY-1" {
			t.Errorf("pushed license = %q, want the backend's", lic)
		}
	case <-time.After(waitLong):
		t.Fatal("the backend's license was not pushed")
	}

	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, f := range []*tunnelv1.Frame{
		{Kind: &tunnelv1.Frame_Event{Event: &tunnelv1.Event{Name: "partner_unknown", Severity: tunnelv1.Severity_SEVERITY_CRITICAL,
			OdetteId: "STRANGER", RemoteAddr: "192.0.2.7:40000", Message: "unknown partner", SessionId: 17,
			Fields: map[string]string{"reason": "partner_unknown", "long": strings.Repeat("x", 5000)}, Time: timestamppb.New(at)}}},
		{Kind: &tunnelv1.Frame_CrlUrlReport{CrlUrlReport: &tunnelv1.CrlUrlReport{Urls: []string{"http://crl.other.test/a.crl", "ldap://dir.test/cn=x"}}}},
		{Kind: &tunnelv1.Frame_LicenseStatus{LicenseStatus: &tunnelv1.LicenseStatus{ProxyId: "PROXY-1", Valid: true, ExpiresAt: timestamppb.New(at)}}},
	} {
		if err := conn.Send(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	// A log line is only a log line: nothing scrapes it into an event.
	e.log.WithFields(logrus.Fields{"event": "tunnel_down", "remote_addr": "127.0.0.1:3306"}).Warn("a line, not an event")
	// An event the client emits itself becomes a client event.
	own := event.New("internal_protocol_violation", "the internal server sent an invalid command")
	own.RemoteAddr, own.SessionID = "127.0.0.1:3305", 4
	r.client.Events().Emit(e.log, own)

	waitFor(t, "two events in the backend", func() bool { return len(e.backend.eventsByID()) >= 2 })
	var server, relayed *apiv1.Event
	for id, ev := range e.backend.eventsByID() {
		if len(id) != 32 {
			t.Errorf("event id %q, want 32 hexadecimal digits", id)
		}
		switch ev.Name {
		case "partner_unknown":
			server = &ev
		case "internal_protocol_violation":
			relayed = &ev
		case "tunnel_down":
			t.Errorf("a log line became an event in the backend: %+v", ev)
		}
	}
	if server == nil || server.Source != apiv1.SourceServer || server.Severity != apiv1.SeverityCritical || server.OdetteID != "STRANGER" ||
		server.SessionID != 17 || !server.Time.Equal(at) || server.Fields["reason"] != "partner_unknown" ||
		len(server.Fields["long"]) > apiv1.MaxFieldValueLength || !strings.Contains(server.Fields["long"], "5000 bytes, shortened") {
		t.Errorf("server event in the backend = %+v, want partner_unknown with its fields (the long one shortened and marked)", server)
	}
	if relayed == nil || relayed.Source != apiv1.SourceClient || relayed.Severity != apiv1.SeverityError || relayed.RemoteAddr != "127.0.0.1:3305" || relayed.SessionID != 4 {
		t.Errorf("client event in the backend = %+v, want the catalogued error with source client", relayed)
	}
	waitFor(t, "the CRL URL report", func() bool {
		e.backend.mu.Lock()
		defer e.backend.mu.Unlock()
		return len(e.backend.urls) > 0
	})
	waitFor(t, "the valid license status", func() bool {
		e.backend.mu.Lock()
		defer e.backend.mu.Unlock()
		return slices.ContainsFunc(e.backend.licStatus, func(s apiv1.LicenseStatus) bool { return s.Valid })
	})
	e.backend.mu.Lock()
	defer e.backend.mu.Unlock()
	if !slices.Equal(e.backend.urls, []string{"http://crl.other.test/a.crl"}) {
		t.Errorf("reported CRL URLs = %q, want the http URL only", e.backend.urls)
	}
	if first := e.backend.licStatus[0]; first.ProxyID != "PROXY-1" {
		t.Errorf("license status = %+v, want PROXY-1's", first)
	}
	// With it, the tunnel's state: one stream, no session; and the status again every
	// StateInterval (the last valid one, repeated).
	last := e.backend.licStatus[len(e.backend.licStatus)-1]
	if tun := last.Tunnel; tun == nil || tun.Streams != 1 || tun.OpenSessions != 0 || tun.ConnectedAt == nil || time.Since(*tun.ConnectedAt) > time.Minute {
		t.Errorf("tunnel state reported = %+v, want one stream connected just now", last.Tunnel)
	}
	n := len(e.backend.licStatus)
	e.backend.mu.Unlock()
	waitFor(t, "the license status repeated", func() bool {
		e.backend.mu.Lock()
		defer e.backend.mu.Unlock()
		return len(e.backend.licStatus) >= n+2 && e.backend.licStatus[len(e.backend.licStatus)-1].Valid
	})
	e.backend.mu.Lock()
}

// TestOperatorFailures checks that a refused token, a pin mismatch and an untrusted backend
// certificate are named for what they are, logged as errors at every poll and polled no faster
// than OperatorRetry — not backend_unreachable at the backoff's pace.
func TestOperatorFailures(t *testing.T) {
	const retry = 200 * time.Millisecond
	tests := []struct {
		name  string
		cfg   func(b *backend) apiclient.Config
		event string
		// reached: the requests pass TLS and reach the handler (a token refusal).
		reached bool
	}{
		{"wrong token", func(b *backend) apiclient.Config {
			return apiclient.Config{BaseURL: b.srv.URL, Token: "wrong-token-0000", RootCAs: rootsOf(b.srv)}
		}, backendsync.EventBackendUnauthorized, true},
		{"pin mismatch", func(b *backend) apiclient.Config {
			return apiclient.Config{BaseURL: b.srv.URL, Token: testToken, PinSHA256: strings.Repeat("ab", 32)}
		}, backendsync.EventBackendCertificateMismatch, false},
		{"no pin for a self-signed certificate", func(b *backend) apiclient.Config {
			return apiclient.Config{BaseURL: b.srv.URL, Token: testToken}
		}, backendsync.EventBackendCertificateUntrusted, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.backend.setDoc(document(e.backend, e.files, 1))
			cfg := tt.cfg(e.backend)
			cfg.Retry, cfg.Timeout = apiclient.Retry{Attempts: 1}, 5*time.Second
			api, err := apiclient.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer api.Close()
			s, err := backendsync.New(backendsync.Config{
				API: api, StateDir: e.state, Wait: time.Second, Logger: e.log, OperatorRetry: retry,
				Backoff: backoff.Exponential{Base: time.Millisecond, Cap: 2 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Spool().Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { _, err := s.Initial(ctx); done <- err }()
			const want = 3
			entries := func() []*logrus.Entry {
				var list []*logrus.Entry
				for _, en := range e.hook.AllEntries() {
					if en.Data["event"] == tt.event {
						list = append(list, en)
					}
				}
				return list
			}
			waitFor(t, fmt.Sprintf("%d polls logged as %s", want, tt.event), func() bool { return len(entries()) >= want })
			cancel()
			if err := <-done; err == nil {
				t.Fatal("Initial() = nil error, want the context's end: the backend never gave a configuration")
			}

			polls := entries()
			for i, en := range polls {
				if en.Level != logrus.ErrorLevel {
					t.Errorf("%s logged at %v, want error", tt.event, en.Level)
				}
				// With the backoff's 1–2 ms the client would poll hundreds of times a second;
				// the polls must be at least OperatorRetry apart.
				if i > 0 {
					if gap := en.Time.Sub(polls[i-1].Time); gap < retry {
						t.Errorf("poll %d came %v after the one before, want at least %v", i, gap, retry)
					}
				}
			}
			if logged(e.hook, backendsync.EventBackendUnreachable) {
				t.Errorf("logged %s, want only %s", backendsync.EventBackendUnreachable, tt.event)
			}
			e.backend.mu.Lock()
			reached := e.backend.requests
			e.backend.mu.Unlock()
			// A poll in flight when the test cancelled may have reached the handler unlogged.
			if tt.reached && (reached < len(polls) || reached > len(polls)+1) || !tt.reached && reached != 0 {
				t.Errorf("backend handled %d requests for %d polls (TLS passes: %v)", reached, len(polls), tt.reached)
			}
		})
	}
}
