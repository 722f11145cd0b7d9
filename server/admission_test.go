package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/durationpb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
	"smartproxy/tunnel"
)

// waitSecurityEvent waits for event name from the partner at remote: its log line and its
// Event frame on the tunnel.
func (e *env) waitSecurityEvent(t *testing.T, name, remote string) (*logrus.Entry, *tunnelv1.Event) {
	t.Helper()
	entry := e.logEntry(t, name, func(en *logrus.Entry) bool { return en.Data["remote_addr"] == remote })
	ev := e.client.WaitEvent(t, name, func(ev *tunnelv1.Event) bool { return ev.GetRemoteAddr() == remote })
	return entry, ev
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
		servertest.EnabledPartner("O0013REFUSED"),
	}
	cfg := p.SecurityConfig(t, partners...)
	cfg.Crls = []*tunnelv1.Crl{{Id: "partner-ca", Der: crl}}
	cfg.Limits = &tunnelv1.Limits{SsidTimeout: durationpb.New(300 * time.Millisecond), PerIpRate: 1000, PerIpBurst: 1000}
	env := newEnv(t, p, cfg, envOptions{refuse: func(so *tunnelv1.SessionOpen) *tunnel.CloseError {
		if so.GetPartnerOdetteId() == "O0013REFUSED" {
			return &tunnel.CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, ESID: 8, Text: "internal server down"}
		}
		return nil
	}})
	addr := env.s.PartnerAddr()

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
		opened    bool // the session reaches the client (which refuses it)
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
		{name: "client refuses the session", cert: leafFor("O0013REFUSED"), send: sendSSID("O0013REFUSED", ""), event: EventSessionRefused, reason: "ABORT_REASON_CONNECT_FAILED", wantESID: oftp2.ESIDResourcesNotAvailable, odetteID: "O0013REFUSED", opened: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opensBefore := len(env.client.SessionOpens())
			rp, err := servertest.DialPartner(addr, tt.cert, p.CompanyCA.Pool())
			if err != nil {
				t.Fatalf("DialPartner: %v", err)
			}
			defer rp.Close()
			local := rp.Conn.LocalAddr().String()
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
				if esid.Reason == oftp2.ESIDUserCodeNotKnown && esid.Text != "user code not known" {
					t.Errorf("ESID 03 text = %q; every identity refusal must read the same", esid.Text)
				}
				if _, err := rp.Read(5 * time.Second); !isClosed(err) {
					t.Errorf("after ESID: read = %v, want the connection closed", err)
				}
			}
			entry, ev := env.waitSecurityEvent(t, tt.event, local)
			if entry.Level != logrus.WarnLevel {
				t.Errorf("log level = %s, want warning", entry.Level)
			}
			if entry.Data["reason"] != tt.reason || ev.GetFields()["reason"] != tt.reason {
				t.Errorf("reason = %v (log), %q (frame); want %s", entry.Data["reason"], ev.GetFields()["reason"], tt.reason)
			}
			if tt.odetteID != "" && (entry.Data["odette_id"] != tt.odetteID || ev.GetOdetteId() != tt.odetteID) {
				t.Errorf("odette_id = %v (log), %q (frame); want %s", entry.Data["odette_id"], ev.GetOdetteId(), tt.odetteID)
			}
			n := 0
			for _, en := range env.hook.AllEntries() {
				if en.Data["event"] == tt.event && en.Data["remote_addr"] == local {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d log lines with event=%s for %s, want exactly 1", n, tt.event, local)
			}
			opens := env.client.SessionOpens()[opensBefore:]
			if tt.opened {
				if len(opens) != 1 || opens[0].GetPartnerOdetteId() != tt.odetteID {
					t.Errorf("SessionOpens = %v, want one for %s", opens, tt.odetteID)
				}
			} else if len(opens) != 0 {
				t.Errorf("a refused partner reached the inside: SessionOpens %v", opens)
			}
			if c := env.responder.Conns(); c != 0 {
				t.Errorf("the internal responder saw %d connections, want 0", c)
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

// partnerSSID connects with cert, sends a valid SSID for id and returns the ESID the server
// answers with, and the partner's local address.
func partnerSSID(t *testing.T, addr string, cert *tls.Certificate, roots *x509.CertPool, id string) (*oftp2.ESID, string) {
	t.Helper()
	rp, err := servertest.DialPartner(addr, cert, roots)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatal(err)
	}
	write(t, rp, servertest.SSID(t, id, "", nil))
	esid, err := rp.ReadESID(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return esid, rp.Conn.LocalAddr().String()
}

func TestAdmissionLicenseMissing(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{noLicense: true})
	if w := env.client.WaitWelcome(t); w.GetLicense().GetValid() || w.GetLicense().GetReason() == "" || w.GetLicense().GetProxyId() != testProxyID {
		t.Errorf("Welcome license = %v, want not valid with a reason and the proxy id", w.GetLicense())
	}
	leaf := p.Partner(t, "O0013PARTNER", nil)
	esid, local := partnerSSID(t, env.s.PartnerAddr(), &leaf.TLS, p.CompanyCA.Pool(), "O0013PARTNER")
	if esid.Reason != oftp2.ESIDResourcesNotAvailable {
		t.Errorf("ESID reason = %s, want 08", esid.Reason)
	}
	entry, ev := env.waitSecurityEvent(t, EventLicenseInvalid, local)
	if entry.Level != logrus.WarnLevel || ev.GetSeverity() != tunnelv1.Severity_SEVERITY_ERROR || ev.GetOdetteId() != "O0013PARTNER" {
		t.Errorf("license_invalid: log level %s, frame severity %s, odette id %q", entry.Level, ev.GetSeverity(), ev.GetOdetteId())
	}
	if n := len(env.client.SessionOpens()); n != 0 || env.responder.Conns() != 0 {
		t.Errorf("without a license %d sessions reached the client and %d the responder", n, env.responder.Conns())
	}
}

func TestAdmissionCRLURLReport(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	env := newEnv(t, p, cfg, envOptions{refuse: func(*tunnelv1.SessionOpen) *tunnel.CloseError {
		return &tunnel.CloseError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, ESID: 8}
	}})
	addr := env.s.PartnerAddr()
	leaf := p.Partner(t, "O0013PARTNER", func(r *pki.Request) {
		r.CRLDistributionPoints = []string{"http://crl.example/partner.crl", "ldap://crl.example/cn=partner"}
	})
	_, local := partnerSSID(t, addr, &leaf.TLS, p.CompanyCA.Pool(), "O0013PARTNER")
	entry, ev := env.waitSecurityEvent(t, EventPartnerCRLMissing, local)
	if entry.Level != logrus.WarnLevel || ev.GetSeverity() != tunnelv1.Severity_SEVERITY_WARNING {
		t.Errorf("partner_crl_missing: log level %s, frame severity %s", entry.Level, ev.GetSeverity())
	}
	env.waitSecurityEvent(t, EventSessionRefused, local)
	_, local = partnerSSID(t, addr, &leaf.TLS, p.CompanyCA.Pool(), "O0013PARTNER")
	env.waitSecurityEvent(t, EventSessionRefused, local)
	got := env.client.CRLReports()
	if len(got) != 1 || len(got[0]) != 2 || got[0][0] != "http://crl.example/partner.crl" || got[0][1] != "ldap://crl.example/cn=partner" {
		t.Fatalf("CrlUrlReports after two connections = %q, want the two URLs once", got)
	}

	// With a CRL fetched from the first URL, only the second is missing, and a new version
	// reports it again.
	crl, err := p.PartnerCA.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Crls = []*tunnelv1.Crl{{Id: "p", Url: "http://crl.example/partner.crl", Der: crl}}
	env.client.PushConfig(2, cfg)
	if a := env.client.WaitApplied(t, 2); !a.GetOk() {
		t.Fatal(a.GetErrors())
	}
	crlMissing := countEvents(env.hook, EventPartnerCRLMissing)
	_, local = partnerSSID(t, addr, &leaf.TLS, p.CompanyCA.Pool(), "O0013PARTNER")
	env.waitSecurityEvent(t, EventSessionRefused, local)
	if n := countEvents(env.hook, EventPartnerCRLMissing); n != crlMissing {
		t.Errorf("a CRL covers the certificate, yet %d more partner_crl_missing events", n-crlMissing)
	}
	if got := env.client.CRLReports(); len(got) != 1 {
		t.Errorf("CrlUrlReports = %q; a covered certificate must not be reported", got)
	}
}

func TestAdmissionHandshakeFlood(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	const maxHandshakes = 20
	cfg.Limits = &tunnelv1.Limits{
		MaxHandshakes: maxHandshakes, HandshakeTimeout: durationpb.New(200 * time.Millisecond),
		PerIpRate: 1e6, PerIpBurst: 1e6, MaxHandshakesPerSource: 1e6, MaxHandshakesPerPrefix: 1e6,
	}
	env := newEnv(t, p, cfg, envOptions{logLevel: logrus.InfoLevel})
	addr := env.s.PartnerAddr()

	stop := make(chan struct{})
	var maxHeld int64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if h := int64(env.s.preadmit.size()); h > maxHeld {
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
			c, err := net.Dial("tcp", addr)
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
	for env.s.openSessions() != 0 || env.s.preadmit.size() != 0 || env.s.sessionGate.held() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the flood: %d sessions, %d handshakes, %d session slots held", env.s.openSessions(), env.s.preadmit.size(), env.s.sessionGate.held())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A full pool evicts its longest-silent connection instead of refusing the newcomer: every
	// silent connection either timed out or was evicted, and none was refused at accept.
	timeouts, evicted, refused := 0, 0, 0
	for _, en := range env.hook.AllEntries() {
		switch en.Data["event"] {
		case EventPartnerTLSRejected:
			if en.Data["reason"] == reasonHandshakeTime {
				timeouts++
			}
		case EventPartnerEvicted:
			evicted++
		case EventPartnerOverloaded, EventPartnerSourceLimit:
			refused++
		}
	}
	if timeouts+evicted != total || timeouts == 0 || evicted == 0 || refused != 0 {
		t.Errorf("events: %d handshake timeouts + %d evicted + %d refused, want %d timeouts and evictions, both > 0", timeouts, evicted, refused, total)
	}
	if n := len(env.client.SessionOpens()); n != 0 || env.responder.Conns() != 0 {
		t.Errorf("the flood reached the inside: %d SessionOpens, %d responder connections", n, env.responder.Conns())
	}
	// The listener still serves a real partner afterwards, with a handshake deadline that a
	// loaded machine meets (the 200 ms of the flood is for the flood).
	cfg.Limits.HandshakeTimeout = durationpb.New(10 * time.Second)
	env.client.PushConfig(2, cfg)
	if a := env.client.WaitApplied(t, 2); !a.GetOk() {
		t.Fatal(a.GetErrors())
	}
	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp, err := servertest.DialPartner(addr, &leaf.TLS, p.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := rp.ExpectSSRM(); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}

func TestAdmissionOldTLSVersion(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	leaf := p.Partner(t, "O0013PARTNER", nil)
	raw, err := net.Dial("tcp", env.s.PartnerAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{
		RootCAs: p.CompanyCA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{leaf.TLS},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, // RFC 8996 deprecated versions only
	})
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err == nil {
		t.Fatalf("TLS 1.1 handshake succeeded (version %x)", conn.ConnectionState().Version)
	}
	entry, _ := env.waitSecurityEvent(t, EventPartnerTLSRejected, raw.LocalAddr().String())
	if entry.Data["reason"] != reasonHandshake {
		t.Errorf("reason = %v, want %s", entry.Data["reason"], reasonHandshake)
	}
	if n := len(env.client.SessionOpens()); n != 0 {
		t.Errorf("%d SessionOpens after a refused handshake", n)
	}
}
