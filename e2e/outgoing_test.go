package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/client/configfile"
	"smartproxy/internal/pki"
	"smartproxy/internal/testnet"
	"smartproxy/internal/testwait"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// routeName is the outgoing route of the tests.
const routeName = "to-partner"

// outgoing is a system with one outgoing route to a partner's OFTP2 server (TLS, a partner
// certificate as server certificate, the company certificate required from the caller).
type outgoing struct {
	*system
	partner   *servertest.Responder // the partner's OFTP2 server
	recvDir   string                // where the partner stores files
	routeAddr string                // the client's listener of the route
}

// partnerServerTLS is the TLS configuration of a partner's OFTP2 server presenting leaf and
// requiring a client certificate of the company CA.
func (fx *fixture) partnerServerTLS(leaf *pki.Leaf) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: fx.CompanyCA.Pool(), MinVersion: tls.VersionTLS12}
}

// startOutgoing starts a partner server presenting leaf as partnerID's OFTP2 server (answering
// with answerID in its SSID), and a system whose route (in the client's configuration file)
// leads there. mod may change the configuration.
func startOutgoing(t testing.TB, fx *fixture, leaf *pki.Leaf, answerID string, mod func(*configfile.File)) *outgoing {
	t.Helper()
	o := &outgoing{recvDir: t.TempDir()}
	o.partner = servertest.StartTLSResponder(t, endpoint.Config{
		ID: answerID, Password: partnerPassword, ReceiveDir: o.recvDir, Timeout: endpointTimeout,
		Partners: map[string]oftp2.Password{companyID: companyPassword},
	}, fx.partnerServerTLS(leaf))
	o.routeAddr = testnet.ReserveAddr(t)
	o.system = startSystem(t, fx, systemOptions{config: func(f *configfile.File) {
		f.Routes = []configfile.Route{{Name: routeName, ListenAddress: o.routeAddr, PartnerAddress: o.partner.Addr,
			PartnerOdetteID: partnerID, ServerName: "localhost"}}
		if mod != nil {
			mod(f)
		}
	}})
	o.clientLog.wait(t, "the client", "route_listening", map[string]string{"route": routeName})
	return o
}

// send runs the internal OFTP2 server's sending session through the route (plain TCP).
func (o *outgoing) send(t testing.TB, files ...testFile) (*endpoint.Result, error) {
	t.Helper()
	ep, err := endpoint.New(endpoint.Config{Role: endpoint.Initiator, Mode: oftp2.ModeSender, ID: companyID, Password: companyPassword,
		PartnerID: partnerID, PartnerPassword: partnerPassword, Timeout: endpointTimeout})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", o.routeAddr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial the route listener: %v", err)
	}
	out := make([]endpoint.OutgoingFile, len(files))
	for i, f := range files {
		out[i] = f.out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return ep.Run(ctx, conn, out...)
}

// partnerResults waits until the partner server has finished n sessions.
func (o *outgoing) partnerResults(t testing.TB, n int) []servertest.ResponderResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := o.partner.WaitResults(ctx, n)
	if err != nil {
		t.Fatalf("the partner server finished %d sessions, want %d: %v", len(o.partner.Results()), n, err)
	}
	return res
}

// TestOutgoingFormats sends files of 0 B, 1 MiB and 50 MiB in each Virtual File format from the
// internal OFTP2 server through a route of the client, the tunnel and the server to the
// partner's OFTP2 server, one session per format: every file must be stored byte-identical at
// the partner and confirmed to the internal sender by the partner's EERP.
func TestOutgoingFormats(t *testing.T) {
	fx := newFixture(t)
	o := startOutgoing(t, fx, fx.partner(t, partnerID), partnerID, nil)
	dir := t.TempDir()
	sessions := 0
	for _, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable} {
		t.Run(f.String(), func(t *testing.T) {
			var files []testFile
			for i, size := range []int64{0, mib, 50 * mib} {
				files = append(files, makeFile(t, dir, fmt.Sprintf("out-%c-%d.dat", byte(f), size), f, size, uint64(20+i)))
			}
			res, err := o.send(t, files...)
			if err != nil {
				t.Fatalf("internal sender's session: %v", err)
			}
			sessions++
			rr := o.partnerResults(t, sessions)[sessions-1]
			checkDelivered(t, res, rr, files)
			if rr.Result.Partner != companyID {
				t.Errorf("the partner's session partner = %q, want %q", rr.Result.Partner, companyID)
			}
		})
	}
	o.serverLog.wait(t, "the server", "session_ended", map[string]string{"direction": "outgoing", "reason": "normal", "odette_id": partnerID})
	o.clientLog.wait(t, "the client", "session_ended", map[string]string{"direction": "outgoing", "reason": "normal"})
}

// TestOutgoingRefused: partners that must not receive the company's files. Each ends with an
// ESID to the internal sender (reason and a few words), an event at the server that the client
// logs too, and — where the partner's certificate was refused — not one octet of OFTP2 at the
// partner: the dial is judged inside the TLS handshake, before the session is accepted.
func TestOutgoingRefused(t *testing.T) {
	fx := newFixture(t)
	type refusedCase struct {
		name     string
		leaf     *pki.Leaf // the partner server's certificate; nil: nothing listens
		answerID string    // the Odette ID in the partner's SSID
		routeID  string    // the route's partner
		event    string
		esid     oftp2.ESIDReason
		certOK   bool // the certificate is accepted: the session reaches the partner
	}
	cases := []refusedCase{
		{name: "SSID of another partner", leaf: fx.partner(t, partnerID), answerID: healthyID, routeID: partnerID,
			event: "outgoing_partner_id_mismatch", esid: oftp2.ESIDUserCodeNotKnown, certOK: true},
		{name: "expired", leaf: fx.issue(t, fx.PartnerCA, partnerID, func(r *pki.Request) {
			r.NotBefore, r.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		}), answerID: partnerID, routeID: partnerID, event: "outgoing_cert_expired", esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "untrusted CA", leaf: fx.issue(t, fx.ForeignCA, partnerID, nil), answerID: partnerID, routeID: partnerID,
			event: "outgoing_tls_failed", esid: oftp2.ESIDSecureAuthIncompatible},
		{name: "bound to another ID", leaf: fx.partner(t, healthyID), answerID: partnerID, routeID: partnerID,
			event: "outgoing_cert_mismatch", esid: oftp2.ESIDUserCodeNotKnown},
		{name: "unreachable", routeID: partnerID, event: "outgoing_connect_failed", esid: oftp2.ESIDResourcesNotAvailable},
	}
	if requireOpenSSL(t) != "" {
		cases = append(cases, refusedCase{name: "revoked by an openssl CRL", leaf: fx.RevokedSSL, answerID: revokedSSLID, routeID: revokedSSLID,
			event: "outgoing_revoked", esid: oftp2.ESIDSecureAuthIncompatible})
	} else {
		t.Log("openssl not installed: the case of a CRL made by `openssl ca` is left out")
	}
	partners := make([]*servertest.Responder, len(cases))
	var routes []configfile.Route
	for i, c := range cases {
		addr := testnet.ReserveAddr(t) // nothing listens there
		if c.leaf != nil {
			partners[i] = servertest.StartTLSResponder(t, endpoint.Config{
				ID: c.answerID, Password: partnerPassword, ReceiveDir: t.TempDir(), Timeout: endpointTimeout,
				Partners: map[string]oftp2.Password{companyID: companyPassword},
			}, fx.partnerServerTLS(c.leaf))
			addr = partners[i].Addr
		}
		routes = append(routes, configfile.Route{Name: fmt.Sprintf("route-%d", i), ListenAddress: testnet.ReserveAddr(t),
			PartnerAddress: addr, PartnerOdetteID: c.routeID, ServerName: "localhost"})
	}
	sys := startSystem(t, fx, systemOptions{config: func(f *configfile.File) { f.Routes = routes }})
	file := makeFile(t, t.TempDir(), "never.dat", oftp2.FormatUnstructured, 64<<10, 3)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := routes[i]
			sys.clientLog.wait(t, "the client", "route_listening", map[string]string{"route": r.Name})
			o := &outgoing{system: sys, routeAddr: r.ListenAddress}
			res, err := o.send(t, file)
			var se *endpoint.SessionError
			if !errors.As(err, &se) || !se.Remote || se.Reason != c.esid {
				t.Fatalf("internal sender's session ended with %v, want ESID %s from the proxy", err, c.esid)
			}
			if len(res.Sent) > 0 && res.Sent[0].Status == endpoint.StatusDelivered {
				t.Errorf("the file was delivered")
			}
			sys.serverLog.wait(t, "the server", c.event, map[string]string{"route": r.Name, "direction": "outgoing"})
			sys.clientLog.wait(t, "the client", c.event, map[string]string{"route": r.Name, "source": "server"})
			if c.leaf == nil {
				return
			}
			pr, err := partners[i].WaitResults(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.certOK:
				if !errors.As(pr[0].Err, &se) || !se.Remote || se.Reason != c.esid {
					t.Errorf("the partner's session ended with %v, want ESID %s from the proxy", pr[0].Err, c.esid)
				}
			case pr[0].BytesRead != 0:
				t.Errorf("the refused partner read %d octets of OFTP2, want none", pr[0].BytesRead)
			}
		})
	}
}

// TestOutgoingWithIncoming runs an outgoing and an incoming session at the same time on the one
// tunnel, with outgoing_source_ip 127.0.0.2: both files arrive byte-identical with their EERPs,
// and the called partner sees the connection come from 127.0.0.2.
func TestOutgoingWithIncoming(t *testing.T) {
	fx := newFixture(t)
	o := startOutgoing(t, fx, fx.partner(t, partnerID), partnerID, func(f *configfile.File) { f.OutgoingSourceIP = "127.0.0.2" })
	dir := t.TempDir()
	out := makeFile(t, dir, "out.dat", oftp2.FormatUnstructured, 8*mib, 41)
	in := makeFile(t, dir, "in.dat", oftp2.FormatText, 8*mib, 42)
	type result struct {
		res *endpoint.Result
		err error
	}
	outDone, inDone := make(chan result, 1), make(chan result, 1)
	go func() { res, err := o.send(t, out); outDone <- result{res, err} }()
	go func() {
		res, err := sendAs(t, fx, o.partnerAddr(t), fx.partner(t, partnerID), partnerID, partnerPassword, nil, in)
		inDone <- result{res, err}
	}()
	or, ir := <-outDone, <-inDone
	if or.err != nil || ir.err != nil {
		t.Fatalf("outgoing session: %v; incoming session: %v", or.err, ir.err)
	}
	rr := o.partnerResults(t, 1)[0]
	checkDelivered(t, or.res, rr, []testFile{out})
	checkDelivered(t, ir.res, o.responderResults(t, 1)[0], []testFile{in})
	if host, _, _ := net.SplitHostPort(rr.Remote); host != "127.0.0.2" {
		t.Errorf("the partner saw the connection from %s, want 127.0.0.2 (outgoing_source_ip)", rr.Remote)
	}
	o.mu.Lock()
	rc := o.client
	o.mu.Unlock()
	if n := len(rc.c.Tunnels()); n != 1 {
		t.Errorf("the client holds %d tunnels, want 1", n)
	}
}

// TestOutgoingViolations: in an outgoing session a command that breaks RFC 5024 — from the
// called partner or from the internal initiator — ends the session with an ESID to both sides
// carrying the validator's reason, and a protocol_violation event naming the side.
func TestOutgoingViolations(t *testing.T) {
	fx := newFixture(t)
	leaf := fx.partner(t, partnerID)
	// The partner's first command after the SSID exchange is an SFID, although the caller
	// (the internal initiator) is the Speaker.
	rawLn, err := tls.Listen("tcp", "127.0.0.1:0", fx.partnerServerTLS(leaf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rawLn.Close() })
	partnerGot := make(chan error, 1) // the ESID the misbehaving partner read, as an error
	go func() { partnerGot <- misbehavingPartner(rawLn) }()
	// A well-behaved partner for the misbehaving internal initiator.
	good := servertest.StartTLSResponder(t, endpoint.Config{ID: partnerID, Password: partnerPassword, ReceiveDir: t.TempDir(),
		Timeout: endpointTimeout, Partners: map[string]oftp2.Password{companyID: companyPassword}}, fx.partnerServerTLS(leaf))
	badPartner, goodPartner := testnet.ReserveAddr(t), testnet.ReserveAddr(t)
	sys := startSystem(t, fx, systemOptions{config: func(f *configfile.File) {
		f.Routes = []configfile.Route{
			{Name: "bad-partner", ListenAddress: badPartner, PartnerAddress: rawLn.Addr().String(), PartnerOdetteID: partnerID, ServerName: "localhost"},
			{Name: "good-partner", ListenAddress: goodPartner, PartnerAddress: good.Addr, PartnerOdetteID: partnerID, ServerName: "localhost"},
		}
	}})

	t.Run("from the partner", func(t *testing.T) {
		sys.clientLog.wait(t, "the client", "route_listening", map[string]string{"route": "bad-partner"})
		o := &outgoing{system: sys, routeAddr: badPartner}
		_, err := o.send(t)
		ev := sys.serverLog.wait(t, "the server", "protocol_violation", map[string]string{"side": "partner", "direction": "outgoing"})
		want := esidReasonOf(t, ev)
		var se *endpoint.SessionError
		if !errors.As(err, &se) || !se.Remote || se.Reason != want {
			t.Errorf("internal sender's session ended with %v, want ESID %s from the proxy", err, want)
		}
		if err := <-partnerGot; !errors.As(err, &se) || se.Reason != want {
			t.Errorf("the misbehaving partner read %v, want ESID %s", err, want)
		}
	})
	t.Run("from the internal initiator", func(t *testing.T) {
		sys.clientLog.wait(t, "the client", "route_listening", map[string]string{"route": "good-partner"})
		conn, err := net.DialTimeout("tcp", goodPartner, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(waitTimeout))
		r, w := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
		if b, err := r.ReadBuffer(); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSRM {
			t.Fatalf("first command through the route = %q, %v; want the partner's SSRM", b, err)
		}
		if err := w.WriteCommand(&oftp2.SSID{Level: 5, ID: companyID, Password: companyPassword, BufferSize: 4096, Mode: oftp2.ModeSender,
			Restart: true, Credit: 10}); err != nil {
			t.Fatal(err)
		}
		if b, err := r.ReadBuffer(); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
			t.Fatalf("answer to the SSID = %q, %v; want the partner's SSID", b, err)
		}
		// DATA before any SFID.
		if err := w.WriteBuffer(dataBuffer(100)); err != nil {
			t.Fatal(err)
		}
		ev := sys.serverLog.wait(t, "the server", "protocol_violation", map[string]string{"side": "inside", "direction": "outgoing"})
		want := esidReasonOf(t, ev)
		b, err := r.ReadBuffer()
		var esid oftp2.ESID
		if err != nil || esid.Decode(b, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient}) != nil || esid.Reason != want {
			t.Errorf("the internal initiator read %q, %v; want ESID %s", b, err, want)
		}
		pr, err := good.WaitResults(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		var se *endpoint.SessionError
		if !errors.As(pr[0].Err, &se) || !se.Remote || se.Reason != want {
			t.Errorf("the partner's session ended with %v, want ESID %s from the proxy", pr[0].Err, want)
		}
	})
}

// misbehavingPartner serves one outgoing session on ln as a partner that answers the SSID and
// then sends an SFID out of turn. It returns the ESID it reads then as an
// *endpoint.SessionError, or what went wrong.
func misbehavingPartner(ln net.Listener) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	r, w := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
	if err := w.WriteCommand(&oftp2.SSRM{}); err != nil {
		return err
	}
	if _, err := r.ReadBuffer(); err != nil {
		return fmt.Errorf("reading the caller's SSID: %w", err)
	}
	if err := w.WriteCommand(&oftp2.SSID{Level: 5, ID: partnerID, Password: partnerPassword, BufferSize: 4096, Mode: oftp2.ModeReceiver,
		Restart: true, Credit: 10}); err != nil {
		return err
	}
	if err := w.WriteCommand(violationSFID("OUTOFTURN")); err != nil {
		return err
	}
	b, err := r.ReadBuffer()
	if err != nil {
		return fmt.Errorf("waiting for the ESID: %w", err)
	}
	var esid oftp2.ESID
	if err := esid.Decode(b, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient}); err != nil {
		return fmt.Errorf("the answer %q is not an ESID: %w", b, err)
	}
	return &endpoint.SessionError{Reason: esid.Reason, Text: esid.Text, Remote: true}
}

// esidReasonOf returns the esid_reason field of a server event.
func esidReasonOf(t testing.TB, e *logrus.Entry) oftp2.ESIDReason {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(fmt.Sprint(e.Data["esid_reason"]), "%d", &n); err != nil || n == 0 {
		t.Fatalf("event %v: esid_reason %v", e.Data["event"], e.Data["esid_reason"])
	}
	return oftp2.ESIDReason(n)
}

// TestOutgoingTunnelCut cuts the tunnel in the middle of an outgoing 200 MiB transfer: the
// internal sender and the partner each receive ESID 05, the partner keeps what it stored, and
// the same file sent again through a new client resumes by OFTP2 restart and arrives
// byte-identical with its EERP.
func TestOutgoingTunnelCut(t *testing.T) {
	fx := newFixture(t)
	partnerRecv := t.TempDir()
	partner := servertest.StartTLSResponder(t, endpoint.Config{ID: partnerID, Password: partnerPassword, ReceiveDir: partnerRecv,
		Timeout: endpointTimeout, Partners: map[string]oftp2.Password{companyID: companyPassword}}, fx.partnerServerTLS(fx.partner(t, partnerID)))
	routeAddr := testnet.ReserveAddr(t)
	var tunnelFwd *forwarder
	sys := startSystem(t, fx, systemOptions{
		tunnelVia: func(target string) string { tunnelFwd = startForwarder(t, target); return tunnelFwd.Addr() },
		config: func(f *configfile.File) {
			f.Routes = []configfile.Route{{Name: routeName, ListenAddress: routeAddr, PartnerAddress: partner.Addr,
				PartnerOdetteID: partnerID, ServerName: "localhost"}}
		},
	})
	sys.clientLog.wait(t, "the client", "route_listening", map[string]string{"route": routeName})
	o := &outgoing{system: sys, partner: partner, recvDir: partnerRecv, routeAddr: routeAddr}
	file := makeFile(t, t.TempDir(), "big-out.dat", oftp2.FormatUnstructured, 200*mib, 9)

	type result struct {
		res *endpoint.Result
		err error
	}
	done := make(chan result, 1)
	go func() { res, err := o.send(t, file); done <- result{res, err} }()
	// The partner's partial file has no notification: poll its size.
	testwait.For(t, waitTimeout, "20 MiB at the partner", func() bool {
		select {
		case r := <-done:
			t.Fatalf("the session ended before the cut: %v", r.err)
		default:
		}
		return partialSize(t, partnerRecv) >= 20*mib
	})
	tunnelFwd.Cut()
	sys.mu.Lock()
	old := sys.client
	sys.mu.Unlock()
	old.stop()

	r := <-done
	var se *endpoint.SessionError
	if !errors.As(r.err, &se) || !se.Remote || se.Reason != oftp2.ESIDLocalEmergency {
		t.Fatalf("internal sender's session ended with %v, want ESID 05 from the client", r.err)
	}
	pr := o.partnerResults(t, 1)[0]
	if !errors.As(pr.Err, &se) || !se.Remote || se.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("the partner's session ended with %v, want ESID 05 from the server", pr.Err)
	}
	kept := partialSize(t, partnerRecv)
	sys.serverLog.wait(t, "the server", "session_ended", map[string]string{"direction": "outgoing", "reason": "inside_tunnel_lost", "esid_reason": "05"})

	// A new client; the internal server sends the same file again and it resumes. The client
	// listens for the route before its tunnel is up (a session then gets ESID 08), so wait for
	// its tunnel and for the server to hold its configuration.
	tunnelsUp := len(sys.clientLog.entries("tunnel_up", nil))
	sys.startClient(t, sys.tunnelAddr)
	// The two log lines come in either order and have no notification together: poll the log.
	testwait.For(t, waitTimeout, "the new client listening for the route with its tunnel up", func() bool {
		return len(sys.clientLog.entries("route_listening", map[string]string{"route": routeName})) >= 2 &&
			len(sys.clientLog.entries("tunnel_up", nil)) > tunnelsUp
	})
	sys.waitListener(t, true) // the server holds a configuration and a tunnel
	res, err := o.send(t, file)
	if err != nil {
		t.Fatalf("re-sent session: %v", err)
	}
	checkDelivered(t, res, o.partnerResults(t, 2)[1], []testFile{file})
	if pos := res.Sent[0].RestartPosition; pos <= 0 {
		t.Errorf("the internal sender's restart position = %d, want > 0 (the transfer started over)", pos)
	}
	t.Logf("resumed at %d KiB of %d KiB; %d octets had been kept", res.Sent[0].RestartPosition, file.size>>10, kept)
}
