package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/protobuf/types/known/durationpb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
	"smartproxy/tunnel/transport"
)

const dialPartnerID = "O0013PARTNER"

// dialServer is a Server that is not running, for calling dialPartner directly: its events
// stay in s.events for the test to read, its log lines in hook.
func dialServer(t *testing.T, p *servertest.PKI) (*Server, *test.Hook) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	hook := test.NewLocal(log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s, err := New(Config{
		TunnelListener:    ln,
		TunnelCredentials: &transport.StaticCredentials{Cert: p.TunnelServer.TLS, Pool: p.TunnelCA.Pool()},
		ProxyID:           testProxyID,
		Logger:            log,
		EventQueue:        64,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, hook
}

// dialPolicy compiles a configuration with one enabled partner and one route "out-1" to addr;
// mod may change the configuration first.
func dialPolicy(t *testing.T, p *servertest.PKI, addr string, mod func(*tunnelv1.SecurityConfig)) (*Policy, *Route) {
	t.Helper()
	cfg := p.SecurityConfig(t, servertest.EnabledPartner(dialPartnerID))
	// An empty CRL of the partner CA, so that revocation is checked and a clean dial raises no
	// outgoing_crl_missing.
	crl, err := p.PartnerCA.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Crls = []*tunnelv1.Crl{{Id: "partner-ca", Der: crl}}
	cfg.OutgoingRoutes = []*tunnelv1.Route{{Name: "out-1", ListenAddress: "127.0.0.1:65433", PartnerAddress: addr, PartnerOdetteId: dialPartnerID}}
	// Generous bounds: a dial or handshake that must succeed may be slow on a loaded machine.
	// The timeout cases shorten them (shortTimeouts).
	cfg.Limits = &tunnelv1.Limits{ConnectTimeout: durationpb.New(10 * time.Second), HandshakeTimeout: durationpb.New(10 * time.Second)}
	if mod != nil {
		mod(cfg)
	}
	pol, err := CompilePolicy(1, cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pol, pol.Routes["out-1"]
}

// shortTimeouts is the dialPolicy modification of the cases whose partner never answers.
func shortTimeouts(c *tunnelv1.SecurityConfig) {
	c.Limits.ConnectTimeout = durationpb.New(500 * time.Millisecond)
	c.Limits.HandshakeTimeout = durationpb.New(500 * time.Millisecond)
}

// partnerConn is what a test partner saw of one connection.
type partnerConn struct {
	remote     string            // the dialer's address as the partner sees it
	clientCert *x509.Certificate // the client certificate presented; nil if none
	got        []byte            // application bytes received before the connection ended
	err        error             // the handshake or read error that ended it
}

// tlsPartner is an OFTP2 partner's TLS server on 127.0.0.1: it requires a client certificate
// from the company CA, writes "hello" after the handshake and records what it receives.
type tlsPartner struct {
	addr  string
	conns chan partnerConn
}

func startTLSPartner(t *testing.T, p *servertest.PKI, cert tls.Certificate) *tlsPartner {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CompanyCA.Pool(),
	}
	tp := &tlsPartner{conns: make(chan partnerConn, 16)}
	tp.addr = rawPartner(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		pc := partnerConn{remote: c.RemoteAddr().String()}
		if pc.err = tc.Handshake(); pc.err == nil {
			if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
				pc.clientCert = peers[0]
			}
			if _, pc.err = tc.Write([]byte("hello")); pc.err == nil {
				buf := make([]byte, 64)
				n, err := tc.Read(buf)
				pc.got, pc.err = buf[:n], err
			}
		}
		tp.conns <- pc
	})
	return tp
}

// next returns the next connection's record.
func (tp *tlsPartner) next(t *testing.T) partnerConn {
	t.Helper()
	select {
	case pc := <-tp.conns:
		return pc
	case <-time.After(20 * time.Second):
		t.Fatal("the partner saw no connection")
		return partnerConn{}
	}
}

// partnerLeaf issues a partner server certificate for 127.0.0.1 with the Odette ID id.
func partnerLeaf(t *testing.T, ca *pki.CA, id string, mod func(*pki.Request)) tls.Certificate {
	t.Helper()
	return servertest.IssuePartner(t, ca, id, func(r *pki.Request) {
		r.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		r.Usage = pki.UsageServer
		if mod != nil {
			mod(r)
		}
	}).TLS
}

// nextEvent returns the next queued Event frame of s.
func nextEvent(t *testing.T, s *Server) *tunnelv1.Event {
	t.Helper()
	select {
	case q := <-s.events:
		return q.frame.GetEvent()
	default:
		t.Fatal("no event queued")
		return nil
	}
}

func TestDialPartner(t *testing.T) {
	p := servertest.NewPKI(t)
	s, hook := dialServer(t, p)
	tp := startTLSPartner(t, p, partnerLeaf(t, p.PartnerCA, dialPartnerID, nil))
	pol, route := dialPolicy(t, p, tp.addr, nil)

	conn, ref := s.dialPartner(context.Background(), pol, route, s.log)
	if ref != nil {
		t.Fatalf("dialPartner() refused: %v", ref)
	}
	defer conn.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read from partner = %q, %v; want hello", buf, err)
	}
	if _, err := conn.Write([]byte("SSID")); err != nil {
		t.Fatal(err)
	}
	pc := tp.next(t)
	if string(pc.got) != "SSID" {
		t.Errorf("partner received %q (err %v), want SSID", pc.got, pc.err)
	}
	if pc.clientCert == nil || subjectSerialNumber(pc.clientCert) != "O0013COMPANY" {
		t.Errorf("client certificate seen by the partner = %v, want the company certificate", pc.clientCert)
	}
	if got := conn.ConnectionState().PeerCertificates[0].Subject.SerialNumber; got != dialPartnerID {
		t.Errorf("partner certificate serialNumber = %q, want %q", got, dialPartnerID)
	}
	if n := len(s.events); n != 0 {
		t.Errorf("%d events queued for a clean dial, want 0", n)
	}
	if n := countEvents(hook, EventOutgoingCRLMissing); n != 0 {
		t.Errorf("%d outgoing_crl_missing lines, want 0", n)
	}
}

// TestDialPartnerSourceIP checks that the dial uses outgoing_source_ip: the partner on
// 127.0.0.1 sees 127.0.0.2 as the remote address.
func TestDialPartnerSourceIP(t *testing.T) {
	p := servertest.NewPKI(t)
	s, _ := dialServer(t, p)
	tp := startTLSPartner(t, p, partnerLeaf(t, p.PartnerCA, dialPartnerID, nil))
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		pol, route := dialPolicy(t, p, tp.addr, func(c *tunnelv1.SecurityConfig) { c.OutgoingSourceIp = src })
		conn, ref := s.dialPartner(context.Background(), pol, route, s.log)
		if ref != nil {
			t.Fatalf("dialPartner() from %s refused: %v", src, ref)
		}
		conn.Write([]byte("x"))
		pc := tp.next(t)
		conn.Close()
		host, _, _ := net.SplitHostPort(pc.remote)
		if host != src {
			t.Errorf("partner saw remote address %s, want host %s", pc.remote, src)
		}
	}
}

// boundSocket binds a TCP socket to 127.0.0.1 on a free port, listening with a backlog of 0
// if listen, and returns its address; the socket is closed when t ends.
func boundSocket(t *testing.T, listen bool) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if listen {
		if err := syscall.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// closedPort returns an address on 127.0.0.1 whose port is bound but not listening, so that a
// connect is refused and no other test can take the port meanwhile.
func closedPort(t *testing.T) string { t.Helper(); return boundSocket(t, false) }

// silentPort returns an address on 127.0.0.1 that never completes a TCP connect: a listener
// with a backlog of 0 that never accepts, its queue filled, so the kernel drops further SYNs.
func silentPort(t *testing.T) string {
	t.Helper()
	addr := boundSocket(t, true)
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return addr // the queue is full
			}
			t.Fatalf("filling the backlog of %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("the backlog of %s did not fill after 8 connections", addr)
	return ""
}

// rawPartner accepts TCP connections on 127.0.0.1 and hands each to serve.
func rawPartner(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestDialPartnerRefusals(t *testing.T) {
	p := servertest.NewPKI(t)
	foreign := servertest.NewPKI(t)
	revoked := partnerLeaf(t, p.PartnerCA, dialPartnerID, nil)
	crl, err := p.PartnerCA.CRL([]pki.RevokedCert{{SerialNumber: revoked.Leaf.SerialNumber, ReasonCode: 1}}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tlsAt := func(cert tls.Certificate) func(t *testing.T) (string, *tlsPartner) {
		return func(t *testing.T) (string, *tlsPartner) { tp := startTLSPartner(t, p, cert); return tp.addr, tp }
	}
	rawAt := func(serve func(net.Conn)) func(t *testing.T) (string, *tlsPartner) {
		return func(t *testing.T) (string, *tlsPartner) { return rawPartner(t, serve), nil }
	}
	tests := []struct {
		name    string
		partner func(t *testing.T) (string, *tlsPartner) // the partner's address and, for TLS partners, its record
		mod     func(*tunnelv1.SecurityConfig)
		event   string
		reason  string
		esid    oftp2.ESIDReason
	}{
		{name: "connection refused", partner: func(t *testing.T) (string, *tlsPartner) { return closedPort(t), nil },
			event: EventOutgoingConnectFailed, reason: reasonConnRefused, esid: oftp2.ESIDResourcesNotAvailable},
		{name: "connect timeout", partner: func(t *testing.T) (string, *tlsPartner) { return silentPort(t), nil }, mod: shortTimeouts,
			event: EventOutgoingConnectFailed, reason: reasonConnectTimeout, esid: oftp2.ESIDTimeout},
		{name: "source address not on this host", partner: func(t *testing.T) (string, *tlsPartner) {
			return startTLSPartner(t, p, partnerLeaf(t, p.PartnerCA, dialPartnerID, nil)).addr, nil // nothing reaches it
		},
			mod:   func(c *tunnelv1.SecurityConfig) { c.OutgoingSourceIp = "192.0.2.10" },
			event: EventOutgoingSourceIPUnavailable, reason: reasonSourceIP, esid: oftp2.ESIDResourcesNotAvailable},
		{name: "TLS handshake timeout", partner: rawAt(func(c net.Conn) { io.Copy(io.Discard, c) }), mod: shortTimeouts,
			event: EventOutgoingTLSFailed, reason: reasonHandshakeTime, esid: oftp2.ESIDTimeout},
		{name: "partner speaks plain OFTP2", partner: rawAt(func(c net.Conn) {
			c.Write([]byte{0x10, 0, 0, 0x17, 'I', 'O', 'D', 'E', 'T', 'T', 'E', ' ', 'F', 'T', 'P', ' ', 'R', 'E', 'A', 'D', 'Y', ' ', '\r'})
			io.Copy(io.Discard, c)
		}), event: EventOutgoingTLSFailed, reason: reasonHandshake, esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "untrusted CA", partner: tlsAt(partnerLeaf(t, foreign.PartnerCA, dialPartnerID, nil)),
			event: EventOutgoingTLSFailed, reason: reasonUntrusted, esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "client-only certificate", partner: tlsAt(partnerLeaf(t, p.PartnerCA, dialPartnerID, func(r *pki.Request) { r.Usage = pki.UsageClient })),
			event: EventOutgoingTLSFailed, reason: reasonBadCert, esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "expired", partner: tlsAt(partnerLeaf(t, p.PartnerCA, dialPartnerID, func(r *pki.Request) {
			r.NotBefore, r.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		})), event: EventOutgoingCertExpired, reason: reasonExpired, esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "revoked", partner: tlsAt(revoked),
			mod:   func(c *tunnelv1.SecurityConfig) { c.Crls = []*tunnelv1.Crl{{Id: "partner-ca", Der: crl}} },
			event: EventOutgoingRevoked, reason: reasonRevoked, esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "not issued for the server name", partner: tlsAt(partnerLeaf(t, p.PartnerCA, dialPartnerID, func(r *pki.Request) {
			r.IPAddresses, r.DNSNames = nil, []string{"oftp.partner.example"}
		})), event: EventOutgoingTLSFailed, reason: reasonServerName, esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "bound to another Odette ID", partner: tlsAt(partnerLeaf(t, p.PartnerCA, "O0013OTHER", nil)),
			event: EventOutgoingCertMismatch, reason: reasonOutgoingBinding, esid: oftp2.ESIDUserCodeNotKnown},
		{name: "not matching the partner's binding", partner: tlsAt(partnerLeaf(t, p.PartnerCA, dialPartnerID, nil)),
			mod: func(c *tunnelv1.SecurityConfig) {
				c.Partners[0].CertificateBindings = []*tunnelv1.CertificateBinding{{Sha256Fingerprint: make([]byte, 32)}}
			}, event: EventOutgoingCertMismatch, reason: reasonOutgoingBinding, esid: oftp2.ESIDUserCodeNotKnown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, hook := dialServer(t, p)
			addr, tp := tt.partner(t)
			pol, route := dialPolicy(t, p, addr, tt.mod)
			conn, ref := s.dialPartner(context.Background(), pol, route, s.log)
			if ref == nil {
				conn.Close()
				t.Fatal("dialPartner() succeeded, want a refusal")
			}
			if ref.event != tt.event || ref.reason != tt.reason || ref.esid != tt.esid {
				t.Errorf("dialPartner() refusal = %s/%s ESID %s, want %s/%s ESID %s (%s)", ref.event, ref.reason, ref.esid, tt.event, tt.reason, tt.esid, ref.msg)
			}
			if ref.text == "" || len(ref.text) > 80 {
				t.Errorf("ESID text %q: want a few words naming the cause", ref.text)
			}
			if ref.odette != dialPartnerID || ref.fields["route"] != "out-1" || ref.fields["partner_address"] != addr {
				t.Errorf("refusal odette %q, fields %v: want the partner, route and address", ref.odette, ref.fields)
			}

			// The event: one line naming partner, address and cause, and an Event frame.
			s.emit(ref.outgoingEvent())
			en := hook.LastEntry()
			if en.Data["event"] != tt.event || en.Data["reason"] != tt.reason || en.Data["odette_id"] != dialPartnerID ||
				en.Data["partner_address"] != addr || en.Data["esid_reason"] != strconv.Itoa(int(tt.esid)/10)+strconv.Itoa(int(tt.esid)%10) {
				t.Errorf("log line = %v, want event %s reason %s with partner, address and ESID", en.Data, tt.event, tt.reason)
			}
			ev := nextEvent(t, s)
			if ev.GetName() != tt.event || ev.GetFields()["reason"] != tt.reason || ev.GetOdetteId() != dialPartnerID || ev.GetRemoteAddr() == "" {
				t.Errorf("Event frame = %v, want %s/%s for %s", ev, tt.event, tt.reason, dialPartnerID)
			}

			// A partner whose certificate was refused received not one byte of OFTP2.
			if tp != nil {
				if pc := tp.next(t); len(pc.got) != 0 || pc.err == nil {
					t.Errorf("partner received %q (err %v), want nothing and a failed connection", pc.got, pc.err)
				}
			}
		})
	}
}

// TestDialPartnerServerName checks the route's server_name: a certificate issued only for a
// DNS name is accepted when the route names it.
func TestDialPartnerServerName(t *testing.T) {
	p := servertest.NewPKI(t)
	s, _ := dialServer(t, p)
	tp := startTLSPartner(t, p, partnerLeaf(t, p.PartnerCA, dialPartnerID, func(r *pki.Request) {
		r.IPAddresses, r.DNSNames = nil, []string{"oftp.partner.example"}
	}))
	pol, route := dialPolicy(t, p, tp.addr, func(c *tunnelv1.SecurityConfig) { c.OutgoingRoutes[0].ServerName = "oftp.partner.example" })
	conn, ref := s.dialPartner(context.Background(), pol, route, s.log)
	if ref != nil {
		t.Fatalf("dialPartner() refused: %v", ref)
	}
	conn.Close()
	if got := conn.ConnectionState().ServerName; got != "oftp.partner.example" {
		t.Errorf("SNI = %q, want oftp.partner.example", got)
	}
}

// TestDialPartnerCRLMissing checks that a certificate no configured CRL covers is accepted
// with an outgoing_crl_missing event and its distribution point reported, as for incoming.
func TestDialPartnerCRLMissing(t *testing.T) {
	p := servertest.NewPKI(t)
	s, hook := dialServer(t, p)
	const dp = "http://crl.partner.example/ca.crl"
	tp := startTLSPartner(t, p, partnerLeaf(t, p.PartnerCA, dialPartnerID, func(r *pki.Request) { r.CRLDistributionPoints = []string{dp} }))
	pol, route := dialPolicy(t, p, tp.addr, func(c *tunnelv1.SecurityConfig) { c.Crls = nil })
	conn, ref := s.dialPartner(context.Background(), pol, route, s.log)
	if ref != nil {
		t.Fatalf("dialPartner() refused: %v", ref)
	}
	conn.Close()
	if ev := nextEvent(t, s); ev.GetName() != EventOutgoingCRLMissing || ev.GetOdetteId() != dialPartnerID || ev.GetSeverity() != tunnelv1.Severity_SEVERITY_WARNING {
		t.Errorf("first event = %v, want a WARNING %s for %s", ev, EventOutgoingCRLMissing, dialPartnerID)
	}
	select {
	case q := <-s.events:
		if urls := q.frame.GetCrlUrlReport().GetUrls(); len(urls) != 1 || urls[0] != dp {
			t.Errorf("second frame = %v, want a CrlUrlReport of %s", q.frame, dp)
		}
	default:
		t.Error("no CrlUrlReport queued")
	}
	if n := countEvents(hook, EventOutgoingCRLMissing); n != 1 {
		t.Errorf("%d outgoing_crl_missing lines, want 1", n)
	}
}

// TestDialPartnerCanceled checks that a stopped session ends its dial at once.
func TestDialPartnerCanceled(t *testing.T) {
	p := servertest.NewPKI(t)
	s, _ := dialServer(t, p)
	addr := rawPartner(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	pol, route := dialPolicy(t, p, addr, func(c *tunnelv1.SecurityConfig) { c.Limits.HandshakeTimeout = durationpb.New(time.Minute) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *refusal, 1)
	go func() {
		conn, ref := s.dialPartner(ctx, pol, route, s.log)
		if conn != nil {
			conn.Close()
		}
		done <- ref
	}()
	cancel()
	select {
	case ref := <-done:
		if ref == nil || ref.reason != reasonDialCanceled {
			t.Errorf("dialPartner() after cancel = %v, want reason %s", ref, reasonDialCanceled)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dialPartner() did not return after its context was canceled")
	}
}
