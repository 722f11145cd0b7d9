package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
)

// Deadlines of the rejection matrix's configuration: short, so that the deadline cases end
// quickly, and long enough for a TLS handshake under the race detector on a busy machine.
const (
	matrixHandshakeTimeout = 1500 * time.Millisecond
	matrixSSIDTimeout      = 1 * time.Second
)

// TestRejectionMatrix runs every admission refusal through the whole system — the real client
// daemon pushed the configuration the server enforces — and asserts for each case the outcome
// the partner sees (TLS alert or ESID reason), the security event in the server's log (WARN,
// with the partner's address and reason) and the same event arriving at the client over the
// tunnel, and that the internal responder accepted no connection. A healthy session at the
// end shows that the responder does count the connections it accepts.
func TestRejectionMatrix(t *testing.T) {
	fx := newFixture(t)
	sys := startSystem(t, fx, systemOptions{config: func(f *configfile.File) {
		f.Limits.HandshakeTimeout = configfile.Duration(matrixHandshakeTimeout)
		f.Limits.SSIDTimeout = configfile.Duration(matrixSSIDTimeout)
	}})
	addr := sys.partnerAddr(t)

	good := fx.partner(t, partnerID)
	expired := fx.issue(t, fx.PartnerCA, partnerID, func(r *pki.Request) {
		r.NotBefore = time.Now().Add(-48 * time.Hour)
		r.NotAfter = time.Now().Add(-24 * time.Hour)
	})
	untrusted := fx.issue(t, fx.ForeignCA, partnerID, nil)
	ssid := func(id, password string, mod func(*oftp2.SSID)) []byte {
		return servertest.SSID(t, id, password, mod)
	}

	type tlsCase struct {
		name   string
		cert   *tls.Certificate
		alert  string // the TLS alert the partner receives
		event  string
		reason string
		skip   string // skip reason, if any
	}
	tlsCases := []tlsCase{
		{name: "no client certificate", cert: nil, alert: "certificate required", event: "partner_tls_rejected", reason: "no_client_certificate"},
		{name: "untrusted CA", cert: &untrusted.TLS, alert: "bad certificate", event: "partner_tls_rejected", reason: "untrusted_certificate"},
		{name: "expired certificate", cert: &expired.TLS, alert: "bad certificate", event: "partner_cert_expired", reason: "certificate_expired"},
		{name: "revoked by a CRL of crypto/x509", cert: &fx.RevokedGo.TLS, alert: "bad certificate", event: "partner_revoked", reason: "certificate_revoked"},
		{name: "revoked by a CRL of openssl ca", cert: &fx.RevokedSSL.TLS, alert: "bad certificate", event: "partner_revoked", reason: "certificate_revoked"},
	}
	if !fx.OpenSSL {
		tlsCases[len(tlsCases)-1].skip = "openssl is not installed (SMARTPROXY_REQUIRE_OPENSSL=1 makes this a failure)"
	}
	for _, tc := range tlsCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			rp, err := servertest.DialPartner(addr, tc.cert, fx.CompanyCA.Pool())
			if err != nil {
				t.Fatalf("TLS handshake of the partner: %v", err)
			}
			defer rp.Close()
			local := rp.Conn.LocalAddr().String()
			// TLS 1.3: the server checks the client certificate after the partner's Finished,
			// so the refusal arrives as an alert on the partner's first read.
			_, err = rp.Read(10 * time.Second)
			if err == nil || !strings.Contains(err.Error(), "remote error: tls: "+tc.alert) {
				t.Errorf("partner's first read = %v, want the TLS alert %q", err, tc.alert)
			}
			if v := rp.Conn.ConnectionState().Version; v != tls.VersionTLS13 {
				t.Errorf("TLS version %s, want TLS 1.3", tls.VersionName(v))
			}
			sys.securityEvent(t, tc.event, local, map[string]string{"reason": tc.reason})
			checkNothingInside(t, sys)
		})
	}

	type ssidCase struct {
		name   string
		cert   *pki.Leaf
		send   func(t *testing.T, rp *servertest.RawPartner) // after SSRM
		esid   oftp2.ESIDReason
		event  string
		reason string
		id     string // odette_id of the event, if any
	}
	write := func(b []byte) func(*testing.T, *servertest.RawPartner) {
		return func(t *testing.T, rp *servertest.RawPartner) {
			if err := rp.Write(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	badHeader := []byte{0x20, 0, 0, 65} // version 2 in the stream transmission header
	ssidCases := []ssidCase{
		{name: "unknown Odette ID", cert: fx.partner(t, unknownID), send: write(ssid(unknownID, "", nil)),
			esid: oftp2.ESIDUserCodeNotKnown, event: "partner_unknown", reason: "partner_unknown", id: unknownID},
		{name: "Odette ID not matching the certificate", cert: fx.partner(t, healthyID), send: write(ssid(partnerID, partnerPassword, nil)),
			esid: oftp2.ESIDUserCodeNotKnown, event: "partner_cert_mismatch", reason: "partner_cert_mismatch", id: partnerID},
		{name: "disabled partner", cert: fx.partner(t, disabledID), send: write(ssid(disabledID, "", nil)),
			esid: oftp2.ESIDUserCodeNotKnown, event: "partner_disabled", reason: "partner_disabled", id: disabledID},
		{name: "wrong password", cert: good, send: write(ssid(partnerID, "WRONG", nil)),
			esid: oftp2.ESIDInvalidPassword, event: "partner_password_invalid", reason: "password_invalid", id: partnerID},
		{name: "SSID level 4", cert: good, send: write(ssid(partnerID, partnerPassword, func(s *oftp2.SSID) { s.Level = 4 })),
			esid: oftp2.ESIDModeIncompatible, event: "partner_level_unsupported", reason: "level_unsupported", id: partnerID},
		{name: "SSID syntax: too short", cert: good, send: write(ssid(partnerID, partnerPassword, nil)[:40]),
			esid: oftp2.ESIDBufferSizeError, event: "partner_ssid_invalid", reason: "ssid_syntax"},
		{name: "SSID syntax: buffer size below 128", cert: good, send: write(func() []byte {
			b := ssid(partnerID, partnerPassword, nil)
			copy(b[35:40], "00100")
			return b
		}()), esid: oftp2.ESIDInvalidData, event: "partner_ssid_invalid", reason: "ssid_syntax"},
		{name: "SSID syntax: credit not numeric", cert: good, send: write(func() []byte {
			b := ssid(partnerID, partnerPassword, nil)
			copy(b[44:47], "X9Z")
			return b
		}()), esid: oftp2.ESIDInvalidData, event: "partner_ssid_invalid", reason: "ssid_syntax"},
		{name: "SSID syntax: missing carriage return", cert: good, send: write(func() []byte {
			b := ssid(partnerID, partnerPassword, nil)
			b[60] = ' '
			return b
		}()), esid: oftp2.ESIDInvalidData, event: "partner_ssid_invalid", reason: "ssid_syntax"},
		{name: "SSID syntax: another command first", cert: good, send: write([]byte{byte(oftp2.CodeCD)}),
			esid: oftp2.ESIDProtocolViolation, event: "partner_ssid_invalid", reason: "not_ssid"},
		{name: "SSID syntax: unknown command code", cert: good, send: write([]byte("Zhello")),
			esid: oftp2.ESIDCommandNotRecognised, event: "partner_ssid_invalid", reason: "ssid_syntax"},
		{name: "SSID syntax: broken stream header", cert: good, send: func(t *testing.T, rp *servertest.RawPartner) {
			if err := rp.WriteRaw(badHeader); err != nil {
				t.Fatal(err)
			}
		}, esid: headerReason(t, badHeader), event: "partner_ssid_invalid", reason: "bad_stream_header"},
		{name: "no SSID within the deadline", cert: good, send: func(*testing.T, *servertest.RawPartner) {},
			esid: oftp2.ESIDTimeout, event: "partner_ssid_timeout", reason: "ssid_timeout"},
	}
	for _, tc := range ssidCases {
		t.Run(tc.name, func(t *testing.T) {
			rp, err := servertest.DialPartner(addr, &tc.cert.TLS, fx.CompanyCA.Pool())
			if err != nil {
				t.Fatalf("TLS handshake of the partner: %v", err)
			}
			defer rp.Close()
			local := rp.Conn.LocalAddr().String()
			if err := rp.ExpectSSRM(); err != nil {
				t.Fatal(err)
			}
			tc.send(t, rp)
			esid, err := rp.ReadESID(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if esid.Reason != tc.esid {
				t.Errorf("partner's ESID reason = %s, want %s", esid.Reason, tc.esid)
			}
			// After the ESID the server closes the connection.
			if _, err := rp.Read(10 * time.Second); !errors.Is(err, io.EOF) {
				t.Errorf("read after the ESID = %v, want EOF", err)
			}
			want := map[string]string{"reason": tc.reason, "esid_reason": fmt.Sprintf("%02d", uint8(tc.esid))}
			if tc.id != "" {
				want["odette_id"] = tc.id
			}
			sys.securityEvent(t, tc.event, local, want)
			checkNothingInside(t, sys)
		})
	}

	t.Run("1000 silent handshakes", func(t *testing.T) { silentHandshakes(t, sys, addr) })

	t.Run("a valid partner is still admitted", func(t *testing.T) {
		checkNothingInside(t, sys)
		f := makeFile(t, t.TempDir(), "after.edi", oftp2.FormatUnstructured, 64<<10, 1)
		res, err := sendAs(t, fx, addr, good, partnerID, partnerPassword, nil, f)
		if err != nil {
			t.Fatal(err)
		}
		checkDelivered(t, res, sys.responderResults(t, 1)[0], []testFile{f})
		if got := sys.responder.Conns(); got != 1 {
			t.Errorf("responder connections = %d, want 1", got)
		}
	})
}

// headerReason returns the ESID reason the oftp2 codec gives a stream transmission header.
func headerReason(t testing.TB, hdr []byte) oftp2.ESIDReason {
	t.Helper()
	_, err := oftp2.NewReader(bytes.NewReader(hdr), 0).ReadBuffer()
	if err == nil {
		t.Fatalf("the stream header % x is valid", hdr)
	}
	return oftp2.ReasonOf(err)
}

// checkNothingInside fails t when anything reached the inside: a connection to the internal
// responder, or a session the client opened or refused.
func checkNothingInside(t testing.TB, sys *system) {
	t.Helper()
	if n := sys.responder.Conns(); n != 0 {
		t.Errorf("the internal responder accepted %d connections, want 0", n)
	}
	for _, name := range []string{"session_started", "session_refused_by_client", "internal_connect_failed"} {
		if es := sys.clientLog.entries(name, nil); len(es) != 0 {
			t.Errorf("the client logged %d %s events, want none: a session reached the inside", len(es), name)
		}
	}
	if es := sys.serverLog.entries("session_started", nil); len(es) != 0 {
		t.Errorf("the server logged %d session_started events, want none", len(es))
	}
}

// silentHandshakes opens 1,000 partner connections that send nothing useful, 200 at a time:
// half never send a TLS ClientHello, half send one and then nothing more. The server must
// close each after the handshake deadline with a partner_tls_rejected event (reason
// tls_handshake_timeout) that also reaches the client, and nothing may reach the inside. Each
// connection of a wave comes from its own loopback address, 25 to a /24, so that the
// per-source and per-prefix caps of the pre-admission pool (attack_test.go tests those) leave
// every one of them to its deadline.
func silentHandshakes(t *testing.T, sys *system, addr string) {
	const total, wave = 1000, 200
	locals := make(map[string]bool, total)
	var mu sync.Mutex
	closed := 0
	start := time.Now()
	for w := 0; w < total/wave; w++ {
		var wg sync.WaitGroup
		for i := 0; i < wave; i++ {
			from := &net.TCPAddr{IP: net.IPv4(127, byte(100+w), byte(i/25), byte(i%25+1))}
			raw, err := (&net.Dialer{LocalAddr: from}).Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial #%d: %v", w*wave+i, err)
			}
			locals[raw.LocalAddr().String()] = true
			hello := i%2 == 1
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer raw.Close()
				if byServer := silentConn(raw, hello); byServer {
					mu.Lock()
					closed++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	t.Logf("%d silent connections in %v", total, time.Since(start).Round(time.Millisecond))
	if closed != total {
		t.Errorf("the server closed %d of %d silent connections within 10s each", closed, total)
	}
	count := func(c *logCapture, extra map[string]string) int {
		want := map[string]string{"reason": "tls_handshake_timeout"}
		for k, v := range extra {
			want[k] = v
		}
		n := 0
		for _, e := range c.entries("partner_tls_rejected", want) {
			if locals[fmt.Sprint(e.Data["remote_addr"])] {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		s, c := count(sys.serverLog, nil), count(sys.clientLog, map[string]string{"source": "server"})
		if s == total && c == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tls_handshake_timeout events of the silent connections: %d in the server's log, %d at the client, want %d each; server events: %s",
				s, c, total, sys.serverLog.summary())
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkNothingInside(t, sys)
}

// silentConn keeps raw silent (hello: after a TLS ClientHello) and reports whether the server
// closed it within 10 seconds.
func silentConn(raw net.Conn, hello bool) bool {
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	var wg sync.WaitGroup
	stall := make(chan struct{})
	if hello {
		// The TLS client writes its ClientHello, then waits for a read that never returns
		// anything: the server's flight is read below, the partner never answers it.
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := tls.Client(stalledConn{Conn: raw, stall: stall}, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
			c.Handshake()
		}()
	}
	// Read until the server closes (EOF, or a reset) or the deadline passes.
	_, err := io.Copy(io.Discard, raw)
	closedByServer := !isTimeout(err)
	close(stall)
	raw.Close()
	wg.Wait()
	return closedByServer
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// stalledConn passes writes through and blocks every read until stall is closed.
type stalledConn struct {
	net.Conn
	stall chan struct{}
}

func (c stalledConn) Read([]byte) (int, error) {
	<-c.stall
	return 0, io.EOF
}
