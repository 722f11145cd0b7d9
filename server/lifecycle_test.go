package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/durationpb"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/internal/pki"
	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// expectSSRM connects a partner to addr and checks that the server answers with SSRM.
func expectSSRM(t *testing.T, addr string, p *servertest.PKI) {
	t.Helper()
	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp, err := servertest.DialPartner(addr, &leaf.TLS, p.CompanyCA.Pool())
	if err != nil {
		t.Fatalf("partner connection to %s: %v", addr, err)
	}
	defer rp.Close()
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatal(err)
	}
}

func TestListenerLifecycle(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	env := newEnv(t, p, nil, envOptions{noClient: true})
	if a := env.s.PartnerAddr(); a != "" {
		t.Fatalf("partner listener open at %s without a tunnel or configuration", a)
	}

	c1 := env.startClient(t, nil)
	if w := c1.WaitWelcome(t); w.GetConfigVersion() != 0 || w.GetProxyId() != testProxyID || !w.GetLicense().GetValid() || w.GetSessionWindow() == 0 {
		t.Errorf("Welcome = %v", w)
	}
	if a := env.s.PartnerAddr(); a != "" {
		t.Fatalf("partner listener open at %s with a tunnel but no configuration", a)
	}
	c1.PushConfig(1, cfg)
	if a := c1.WaitApplied(t, 1); !a.GetOk() {
		t.Fatal(a.GetErrors())
	}
	addr := env.waitListener(t, true)
	expectSSRM(t, addr, p)
	c1.WaitEvent(t, EventListenerOpened, nil)

	// The last tunnel goes away: the listener closes and refuses connections.
	c1.Stop()
	env.waitListener(t, false)
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("partner listener still accepts at %s without a tunnel", addr)
	}
	env.logEntry(t, EventListenerClosed, func(e *logrus.Entry) bool { return e.Data["reason"] == "no client tunnel connected" })

	// A client is back: the server still holds version 1 and reopens.
	c2 := env.startClient(t, nil)
	if w := c2.WaitWelcome(t); w.GetConfigVersion() != 1 {
		t.Errorf("Welcome.config_version = %d after reconnect, want 1", w.GetConfigVersion())
	}
	addr = env.waitListener(t, true)
	expectSSRM(t, addr, p)

	// An address change rebinds.
	next := testnet.ReserveAddr(t)
	cfg.PartnerListenAddress = next
	c2.PushConfig(2, cfg)
	if a := c2.WaitApplied(t, 2); !a.GetOk() {
		t.Fatal(a.GetErrors())
	}
	waitFor(t, "the listener at "+next, func() bool { return env.s.PartnerAddr() == next })
	expectSSRM(t, next, p)

	// With two tunnels, losing one keeps the listener open; it closes with the last one.
	c3 := env.startClient(t, nil)
	waitFor(t, "two tunnels", func() bool { return env.s.tunnelCount() == 2 })
	c3.Stop()
	waitFor(t, "one tunnel", func() bool { return env.s.tunnelCount() == 1 })
	if a := env.s.wantListener(); a != next {
		t.Errorf("with one of two tunnels left the listener should stay at %s, want state %q", next, a)
	}
	expectSSRM(t, next, p)

	st, err := env.s.Admin().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tunnels) != 1 || st.Tunnels[0].ClientID != "servertest-client" || st.ConfigVersion != 2 || !st.PartnerListenerActive ||
		st.PartnerListenAddress != next || !st.LicenseValid || st.Program != "smartproxy-server" {
		t.Errorf("admin status = %+v", st)
	}
}

func TestConfigApplyReject(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"), servertest.EnabledPartner("O0013REVOKED"))
	env := newEnv(t, p, cfg, envOptions{})
	c := env.client

	bad := p.SecurityConfig(t, &tunnelv1.Partner{OdetteId: "O0013PARTNER", Enabled: true, AllowedNetworks: []string{"10.1.2.3/8"}})
	bad.CompanyIdentity.PrivateKey = []byte("not a key")
	c.PushConfig(3, bad)
	a := c.WaitApplied(t, 3)
	var fields []string
	for _, e := range a.GetErrors() {
		fields = append(fields, e.GetField())
	}
	if a.GetOk() || strings.Join(fields, ",") != "company_identity.private_key,partners[0].allowed_networks[0]" {
		t.Errorf("ConfigApplied(3) = ok %v, fields %q; want refused with the two field paths", a.GetOk(), fields)
	}
	if strings.Contains(a.String(), "not a key") {
		t.Errorf("ConfigApplied echoes key material: %v", a)
	}
	if v := env.s.Policy().Version; v != 1 {
		t.Errorf("version in force after a refused one = %d, want 1", v)
	}
	c.WaitEvent(t, EventConfigRejected, nil)

	c.PushConfig(2, cfg)
	if a := c.WaitApplied(t, 2); !a.GetOk() {
		t.Fatal(a.GetErrors())
	}
	c.PushConfig(1, cfg)
	if a := c.WaitApplied(t, 1); a.GetOk() || len(a.GetErrors()) != 1 || a.GetErrors()[0].GetField() != "version" {
		t.Errorf("ConfigApplied(older version 1) = %v, want refused on field version", a)
	}
	if v := env.s.Policy().Version; v != 2 {
		t.Errorf("version in force = %d, want 2 (the newest wins)", v)
	}

	// A CRL in chunks: the snapshot announces it, the chunks follow, then it applies.
	revoked := p.Partner(t, "O0013REVOKED", nil)
	der, err := p.PartnerCA.CRL([]pki.RevokedCert{{SerialNumber: revoked.Cert.SerialNumber}}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	chunked := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"), servertest.EnabledPartner("O0013REVOKED"))
	chunked.PartnerListenAddress = env.s.Policy().ListenAddress
	chunked.Crls = []*tunnelv1.Crl{{Id: "partner-ca", Url: "http://crl.example/p.crl", Size: uint64(len(der)), Sha256: sum[:]}}
	ctx := context.Background()
	send := func(f *tunnelv1.Frame) {
		t.Helper()
		if err := c.Send(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigSnapshot{ConfigSnapshot: &tunnelv1.ConfigSnapshot{Version: 5, Config: chunked}}})
	for off := 0; off < len(der); off += 100 {
		end := min(off+100, len(der))
		send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigChunk{ConfigChunk: &tunnelv1.ConfigChunk{Version: 5, CrlId: "partner-ca", Offset: uint64(off), Data: der[off:end]}}})
	}
	if a := c.WaitApplied(t, 5); !a.GetOk() {
		t.Fatalf("chunked configuration refused: %v", a.GetErrors())
	}
	if pol := env.s.Policy(); pol.Version != 5 || len(pol.CRLs) != 1 || !pol.CRLs[0].IsRevoked(revoked.Cert.SerialNumber) {
		t.Fatalf("policy after the chunked CRL: version %d, %d CRLs", pol.Version, len(pol.CRLs))
	}
	rp, err := servertest.DialPartner(env.s.PartnerAddr(), &revoked.TLS, p.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rp.Read(10 * time.Second); !servertest.IsTLSAlert(err) {
		t.Errorf("revoked partner after the chunked CRL: read = %v, want a TLS alert", err)
	}
	rp.Close()

	// Chunks out of order drop the snapshot with an error.
	send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigSnapshot{ConfigSnapshot: &tunnelv1.ConfigSnapshot{Version: 6, Config: chunked}}})
	send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigChunk{ConfigChunk: &tunnelv1.ConfigChunk{Version: 6, CrlId: "partner-ca", Offset: 100, Data: der[100:200]}}})
	if a := c.WaitApplied(t, 6); a.GetOk() || len(a.GetErrors()) != 1 || !strings.HasPrefix(a.GetErrors()[0].GetField(), "config_chunk") {
		t.Errorf("ConfigApplied for a gap in the chunks = %v, want one config_chunk error", a)
	}
	if v := env.s.Policy().Version; v != 5 {
		t.Errorf("version in force = %d, want 5", v)
	}
}

func TestTunnelLossEndsSessions(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	rp := rawSession(t, env, p.Partner(t, "O0013PARTNER", nil), "O0013PARTNER")
	env.client.Stop()
	esid, err := rp.ReadESID(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("partner got ESID %s after the tunnel was lost, want 05", esid.Reason)
	}
	env.logEntry(t, EventSessionEnded, func(e *logrus.Entry) bool { return e.Data["reason"] == "inside_tunnel_lost" })
	env.waitListener(t, false)
}

func TestIdleTimeout(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	cfg.Limits = &tunnelv1.Limits{IdleTimeout: durationpb.New(300 * time.Millisecond)}
	env := newEnv(t, p, cfg, envOptions{})
	rp := rawSession(t, env, p.Partner(t, "O0013PARTNER", nil), "O0013PARTNER")
	esid, err := rp.ReadESID(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDTimeout {
		t.Errorf("partner got ESID %s, want 09", esid.Reason)
	}
	results, err := env.responder.WaitResults(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var se *endpoint.SessionError
	if !errors.As(results[0].Err, &se) || se.Reason != oftp2.ESIDTimeout {
		t.Errorf("responder ended with %v, want ESID 09 from the proxy", results[0].Err)
	}
}

func TestAdminSessionsAndKill(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	rp := rawSession(t, env, p.Partner(t, "O0013PARTNER", nil), "O0013PARTNER")
	ctx := context.Background()
	be := env.s.Admin()
	// The responder's SSID reached the partner; its bytes are counted right after the write.
	waitFor(t, "bytes to the partner counted", func() bool {
		s, _ := be.Sessions(ctx)
		return len(s) == 1 && s[0].BytesToPartner > 0
	})
	sessions, err := be.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 1 || sessions[0].PartnerOdetteID != "O0013PARTNER" || sessions[0].State != "open" ||
		sessions[0].RemoteAddr != rp.Conn.LocalAddr().String() || sessions[0].BytesToPartner == 0 || sessions[0].ClientID != "servertest-client" {
		t.Fatalf("admin sessions = %+v", sessions)
	}
	id := sessions[0].ID
	prev, err := be.SetLogLevel(ctx, id, tunnelv1.LogLevel_LOG_LEVEL_TRACE, "test")
	if err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED {
		t.Errorf("SetLogLevel(session) = %v, %v; want UNSPECIFIED, nil", prev, err)
	}
	if s, _ := be.Sessions(ctx); s[0].LogLevel != tunnelv1.LogLevel_LOG_LEVEL_TRACE {
		t.Errorf("session log level = %v, want TRACE", s[0].LogLevel)
	}
	if _, err := be.SetLogLevel(ctx, id+100, tunnelv1.LogLevel_LOG_LEVEL_DEBUG, "test"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("SetLogLevel(unknown session) = %v, want ErrNotFound", err)
	}
	if err := be.KillSession(ctx, id+100, ""); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("KillSession(unknown) = %v, want ErrNotFound", err)
	}
	if err := be.KillSession(ctx, id, "maintenance"); err != nil {
		t.Fatal(err)
	}
	esid, err := rp.ReadESID(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("killed session: partner got ESID %s, want 05", esid.Reason)
	}
	results, err := env.responder.WaitResults(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var se *endpoint.SessionError
	if !errors.As(results[0].Err, &se) || se.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("responder ended with %v, want ESID 05", results[0].Err)
	}
	env.logEntry(t, EventSessionEnded, func(e *logrus.Entry) bool { return e.Data["reason"] == "admin_kill" })
}

func TestDrainOnShutdown(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	rp := rawSession(t, env, p.Partner(t, "O0013PARTNER", nil), "O0013PARTNER")
	done := make(chan struct{})
	go func() { env.stop(); close(done) }()
	if d := env.client.WaitDrain(t); d.GetReason() != "shutdown" || d.GetDeadline() == nil {
		t.Errorf("Drain = %v", d)
	}
	esid, err := rp.ReadESID(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("partner got ESID %s at the drain deadline, want 05", esid.Reason)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	env.logEntry(t, EventSessionEnded, func(e *logrus.Entry) bool { return e.Data["reason"] == "shutdown" })
}

func TestLicenseUpdate(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{noLicense: true})
	key, keyID := devkey.SigningKey()
	sign := func(proxyID string) []byte {
		f, err := license.Sign(license.License{ProxyID: proxyID, Customer: "pushed", NotAfter: time.Now().Add(48 * time.Hour)}, key, keyID)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	ctx := context.Background()
	push := func(file []byte) {
		t.Helper()
		if err := env.client.Send(ctx, &tunnelv1.Frame{Kind: &tunnelv1.Frame_LicenseUpdate{LicenseUpdate: &tunnelv1.LicenseUpdate{License: file}}}); err != nil {
			t.Fatal(err)
		}
	}
	// A license for another proxy is refused and nothing is stored.
	push(sign("SPX-0000-0000-0000-0009"))
	env.client.WaitEvent(t, EventLicenseUpdated, func(e *tunnelv1.Event) bool { return e.GetFields()["reason"] == "refused" })
	if _, err := os.Stat(env.licPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("license file after a refused push: %v, want none", err)
	}
	// A valid one is stored, loaded and reported; partners are admitted at once.
	good := sign(testProxyID)
	push(good)
	st := env.client.WaitLicense(t, func(l *tunnelv1.LicenseStatus) bool { return l.GetValid() })
	if st.GetProxyId() != testProxyID || st.GetExpiresAt() == nil {
		t.Errorf("LicenseStatus = %v", st)
	}
	if data, err := os.ReadFile(env.licPath); err != nil || !bytes.Equal(data, good) {
		t.Errorf("stored license: %v, equal %v", err, bytes.Equal(data, good))
	}
	path, sum := writeFile(t, t.TempDir(), "after-license.bin", randomBytes(t, 10<<10))
	res, err := sendFiles(t, env.s.PartnerAddr(), p.Partner(t, "O0013PARTNER", nil), partnerTLS(p), "O0013PARTNER", nil, endpoint.OutgoingFile{Path: path})
	if err != nil || res.Err() != nil {
		t.Fatalf("session after the license push: %v / %v", err, res.Err())
	}
	results, _ := env.responder.WaitResults(ctx, 1)
	if len(results[0].Result.Received) != 1 || results[0].Result.Received[0].SHA256 != sum {
		t.Errorf("file after the license push not delivered intact: %+v", results[0])
	}
	// ReloadLicense (SIGHUP) keeps the stored license valid.
	if err := env.s.ReloadLicense(); err != nil {
		t.Errorf("ReloadLicense() = %v", err)
	}
}

// TestIdleTimeoutPartnerNotReading: the inside sends a file to a partner that stops reading, so
// the relay's write to the partner blocks. The idle timer must still end the session: the
// blocked write is freed, the partner connection closed, and the responder gets ESID 09.
func TestIdleTimeoutPartnerNotReading(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	cfg.Limits = &tunnelv1.Limits{IdleTimeout: durationpb.New(500 * time.Millisecond)}
	path, _ := writeFile(t, t.TempDir(), "big.bin", randomBytes(t, 48<<20))
	env := newEnv(t, p, cfg, envOptions{responder: func(c *endpoint.Config) {
		c.Outbox = func(string) ([]endpoint.OutgoingFile, error) {
			return []endpoint.OutgoingFile{{Path: path, DatasetName: "TOPARTNER"}}, nil
		}
	}})
	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp, err := servertest.DialPartner(env.s.PartnerAddr(), &leaf.TLS, env.pki.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatal(err)
	}
	// A receiving partner with the largest buffer and credit: the responder may send ~64 MB
	// before it needs a CDT, far more than the sockets and the tunnel window hold.
	write(t, rp, servertest.SSID(t, "O0013PARTNER", "", func(s *oftp2.SSID) {
		s.Mode, s.BufferSize, s.Credit, s.Compression = oftp2.ModeReceiver, 65535, 999, false
	}))
	if _, err := rp.Read(10 * time.Second); err != nil {
		t.Fatalf("waiting for the responder's SSID: %v", err)
	}
	write(t, rp, mustAppend(t, &oftp2.CD{}))
	b, err := rp.Read(10 * time.Second)
	if err != nil || len(b) == 0 || oftp2.CommandCode(b[0]) != oftp2.CodeSFID {
		t.Fatalf("after CD: %q, %v; want the responder's SFID", b, err)
	}
	write(t, rp, mustAppend(t, &oftp2.SFPA{}))
	// From here the partner reads nothing.
	env.logEntry(t, EventSessionEnded, func(e *logrus.Entry) bool { return e.Data["reason"] == "idle_timeout" })
	results, err := env.responder.WaitResults(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var se *endpoint.SessionError
	if !errors.As(results[0].Err, &se) || se.Reason != oftp2.ESIDTimeout {
		t.Errorf("responder ended with %v, want ESID 09 from the proxy", results[0].Err)
	}
}

func mustAppend(t *testing.T, c oftp2.Command) []byte {
	t.Helper()
	b, err := c.Append(nil)
	if err != nil {
		t.Fatalf("%s.Append: %v", c.Code(), err)
	}
	return b
}
