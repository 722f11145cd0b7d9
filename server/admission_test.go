package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/protobuf/types/known/durationpb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/license"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
	"smartproxy/tunnel/transport"
)

const testProxyID = "SPX-0000-0000-0000-00T1"

// admissionEnv runs a server's partner admission on a loopback listener without tunnels: the
// partner path up to the point where a session would open inside. Events that would go to a
// tunnel stay in the server's queue, where the test reads them.
type admissionEnv struct {
	s    *Server
	pki  *servertest.PKI
	hook *test.Hook
	addr string
	// other holds queued frames waitEvent read past.
	other []queuedEvent
}

// newAdmissionEnv starts the partner listener for cfg (version 1) with a valid license unless
// noLicense.
func newAdmissionEnv(t *testing.T, p *servertest.PKI, cfg *tunnelv1.SecurityConfig, noLicense bool) *admissionEnv {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	hook := test.NewLocal(log)
	tunnelLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tunnelLn.Close() })
	licPath := filepath.Join(t.TempDir(), "license")
	if !noLicense {
		writeTestLicense(t, licPath, testProxyID)
	}
	s, err := New(Config{
		TunnelListener:    tunnelLn,
		TunnelCredentials: &transport.StaticCredentials{Cert: p.TunnelServer.TLS, Pool: p.TunnelCA.Pool()},
		ProxyID:           testProxyID,
		LicensePath:       licPath,
		Logger:            log,
		EventQueue:        4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res := s.applySnapshot(&tunnelv1.ConfigSnapshot{Version: 1, Config: cfg}, "test"); !res.applied {
		t.Fatalf("configuration refused: %v", res.errs)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.acceptLoop(ln) }()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		s.partnerWG.Wait()
	})
	return &admissionEnv{s: s, pki: p, hook: hook, addr: ln.Addr().String()}
}

func writeTestLicense(t *testing.T, path, proxyID string) {
	t.Helper()
	key, keyID := license.DevSigningKey()
	file, err := license.Sign(license.License{ProxyID: proxyID, Customer: "test", NotAfter: time.Now().Add(24 * time.Hour)}, key, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitEvent waits for the log entry of event name and for its Event frame in the queue.
func (e *admissionEnv) waitEvent(t *testing.T, name string) (*logrus.Entry, *tunnelv1.Event) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var entry *logrus.Entry
	for entry == nil {
		for _, en := range e.hook.AllEntries() {
			if en.Data["event"] == name {
				entry = en
				break
			}
		}
		if entry == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no log entry with event=%s; entries: %v", name, eventNames(e.hook))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for {
		select {
		case q := <-e.s.events:
			if ev := q.frame.GetEvent(); ev != nil && ev.GetName() == name {
				return entry, ev
			}
			e.other = append(e.other, q)
		case <-time.After(time.Until(deadline)):
			t.Fatalf("no Event frame %s queued for the tunnel", name)
		}
	}
}

func eventNames(h *test.Hook) []string {
	var out []string
	for _, en := range h.AllEntries() {
		if n, ok := en.Data["event"].(string); ok {
			out = append(out, n)
		}
	}
	return out
}

func TestAdmissionMatrix(t *testing.T) {
	p := servertest.NewPKI(t)
	foreign := servertest.NewPKI(t)
	revokedLeaf := p.Partner(t, "O0013REVOKED", nil)
	crl, err := p.PartnerCA.CRL([]pki.RevokedCert{{SerialNumber: revokedLeaf.Cert.SerialNumber, ReasonCode: 1}}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	partners := []*tunnelv1.Partner{
		servertest.EnabledPartner("O0013PARTNER"),
		servertest.EnabledPartner("O0013REVOKED"),
		{OdetteId: "O0013DISABLED", Enabled: false},
		{OdetteId: "O0013PASSWORD", Enabled: true, Password: "SECRET"},
		{OdetteId: "O0013NETWORK", Enabled: true, AllowedNetworks: []string{"10.0.0.0/8"}},
		{OdetteId: "O0013OUTONLY", Enabled: true, DirectionPolicy: tunnelv1.DirectionPolicy_DIRECTION_POLICY_OUTGOING_ONLY},
	}
	cfg := p.SecurityConfig(t, partners...)
	cfg.Crls = []*tunnelv1.Crl{{Id: "partner-ca", Der: crl}}
	cfg.Limits = &tunnelv1.Limits{SsidTimeout: durationpb.New(300 * time.Millisecond), PerIpRate: 1000, PerIpBurst: 1000}
	env := newAdmissionEnv(t, p, cfg, false)

	leafFor := func(id string) *tls.Certificate { l := p.Partner(t, id, nil); return &l.TLS }
	good := leafFor("O0013PARTNER")
	expired := p.Partner(t, "O0013PARTNER", func(r *pki.Request) {
		r.NotBefore = time.Now().Add(-48 * time.Hour)
		r.NotAfter = time.Now().Add(-24 * time.Hour)
	})
	untrusted := foreign.Partner(t, "O0013PARTNER", nil)

	tests := []struct {
		name      string
		cert      *tls.Certificate
		send      func(t *testing.T, rp *servertest.RawPartner) // after SSRM; nil: TLS-level case
		event     string
		reason    string
		wantESID  oftp2.ESIDReason
		odetteID  string
		tlsRefuse bool // refused during TLS: a TLS alert instead of SSRM
	}{
		{name: "no client certificate", cert: nil, event: EventPartnerTLSRejected, reason: reasonNoClientCert, tlsRefuse: true},
		{name: "untrusted CA", cert: &untrusted.TLS, event: EventPartnerTLSRejected, reason: reasonUntrusted, tlsRefuse: true},
		{name: "expired certificate", cert: &expired.TLS, event: EventPartnerCertExpired, reason: reasonExpired, tlsRefuse: true},
		{name: "revoked certificate", cert: &revokedLeaf.TLS, event: EventPartnerRevoked, reason: reasonRevoked, tlsRefuse: true},
		{name: "unknown Odette ID", cert: leafFor("O0013NOBODY"), send: sendSSID("O0013NOBODY", ""), event: EventPartnerUnknown, reason: "partner_unknown", wantESID: oftp2.ESIDUserCodeNotKnown, odetteID: "O0013NOBODY"},
		{name: "disabled partner", cert: leafFor("O0013DISABLED"), send: sendSSID("O0013DISABLED", ""), event: EventPartnerDisabled, reason: "partner_disabled", wantESID: oftp2.ESIDUserCodeNotKnown, odetteID: "O0013DISABLED"},
		{name: "Odette ID not matching the certificate", cert: leafFor("O0013PASSWORD"), send: sendSSID("O0013PARTNER", ""), event: EventPartnerCertMismatch, reason: "partner_cert_mismatch", wantESID: oftp2.ESIDUserCodeNotKnown, odetteID: "O0013PARTNER"},
		{name: "wrong password", cert: leafFor("O0013PASSWORD"), send: sendSSID("O0013PASSWORD", "WRONG"), event: EventPartnerPassword, reason: "password_invalid", wantESID: oftp2.ESIDInvalidPassword, odetteID: "O0013PASSWORD"},
		{name: "missing password", cert: leafFor("O0013PASSWORD"), send: sendSSID("O0013PASSWORD", ""), event: EventPartnerPassword, reason: "password_invalid", wantESID: oftp2.ESIDInvalidPassword, odetteID: "O0013PASSWORD"},
		{name: "network denied", cert: leafFor("O0013NETWORK"), send: sendSSID("O0013NETWORK", ""), event: EventPartnerNetworkDenied, reason: "partner_network_denied", wantESID: oftp2.ESIDUserCodeNotKnown, odetteID: "O0013NETWORK"},
		{name: "direction denied", cert: leafFor("O0013OUTONLY"), send: sendSSID("O0013OUTONLY", ""), event: EventPartnerDirectionDenied, reason: "partner_direction_denied", wantESID: oftp2.ESIDUserCodeNotKnown, odetteID: "O0013OUTONLY"},
		{name: "SSID level 4", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			write(t, rp, servertest.SSID(t, "O0013PARTNER", "", func(s *oftp2.SSID) { s.Level = 4 }))
		}, event: EventPartnerLevel, reason: "level_unsupported", wantESID: oftp2.ESIDModeIncompatible, odetteID: "O0013PARTNER"},
		{name: "SSID too short", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			write(t, rp, servertest.SSID(t, "O0013PARTNER", "", nil)[:40])
		}, event: EventPartnerSSIDInvalid, reason: "ssid_syntax", wantESID: oftp2.ESIDBufferSizeError, odetteID: "O0013PARTNER"},
		{name: "SSID bad buffer size", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			b := servertest.SSID(t, "O0013PARTNER", "", nil)
			copy(b[35:40], "00100") // SSIDSDEB below the minimum 128
			write(t, rp, b)
		}, event: EventPartnerSSIDInvalid, reason: "ssid_syntax", wantESID: oftp2.ESIDInvalidData, odetteID: "O0013PARTNER"},
		{name: "SSID lower case ID under strict charset", cert: leafFor("o0013partner"), send: func(t *testing.T, rp *servertest.RawPartner) {
			b := servertest.SSID(t, "O0013PARTNER", "", nil)
			copy(b[2:14], "o0013partner")
			write(t, rp, b)
		}, event: EventPartnerSSIDInvalid, reason: "ssid_syntax", wantESID: oftp2.ESIDInvalidData, odetteID: "o0013partner"},
		{name: "first command not SSID", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			write(t, rp, []byte{byte(oftp2.CodeCD)})
		}, event: EventPartnerSSIDInvalid, reason: "not_ssid", wantESID: oftp2.ESIDProtocolViolation},
		{name: "unknown command code", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			write(t, rp, []byte("Zhello"))
		}, event: EventPartnerSSIDInvalid, reason: "ssid_syntax", wantESID: oftp2.ESIDCommandNotRecognised},
		{name: "broken stream header", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			if err := rp.WriteRaw([]byte{0x20, 0, 0, 65}); err != nil {
				t.Fatal(err)
			}
		}, event: EventPartnerSSIDInvalid, reason: "bad_stream_header", wantESID: oftp2.ReasonOf(stbHeaderError(t))},
		{name: "no SSID within the deadline", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {}, event: EventPartnerSSIDTimeout, reason: "ssid_timeout", wantESID: oftp2.ESIDTimeout},
		{name: "valid partner without a tunnel", cert: good, send: sendSSID("O0013PARTNER", ""), event: EventSessionRefused, reason: "no_tunnel", wantESID: oftp2.ESIDResourcesNotAvailable, odetteID: "O0013PARTNER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.hook.Reset()
			rp, err := servertest.DialPartner(env.addr, tt.cert, p.CompanyCA.Pool())
			if err != nil {
				t.Fatalf("DialPartner: %v", err)
			}
			defer rp.Close()
			if tt.tlsRefuse {
				_, err := rp.Read(10 * time.Second)
				if !servertest.IsTLSAlert(err) {
					t.Errorf("first read = %v, want a TLS alert", err)
				}
			} else {
				if err := rp.ExpectSSRM(); err != nil {
					t.Fatal(err)
				}
				tt.send(t, rp)
				esid, err := rp.ReadESID(10 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if esid.Reason != tt.wantESID {
					t.Errorf("ESID reason = %s, want %s", esid.Reason, tt.wantESID)
				}
				if _, err := rp.Read(5 * time.Second); !isClosed(err) {
					t.Errorf("after ESID: read = %v, want the connection closed", err)
				}
			}
			entry, ev := env.waitEvent(t, tt.event)
			if entry.Level != logrus.WarnLevel {
				t.Errorf("log level = %s, want warning", entry.Level)
			}
			if entry.Data["reason"] != tt.reason {
				t.Errorf("log reason = %v, want %s", entry.Data["reason"], tt.reason)
			}
			local := rp.Conn.LocalAddr().String()
			if entry.Data["remote_addr"] != local || ev.GetRemoteAddr() != local {
				t.Errorf("remote_addr = %v (log), %q (frame); want %s", entry.Data["remote_addr"], ev.GetRemoteAddr(), local)
			}
			if tt.odetteID != "" && (entry.Data["odette_id"] != tt.odetteID || ev.GetOdetteId() != tt.odetteID) {
				t.Errorf("odette_id = %v (log), %q (frame); want %s", entry.Data["odette_id"], ev.GetOdetteId(), tt.odetteID)
			}
			if ev.GetFields()["reason"] != tt.reason {
				t.Errorf("frame reason = %q, want %s", ev.GetFields()["reason"], tt.reason)
			}
			if n := countEvents(env.hook, tt.event); n != 1 {
				t.Errorf("%d log lines with event=%s, want exactly 1", n, tt.event)
			}
		})
	}
}

func sendSSID(id, password string) func(*testing.T, *servertest.RawPartner) {
	return func(t *testing.T, rp *servertest.RawPartner) { write(t, rp, servertest.SSID(t, id, password, nil)) }
}

func write(t *testing.T, rp *servertest.RawPartner, b []byte) {
	t.Helper()
	if err := rp.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// stbHeaderError returns the codec's error for a stream header with version 2.
func stbHeaderError(t *testing.T) error {
	_, err := oftp2.ParseSTBHeader([4]byte{0x20, 0, 0, 65}, 0)
	if err == nil {
		t.Fatal("ParseSTBHeader accepted version 2")
	}
	return err
}

// isClosed reports whether a read error means the server closed the connection.
func isClosed(err error) bool {
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func countEvents(h *test.Hook, name string) int {
	n := 0
	for _, en := range h.AllEntries() {
		if en.Data["event"] == name {
			n++
		}
	}
	return n
}

func TestAdmissionLicenseMissing(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newAdmissionEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), true)
	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp, err := servertest.DialPartner(env.addr, &leaf.TLS, p.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatal(err)
	}
	write(t, rp, servertest.SSID(t, "O0013PARTNER", "", nil))
	esid, err := rp.ReadESID(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDResourcesNotAvailable {
		t.Errorf("ESID reason = %s, want 08", esid.Reason)
	}
	entry, ev := env.waitEvent(t, EventLicenseInvalid)
	if entry.Level != logrus.WarnLevel || ev.GetSeverity() != tunnelv1.Severity_SEVERITY_ERROR || ev.GetOdetteId() != "O0013PARTNER" {
		t.Errorf("license_invalid: log level %s, frame severity %s, odette id %q", entry.Level, ev.GetSeverity(), ev.GetOdetteId())
	}
	if st := env.s.LicenseStatus(); st.Valid || st.Reason == "" {
		t.Errorf("LicenseStatus() = %+v, want not valid with a reason", st)
	}
}

func TestAdmissionCRLURLReport(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	env := newAdmissionEnv(t, p, cfg, false)
	leaf := p.Partner(t, "O0013PARTNER", func(r *pki.Request) {
		r.CRLDistributionPoints = []string{"http://crl.example/partner.crl", "ldap://crl.example/cn=partner"}
	})
	connect := func() {
		t.Helper()
		rp, err := servertest.DialPartner(env.addr, &leaf.TLS, p.CompanyCA.Pool())
		if err != nil {
			t.Fatal(err)
		}
		defer rp.Close()
		if err := rp.ExpectSSRM(); err != nil {
			t.Fatal(err)
		}
		write(t, rp, servertest.SSID(t, "O0013PARTNER", "", nil))
		if _, err := rp.ReadESID(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	reports := func() [][]string {
		var out [][]string
		for _, q := range env.other {
			if r := q.frame.GetCrlUrlReport(); r != nil {
				out = append(out, r.GetUrls())
			}
		}
		env.other = nil
		for {
			select {
			case q := <-env.s.events:
				if r := q.frame.GetCrlUrlReport(); r != nil {
					out = append(out, r.GetUrls())
				}
			default:
				return out
			}
		}
	}
	connect()
	entry, _ := env.waitEvent(t, EventPartnerCRLMissing)
	if entry.Level != logrus.WarnLevel {
		t.Errorf("partner_crl_missing logged at %s, want warning", entry.Level)
	}
	env.waitEvent(t, EventSessionRefused) // the connection has ended
	connect()
	env.waitEvent(t, EventSessionRefused)
	got := reports()
	if len(got) != 1 || len(got[0]) != 2 || got[0][0] != "http://crl.example/partner.crl" {
		t.Fatalf("CrlUrlReports after two connections = %q, want the two URLs once", got)
	}
	// A new configuration version reports again; a CRL fetched from one URL covers it.
	crl, err := p.PartnerCA.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Crls = []*tunnelv1.Crl{{Id: "p", Url: "http://crl.example/partner.crl", Der: crl}}
	if res := env.s.applySnapshot(&tunnelv1.ConfigSnapshot{Version: 2, Config: cfg}, "test"); !res.applied {
		t.Fatal(res.errs)
	}
	env.hook.Reset()
	connect()
	env.waitEvent(t, EventSessionRefused)
	got = reports()
	if len(got) != 0 || countEvents(env.hook, EventPartnerCRLMissing) != 0 {
		t.Errorf("with the CRL configured: reports %q, %d crl_missing events; want none", got, countEvents(env.hook, EventPartnerCRLMissing))
	}
}

func TestAdmissionHandshakeFlood(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	const maxHandshakes = 20
	cfg.Limits = &tunnelv1.Limits{
		MaxHandshakes: maxHandshakes, HandshakeTimeout: durationpb.New(200 * time.Millisecond),
		PerIpRate: 1e6, PerIpBurst: 1e6,
	}
	env := newAdmissionEnv(t, p, cfg, false)
	env.s.log.SetLevel(logrus.InfoLevel)

	stop := make(chan struct{})
	var maxHeld int64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if h := env.s.handshakeGate.held(); h > maxHeld {
				maxHeld = h
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	// 1,000 connections that complete TCP and send nothing, 100 at a time.
	const total, wave = 1000, 100
	closedByServer := 0
	for w := 0; w < total/wave; w++ {
		conns := make([]net.Conn, 0, wave)
		for i := 0; i < wave; i++ {
			c, err := net.Dial("tcp", env.addr)
			if err != nil {
				t.Fatalf("dial #%d: %v", w*wave+i, err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); isClosed(err) {
				closedByServer++
			}
			c.Close()
		}
	}
	close(stop)
	sampler.Wait()
	if closedByServer != total {
		t.Errorf("%d of %d silent connections were closed by the server within 10s", closedByServer, total)
	}
	if maxHeld > maxHandshakes {
		t.Errorf("up to %d handshakes were held, limit %d", maxHeld, maxHandshakes)
	}
	deadline := time.Now().Add(10 * time.Second)
	for env.s.openSessions() != 0 || env.s.handshakeGate.held() != 0 || env.s.sessionGate.held() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the flood: %d sessions, %d handshakes, %d session slots held", env.s.openSessions(), env.s.handshakeGate.held(), env.s.sessionGate.held())
		}
		time.Sleep(10 * time.Millisecond)
	}
	timeouts, limited := 0, 0
	for _, en := range env.hook.AllEntries() {
		switch en.Data["event"] {
		case EventPartnerTLSRejected:
			if en.Data["reason"] == reasonHandshakeTime {
				timeouts++
			}
		case EventPartnerOverloaded:
			limited++
		}
	}
	if timeouts+limited != total || timeouts == 0 {
		t.Errorf("events: %d handshake timeouts + %d over the limit, want %d in all with some timeouts", timeouts, limited, total)
	}
	// The listener still serves a real partner afterwards.
	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp, err := servertest.DialPartner(env.addr, &leaf.TLS, p.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := rp.ExpectSSRM(); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}
