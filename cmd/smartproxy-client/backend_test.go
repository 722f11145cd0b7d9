package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/client/clienttest"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/proctest"
)

// refBackend is the reference backend in-process on loopback with a fresh database.
type refBackend struct {
	store       *store.Store
	url         string
	fingerprint string
	token       string
}

func startRefBackend(t *testing.T, files *clienttest.Files) *refBackend {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "api.db"), store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	certFile, keyFile, _, err := backend.EnsureSelfSigned(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := backend.LoadCertificateFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := backend.New(backend.Config{Store: st, TLSConfig: cf.TLSConfig(), RevisionPollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("backend Run() = %v", err)
		}
	})
	token, _, err := st.CreateToken(ctx, "proxy-1")
	if err != nil {
		t.Fatal(err)
	}
	b := &refBackend{store: st, url: "https://" + ln.Addr().String(), fingerprint: backend.Fingerprint(cf.Leaf()), token: token}

	// The configuration the files of clienttest describe.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.SetSettings(ctx, []store.SettingChange{
		{Key: "company_certificate", Value: string(files.Company.CertPEM)},
		{Key: "company_key", Value: string(files.Company.KeyPEM)},
		{Key: "internal_server.address", Value: "127.0.0.1:3305"},
		{Key: "partner_listen_address", Value: "127.0.0.1:0"},
	}))
	_, err = st.AddCA(ctx, files.PartnerCA.Cert.Raw)
	must(err)
	must(st.AddPartner(ctx, store.Partner{OdetteID: clienttest.PartnerID, Name: "Partner AG", Enabled: true}))
	return b
}

func partnerState(cfg *tunnelv1.ConfigSnapshot, id string) (enabled, found bool) {
	for _, p := range cfg.GetConfig().GetPartners() {
		if p.GetOdetteId() == id {
			return p.GetEnabled(), true
		}
	}
	return false, false
}

// TestRunWithBackend runs the daemon in-process with -U against the reference backend: the
// configuration comes from the backend (certificate pinned by fingerprint), a change made in the
// backend's store reaches the DMZ side, and the state directory holds the last good document.
func TestRunWithBackend(t *testing.T) {
	dir := t.TempDir()
	files := clienttest.NewFiles(t, dir)
	b := startRefBackend(t, files)
	srv := clienttest.NewServer(t, clienttest.ServerConfig{})
	cert, key, ca := srv.WriteClientFiles(t, dir)
	state := filepath.Join(dir, "state")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr proctest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-U", b.url, "-T", b.token, "--api-fingerprint", b.fingerprint, "--state-dir", state,
			"-S", srv.Addr, "--tunnel-server-name", "localhost", "--tunnel-cert", cert, "--tunnel-key", key, "--tunnel-ca", ca,
			"--admin=", "--metrics=", "--pid-file="}, &stderr, &stderr)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run() = %v, want nil after cancel", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("run() did not return after cancel")
			}
		})
	}
	defer stop()
	conn := srv.WaitConn(t, 15*time.Second)
	cfg := conn.WaitConfig(t, 15*time.Second)
	if en, ok := partnerState(cfg, clienttest.PartnerID); !ok || !en {
		t.Fatalf("first configuration: partner enabled %v found %v, want the backend's enabled partner", en, ok)
	}
	rev, err := b.store.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GetVersion() != uint64(rev) {
		t.Errorf("pushed version = %d, want the backend's revision %d", cfg.GetVersion(), rev)
	}

	if err := b.store.UpdatePartner(context.Background(), clienttest.PartnerID, func(p *store.Partner) error { p.Enabled = false; return nil }); err != nil {
		t.Fatal(err)
	}
	cfg = conn.WaitConfig(t, 15*time.Second)
	if en, _ := partnerState(cfg, clienttest.PartnerID); en {
		t.Errorf("configuration after the change: partner enabled, want disabled")
	}
	if _, err := os.Stat(filepath.Join(state, "state.json")); err != nil {
		t.Errorf("state directory: %v", err)
	}
	stop()
	out := stderr.String()
	if strings.Contains(out, b.token) {
		t.Error("the log shows the token")
	}
	for _, want := range []string{"configuration from the backend", "event=config_received"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
