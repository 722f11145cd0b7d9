package e2e

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/license"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// Odette IDs of the partners whose certificates chain through an intermediate CA.
const (
	chainSentID    = "O0013000000CHAINSENT"  // presents leaf + intermediate; only the root is trusted
	chainTrustedID = "O0013000000CHAINTRUST" // presents the leaf alone; its intermediate is trusted
	chainAloneID   = "O0013000000CHAINALONE" // presents the leaf alone; its intermediate is not known
)

// opensslChain is a root CA, two intermediate CAs under it and one partner leaf under each
// intermediate, all made by the openssl command.
type opensslChain struct {
	rootPEM, interSentPEM, interTrustedPEM []byte
	// sent is chainSentID's leaf with its intermediate (what a partner configured with its
	// chain presents); trusted and alone are leaves without their intermediate.
	sent, trusted, alone tls.Certificate
}

// makeOpenSSLChain makes the chain with openssl: req -x509 for the root, req + x509 -req for
// the intermediates and the leaves (subject serialNumber = Odette ID, clientAuth). ok is false
// when openssl is not installed (and not required).
func makeOpenSSLChain(t *testing.T) (ch opensslChain, ok bool) {
	t.Helper()
	openssl := requireOpenSSL(t)
	if openssl == "" {
		return ch, false
	}
	dir := t.TempDir()
	ext := `[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth, serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`
	if err := os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte(ext), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	key := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"}
	run(append(append([]string{"req", "-x509"}, key...), "-keyout", "root.key", "-out", "root.pem", "-days", "2",
		"-subj", "/CN=e2e openssl root", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")...)
	issue := func(name, subj, caName, section string) {
		t.Helper()
		run(append(append([]string{"req", "-new"}, key...), "-keyout", name+".key", "-out", name+".csr", "-subj", subj)...)
		run("x509", "-req", "-in", name+".csr", "-CA", caName+".pem", "-CAkey", caName+".key", "-CAcreateserial",
			"-out", name+".pem", "-days", "1", "-extfile", "ext.cnf", "-extensions", section)
	}
	issue("inter-sent", "/CN=e2e openssl intermediate 1", "root", "ca")
	issue("inter-trusted", "/CN=e2e openssl intermediate 2", "root", "ca")
	issue("sent", "/CN=partner chain sent/serialNumber="+chainSentID, "inter-sent", "leaf")
	issue("trusted", "/CN=partner chain trusted/serialNumber="+chainTrustedID, "inter-trusted", "leaf")
	issue("alone", "/CN=partner chain alone/serialNumber="+chainAloneID, "inter-sent", "leaf")
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pair := func(certPEM []byte, keyFile string) tls.Certificate {
		t.Helper()
		c, err := tls.X509KeyPair(certPEM, read(keyFile))
		if err != nil {
			t.Fatalf("openssl-made key pair %s: %v", keyFile, err)
		}
		return c
	}
	ch.rootPEM, ch.interSentPEM, ch.interTrustedPEM = read("root.pem"), read("inter-sent.pem"), read("inter-trusted.pem")
	ch.sent = pair(append(read("sent.pem"), ch.interSentPEM...), "sent.key")
	ch.trusted = pair(read("trusted.pem"), "trusted.key")
	ch.alone = pair(read("alone.pem"), "alone.key")
	return ch, true
}

// makePKIChain is makeOpenSSLChain with internal/pki, for machines without openssl.
func makePKIChain(t *testing.T, fx *fixture) opensslChain {
	t.Helper()
	root, err := pki.NewCA("e2e chain root")
	if err != nil {
		t.Fatal(err)
	}
	interSent, err := root.IssueCA(pki.CAOptions{CommonName: "e2e intermediate 1"})
	if err != nil {
		t.Fatal(err)
	}
	interTrusted, err := root.IssueCA(pki.CAOptions{CommonName: "e2e intermediate 2"})
	if err != nil {
		t.Fatal(err)
	}
	leafOnly := func(l *pki.Leaf) tls.Certificate {
		c := l.TLS
		c.Certificate = c.Certificate[:1]
		return c
	}
	return opensslChain{
		rootPEM: root.CertPEM, interSentPEM: interSent.CertPEM, interTrustedPEM: interTrusted.CertPEM,
		sent:    fx.issue(t, interSent, chainSentID, nil).TLS, // leaf + intermediate
		trusted: leafOnly(fx.issue(t, interTrusted, chainTrustedID, nil)),
		alone:   leafOnly(fx.issue(t, interSent, chainAloneID, nil)),
	}
}

// TestIntermediateChains admits partners whose certificate chains through an intermediate CA
// (made by openssl; by internal/pki where openssl is missing and not required): the chain sent
// by the partner up to a trusted root, and a leaf alone whose intermediate is itself trusted,
// both deliver a file; a leaf alone whose intermediate nobody knows is refused with a TLS alert
// and partner_tls_rejected (untrusted_certificate), and nothing of it reaches the inside.
func TestIntermediateChains(t *testing.T) {
	fx := newFixture(t)
	ch, ok := makeOpenSSLChain(t)
	if !ok {
		t.Log("openssl is not installed: the chain is made with internal/pki")
		ch = makePKIChain(t, fx)
	}
	for name, data := range map[string][]byte{"chain-root.pem": ch.rootPEM, "chain-inter2.pem": ch.interTrustedPEM} {
		if err := pki.WriteFile(filepath.Join(fx.Dir, name), data, pki.CertFileMode); err != nil {
			t.Fatal(err)
		}
	}
	sys := startSystem(t, fx, systemOptions{
		config: func(f *configfile.File) {
			f.TrustedCAFiles = append(f.TrustedCAFiles, "chain-root.pem", "chain-inter2.pem")
			for _, id := range []string{chainSentID, chainTrustedID, chainAloneID} {
				f.Partners = append(f.Partners, configfile.Partner{OdetteID: id, Name: "chain " + id})
			}
		},
		responder: func(c *endpoint.Config) {
			c.Partners[chainSentID], c.Partners[chainTrustedID] = "", ""
		},
	})
	addr := sys.partnerAddr(t)

	for i, tc := range []struct {
		name string
		id   string
		cert tls.Certificate
	}{
		{"chain sent by the partner to a trusted root", chainSentID, ch.sent},
		{"leaf alone, its intermediate trusted", chainTrustedID, ch.trusted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := makeFile(t, t.TempDir(), "chain.dat", oftp2.FormatUnstructured, 64<<10, uint64(40+i))
			res, err := runPartner(t, fx, addr, &pki.Leaf{TLS: tc.cert}, partnerConfig(tc.id, ""), nil, f)
			if err != nil {
				t.Fatalf("partner session: %v", err)
			}
			checkDelivered(t, res, sys.responderResults(t, i+1)[i], []testFile{f})
		})
	}

	t.Run("leaf alone, its intermediate unknown", func(t *testing.T) {
		conns := sys.responder.Conns()
		local := refusedInTLS(t, fx, addr, &pki.Leaf{TLS: ch.alone})
		sys.securityEvent(t, "partner_tls_rejected", local, map[string]string{"reason": "untrusted_certificate"})
		if n := sys.responder.Conns(); n != conns {
			t.Errorf("the internal responder accepted %d connections after the refusal, want %d", n, conns)
		}
		for _, e := range sys.serverLog.entries("session_started", nil) {
			if e.Data["remote_addr"] == local {
				t.Errorf("the refused partner's session started: %v", e.Data)
			}
		}
	})
}

// TestCertificateNotYetValid: a partner certificate whose validity starts in an hour is
// refused with a TLS alert and partner_cert_expired (certificate_not_yet_valid); nothing
// reaches the inside.
func TestCertificateNotYetValid(t *testing.T) {
	fx := newFixture(t)
	sys := startSystem(t, fx, systemOptions{})
	early := fx.issue(t, fx.PartnerCA, partnerID, func(r *pki.Request) {
		r.NotBefore = time.Now().Add(time.Hour)
		r.NotAfter = time.Now().Add(48 * time.Hour)
	})
	local := refusedInTLS(t, fx, sys.partnerAddr(t), early)
	sys.securityEvent(t, "partner_cert_expired", local, map[string]string{"reason": "certificate_not_yet_valid"})
	checkNothingInside(t, sys)
}

// dialRefused connects to addr and tries a TLS handshake as a valid partner; it returns the
// local address and the handshake's error. A connection refused before TLS is closed by the
// server without a byte: the handshake ends with EOF or a reset, never an alert.
func dialRefused(t *testing.T, fx *fixture, addr string) (local string, err error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("TCP connect: %v", err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(raw, fx.partnerTLS(&fx.partner(t, partnerID).TLS))
	err = tc.Handshake()
	if err == nil {
		// TLS 1.3: the client's handshake ends before the server has read its Finished.
		_, err = tc.Read(make([]byte, 1))
	}
	return raw.LocalAddr().String(), err
}

// closedBeforeTLS reports whether err is what a partner sees when the server closes its
// connection without a TLS answer.
func closedBeforeTLS(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// holdSession opens a partner session that is admitted (its SSID answered by the internal
// server) and then waits, holding one session slot until the test ends.
func holdSession(t *testing.T, fx *fixture, addr string) {
	t.Helper()
	rp, err := servertest.DialPartner(addr, &fx.partner(t, partnerID).TLS, fx.CompanyCA.Pool())
	if err != nil {
		t.Fatalf("the first partner: %v", err)
	}
	t.Cleanup(func() { rp.Close() })
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatalf("the first partner: %v", err)
	}
	// A session slot is taken when the partner is verified, not while it is in admission.
	if err := rp.Write(servertest.SSID(t, partnerID, partnerPassword, nil)); err != nil {
		t.Fatalf("the first partner: %v", err)
	}
	if b, err := rp.Read(waitTimeout); err != nil || len(b) == 0 || b[0] != byte(oftp2.CodeSSID) {
		t.Fatalf("the first partner: %q, %v; want the internal server's SSID", b, err)
	}
}

// TestConnectionLimits refuses partners before TLS at the configured session limit, at the
// license's session cap (below the configured limit) and by the per-IP rate limit: the partner's
// connection is closed without a TLS answer, the server logs the event with the partner's
// address (and the client receives it), and nothing reaches the inside.
func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name    string
		limits  func(*configfile.Limits)
		license func(*license.License)
		event   string
		reason  string
	}{
		{name: "session limit", limits: func(l *configfile.Limits) { l.MaxSessions = 1 },
			event: "partner_connection_limit", reason: "max_sessions"},
		{name: "license session cap", license: func(l *license.License) { l.MaxSessions = 1 },
			event: "partner_connection_limit", reason: "max_sessions"},
		{name: "per-IP rate", limits: func(l *configfile.Limits) { l.PerIPRate, l.PerIPBurst = 0.001, 1 },
			event: "partner_rate_limited", reason: "per_ip_rate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			sys := startSystem(t, fx, systemOptions{license: tc.license, config: func(f *configfile.File) {
				if tc.limits != nil {
					tc.limits(&f.Limits)
				}
			}})
			addr := sys.partnerAddr(t)
			holdSession(t, fx, addr) // the one session the limit allows (the rate's burst of 1)
			local, err := dialRefused(t, fx, addr)
			if !closedBeforeTLS(err) {
				t.Errorf("the partner over the limit: handshake = %v, want the connection closed before TLS", err)
			}
			sys.securityEvent(t, tc.event, local, map[string]string{"reason": tc.reason})
			if n := sys.responder.Conns(); n != 1 {
				t.Errorf("the internal responder accepted %d connections, want only the held session's", n)
			}
		})
	}
}

// TestInsideFramingViolation: the internal OFTP2 server breaks the stream framing (a stream
// transmission header of version 2) right after its SSID. The client ends the session with an
// internal_protocol_violation event, the partner receives ESID 02 from the server, and nothing of the
// broken stream reaches the partner.
func TestInsideFramingViolation(t *testing.T) {
	fx := newFixture(t)
	internal, _ := startBrokenInternal(t, func(conn net.Conn, _ *oftp2.Writer) {
		conn.Write([]byte{0x20, 0, 0, 6, 'C', ' ', ' '}) // version 2: not OFTP2 stream framing
	})
	sys := startSystem(t, fx, systemOptions{internalVia: func(string) string { return internal }})

	f := makeFile(t, t.TempDir(), "to-a-broken-server.dat", oftp2.FormatUnstructured, 64<<10, 6)
	res, err := runPartner(t, fx, sys.partnerAddr(t), fx.partner(t, partnerID), partnerConfig(partnerID, partnerPassword), nil, f)
	var se *endpoint.SessionError
	if !errors.As(err, &se) || !se.Remote || se.Reason != oftp2.ESIDProtocolViolation {
		t.Errorf("partner session ended with %v, want ESID 02 from the server", err)
	}
	if res != nil && len(res.Sent) > 0 && res.Sent[0].Status == endpoint.StatusDelivered {
		t.Errorf("the partner's file is %q, want not delivered", res.Sent[0].Status)
	}
	e := sys.clientLog.wait(t, "the client", "internal_protocol_violation", nil)
	if msg := e.Message; !strings.Contains(msg, "framing") {
		t.Errorf("the client's internal_protocol_violation line %q, want one about the stream framing", msg)
	}
	sys.serverLog.wait(t, "the server", "session_ended", map[string]string{"odette_id": partnerID, "esid_reason": "02"})
}
