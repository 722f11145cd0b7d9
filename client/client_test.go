package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"smartproxy/admin"
	"smartproxy/client"
	"smartproxy/client/clienttest"
	"smartproxy/client/configfile"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/backoff"
	"smartproxy/internal/logging"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/tunnel"
)

const waitLong = 10 * time.Second

// env is one client against one harness server, with the configuration files.
type env struct {
	files  *clienttest.Files
	srv    *clienttest.Server   // the first of srvs
	srvs   []*clienttest.Server // the servers the client connects to
	loader *configfile.Loader
	path   string
	client *client.Client
	hook   *logtest.Hook
	levels *logging.Levels
	stop   func()
}

type envOptions struct {
	internalAddr string
	streams      int
	servers      int // harness servers sharing one tunnel CA; if zero, 1
	server       clienttest.ServerConfig
	change       func(*configfile.File)
	observer     client.Observer
}

// newEnv writes a configuration whose internal server is opts.internalAddr, starts a harness
// server and a client connected to it. The client is stopped by t.Cleanup (or env.stop).
func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	e := &env{files: clienttest.NewFiles(t, t.TempDir())}
	e.srv = clienttest.NewServer(t, opts.server)
	e.srvs = []*clienttest.Server{e.srv}
	addrs := []string{e.srv.Addr}
	for range opts.servers - 1 {
		sc := opts.server
		sc.CA = e.srv.CA
		sc.ProxyID = fmt.Sprintf("SPX-0000-0000-0000-000%d", len(e.srvs)+1)
		srv := clienttest.NewServer(t, sc)
		e.srvs = append(e.srvs, srv)
		addrs = append(addrs, srv.Addr)
	}
	cfg := e.files.Config(opts.internalAddr)
	if opts.change != nil {
		opts.change(&cfg)
	}
	e.path = filepath.Join(e.files.Dir, "client.json")
	clienttest.WriteConfig(t, e.path, cfg)
	var err error
	if e.loader, err = configfile.NewLoader(e.path, nil); err != nil {
		t.Fatal(err)
	}
	res, err := e.loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	e.hook = hook
	e.levels = logging.NewLevels(log)
	e.client, err = client.New(client.Config{
		Servers:         addrs,
		ServerName:      "localhost",
		Credentials:     e.srv.ClientCredentials,
		Streams:         opts.streams,
		Version:         "test",
		Config:          res.Snapshot,
		Logger:          log,
		Levels:          e.levels,
		ShutdownTimeout: 3 * time.Second,
		Linger:          3 * time.Second,
		Backoff:         backoff.Exponential{Base: 20 * time.Millisecond, Cap: 100 * time.Millisecond},
		Observer:        opts.observer,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.client.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Client.Run() = %v, want nil after cancel", err)
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

// logged reports whether a log entry has event name ev.
func (e *env) logged(ev string) *logrus.Entry {
	all := e.hook.AllEntries()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Data["event"] == ev {
			return all[i]
		}
	}
	return nil
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ssid(t testing.TB, id, password string) []byte {
	t.Helper()
	b, err := (&oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: 4096, Mode: oftp2.ModeSender,
		Restart: true, Credit: 16}).Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scripted is an internal OFTP2 server on loopback whose connections run a script; it counts
// the connections it accepted.
type scripted struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	count int
}

func newScripted(t testing.TB, script func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer)) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.count++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				script(conn, oftp2.NewReader(conn, 0), oftp2.NewWriter(conn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *scripted) addr() string { return s.ln.Addr().String() }

func (s *scripted) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// responderSSID is the internal server's SSID answer in scripted sessions.
var responderSSID = &oftp2.SSID{Level: 5, ID: clienttest.CompanyID, BufferSize: 4096, Mode: oftp2.ModeReceiver, Restart: true, Credit: 16}

func TestHandshakeAndConfigPush(t *testing.T) {
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305", streams: 2})
	want := e.client.Current()
	seen := map[uint32]bool{}
	for range 2 {
		conn := e.srv.WaitConn(t, waitLong)
		h := conn.Hello
		if h.GetProtocolVersion() != 1 || h.GetClientId() != "test-client" || h.GetSoftwareVersion() != "test" || h.GetConfigVersion() != want.Version {
			t.Errorf("Hello = %v, want protocol 1, client test-client, version test, config version %d", h, want.Version)
		}
		if !slices.Contains(h.GetCapabilities(), tunnel.CapabilityDataBatches) {
			t.Errorf("Hello.capabilities = %q, want %q among them", h.GetCapabilities(), tunnel.CapabilityDataBatches)
		}
		seen[h.GetTunnelIndex()] = true
		got := conn.WaitConfig(t, waitLong)
		if got.GetVersion() != want.Version || len(got.GetConfig().GetPartners()) != 3 ||
			!bytes.Equal(got.GetConfig().GetCompanyIdentity().GetPrivateKey(), want.Security.GetCompanyIdentity().GetPrivateKey()) {
			t.Errorf("pushed configuration = version %d with %d partners, want version %d with 3 partners and the company key",
				got.GetVersion(), len(got.GetConfig().GetPartners()), want.Version)
		}
	}
	if !seen[0] || !seen[1] {
		t.Errorf("tunnel indexes = %v, want 0 and 1", seen)
	}
	waitFor(t, "both tunnels to report the applied version", func() bool {
		ts := e.client.Tunnels()
		return len(ts) == 2 && ts[0].AppliedVersion == want.Version && ts[1].AppliedVersion == want.Version
	})
	if e.logged(client.EventConfigApplied) == nil || e.logged(client.EventTunnelUp) == nil {
		t.Error("no config_applied or tunnel_up log line")
	}
	st, err := e.client.Admin().Status(context.Background())
	if err != nil || st.Program != "smartproxy-client" || st.ProxyID != "TEST-PROXY" || len(st.Tunnels) != 2 || st.ConfigVersion != want.Version || !st.LicenseValid {
		t.Errorf("admin Status() = %+v, %v; want the client's program, the proxy id, 2 tunnels, version %d, valid license", st, err, want.Version)
	}
}

// TestReloadPushesToEveryStream changes the file as SIGHUP does: a broken file leaves the
// configuration in force, a good one is pushed on every stream.
func TestReloadPushesToEveryStream(t *testing.T) {
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305", streams: 2})
	conns := []*clienttest.Conn{e.srv.WaitConn(t, waitLong), e.srv.WaitConn(t, waitLong)}
	first := e.client.Current()
	for _, c := range conns {
		c.WaitConfig(t, waitLong)
	}

	cfg := e.files.Config("127.0.0.1:3305")
	cfg.Partners[0].OdetteID = "not valid!"
	clienttest.WriteConfig(t, e.path, cfg)
	if _, err := e.loader.Load(); err == nil {
		t.Fatal("Load() of a broken file = nil error")
	}
	if e.client.Current() != first {
		t.Fatal("a broken file changed the configuration in force")
	}

	cfg = e.files.Config("127.0.0.1:3305")
	cfg.Partners = cfg.Partners[:2]
	clienttest.WriteConfig(t, e.path, cfg)
	res, err := e.loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.SetConfig(res.Snapshot); err != nil {
		t.Fatalf("SetConfig() = %v", err)
	}
	for _, c := range conns {
		got := c.WaitConfig(t, waitLong)
		if got.GetVersion() != res.Snapshot.Version || len(got.GetConfig().GetPartners()) != 2 {
			t.Errorf("tunnel %d: pushed version %d with %d partners, want %d with 2", c.Hello.GetTunnelIndex(), got.GetVersion(), len(got.GetConfig().GetPartners()), res.Snapshot.Version)
		}
	}
	if err := e.client.SetConfig(first); err == nil {
		t.Error("SetConfig(older version) = nil, want an error")
	}
}

// TestReconnectPushesAgain drops the tunnel: the client reconnects; a server that lost its
// configuration (a restart) gets it again, one that still holds it does not.
func TestReconnectPushesAgain(t *testing.T) {
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305"})
	c1 := e.srv.WaitConn(t, waitLong)
	v := c1.WaitConfig(t, waitLong).GetVersion()

	c1.Drop()
	c2 := e.srv.WaitConn(t, waitLong)
	if got := c2.WaitConfig(t, waitLong).GetVersion(); got != v {
		t.Errorf("after reconnect: pushed version %d, want %d", got, v)
	}

	e.srv.SetWelcomeVersion(v)
	c2.Drop()
	c3 := e.srv.WaitConn(t, waitLong)
	waitFor(t, "the third tunnel", func() bool { return len(e.client.Tunnels()) == 1 && e.client.Tunnels()[0].AppliedVersion == v })
	select {
	case p := <-c3.Configs():
		t.Errorf("pushed version %d to a server that holds it already", p.GetVersion())
	case <-time.After(300 * time.Millisecond):
	}
}

func TestChunkedCRL(t *testing.T) {
	// A CRL larger than the chunk size travels in ConfigChunk frames and is reassembled.
	files := clienttest.NewFiles(t, t.TempDir())
	big, err := files.PartnerCA.CRL(manyRevoked(40000), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(big) <= client.ChunkSize {
		t.Fatalf("test CRL has %d bytes, want more than %d", len(big), client.ChunkSize)
	}
	if err := os.WriteFile(filepath.Join(files.Dir, "big.crl"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := clienttest.NewServer(t, clienttest.ServerConfig{})
	cfg := files.Config("127.0.0.1:3305")
	cfg.CRLs = []configfile.CRL{{File: "big.crl"}}
	path := filepath.Join(files.Dir, "client.json")
	clienttest.WriteConfig(t, path, cfg)
	l, _ := configfile.NewLoader(path, nil)
	res, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Servers: []string{srv.Addr}, ServerName: "localhost", Credentials: srv.ClientCredentials, Config: res.Snapshot})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	got := srv.WaitConn(t, waitLong).WaitConfig(t, waitLong)
	if crls := got.GetConfig().GetCrls(); len(crls) != 1 || !bytes.Equal(crls[0].GetDer(), big) {
		t.Fatalf("reassembled CRLs = %d, want the %d-byte CRL", len(crls), len(big))
	}
	waitFor(t, "ConfigApplied", func() bool { ts := c.Tunnels(); return len(ts) == 1 && ts[0].AppliedVersion == res.Snapshot.Version })
}

func TestConfigRejectedIsLogged(t *testing.T) {
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305", server: clienttest.ServerConfig{
		Check: func(*tunnelv1.ConfigSnapshot) []*tunnelv1.ConfigError {
			return []*tunnelv1.ConfigError{{Field: "partner_listen_address", Message: "address in use"}}
		}}})
	e.srv.WaitConn(t, waitLong).WaitConfig(t, waitLong)
	waitFor(t, "config_rejected line", func() bool { return e.logged(client.EventConfigRejected) != nil })
	en := e.logged(client.EventConfigRejected)
	if en.Data["field"] != "partner_listen_address" || en.Data["error"] != "address in use" {
		t.Errorf("config_rejected line = %v, want field and error of the server", en.Data)
	}
	waitFor(t, "the refusal in Tunnels", func() bool { ts := e.client.Tunnels(); return len(ts) == 1 && len(ts[0].ConfigErrors) == 1 })
}

func TestServerFramesLogged(t *testing.T) {
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305"})
	conn := e.srv.WaitConn(t, waitLong)
	ctx := context.Background()
	frames := []*tunnelv1.Frame{
		{Kind: &tunnelv1.Frame_Event{Event: &tunnelv1.Event{Name: "partner_unknown", Severity: tunnelv1.Severity_SEVERITY_CRITICAL,
			OdetteId: "STRANGER", RemoteAddr: "192.0.2.7:40000", Message: "unknown partner", Fields: map[string]string{"reason": "partner_unknown", "event": "spoof"}}}},
		{Kind: &tunnelv1.Frame_CrlUrlReport{CrlUrlReport: &tunnelv1.CrlUrlReport{Urls: []string{"http://crl.other.test/a.crl"}}}},
		{Kind: &tunnelv1.Frame_LicenseStatus{LicenseStatus: &tunnelv1.LicenseStatus{ProxyId: "TEST-PROXY", Valid: false, Reason: "expired"}}},
		{Kind: &tunnelv1.Frame_Drain{Drain: &tunnelv1.Drain{Reason: "maintenance"}}},
	}
	for _, f := range frames {
		if err := conn.Send(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the drain line", func() bool { return e.logged(client.EventTunnelDraining) != nil })
	ev := e.logged("partner_unknown")
	if ev == nil || ev.Level != logrus.ErrorLevel || ev.Data["source"] != "server" || ev.Data["odette_id"] != "STRANGER" ||
		ev.Data["remote_addr"] != "192.0.2.7:40000" || ev.Data["reason"] != "partner_unknown" || ev.Data["server_event"] != "spoof" {
		t.Errorf("event line = %v, want one ERROR line event=partner_unknown with its fields (a field named event kept as server_event)", ev)
	}
	if en := e.logged(client.EventCRLURLReport); en == nil || en.Data["urls"] != "http://crl.other.test/a.crl" {
		t.Errorf("CRL report line = %v, want the URL", en)
	}
	if en := e.logged(client.EventLicenseStatus); en == nil || en.Level != logrus.ErrorLevel {
		t.Errorf("license line = %v, want an ERROR line", en)
	}
	if l, _ := e.client.Admin().License(ctx); l.Valid || l.Reason != "expired" {
		t.Errorf("admin License() = %+v, want the invalid license", l)
	}
	waitFor(t, "draining in Tunnels", func() bool { ts := e.client.Tunnels(); return len(ts) == 1 && ts[0].Draining })
}

// TestIncomingTransfer sends a file from an OFTP2 partner endpoint through the harness server
// and the client to an OFTP2 responder endpoint.
func TestIncomingTransfer(t *testing.T) {
	recvDir := t.TempDir()
	responder, err := endpoint.New(endpoint.Config{Role: endpoint.Responder, ID: clienttest.CompanyID, ReceiveDir: recvDir,
		Partners: map[string]oftp2.Password{clienttest.PartnerID: clienttest.PartnerPassword}})
	if err != nil {
		t.Fatal(err)
	}
	internal := serveEndpoint(t, responder)
	e := newEnv(t, envOptions{internalAddr: internal})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)

	data := make([]byte, 3<<20+17)
	rand.Read(data)
	src := filepath.Join(t.TempDir(), "invoice.dat")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	partner, err := endpoint.New(endpoint.Config{Role: endpoint.Initiator, ID: clienttest.PartnerID, Password: clienttest.PartnerPassword,
		PartnerID: clienttest.CompanyID})
	if err != nil {
		t.Fatal(err)
	}
	res, runErr, bridgeErr := runPartner(t, conn, partner, endpoint.OutgoingFile{Path: src, DatasetName: "INVOICE"})
	if runErr != nil {
		t.Errorf("partner Run() = %v, want a clean session", runErr)
	}
	if bridgeErr != nil {
		t.Errorf("Bridge() = %v, want a clean end", bridgeErr)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("partner result = %v, want the file delivered with EERP", err)
	}
	got, err := os.ReadFile(filepath.Join(recvDir, "INVOICE"))
	if err != nil {
		entries, _ := os.ReadDir(recvDir)
		t.Fatalf("received file: %v (receive dir holds %v)", err, entries)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("received %d bytes, want the %d bytes sent, identical", len(got), len(data))
	}
	waitFor(t, "session_ended line", func() bool { return e.logged(client.EventSessionEnded) != nil })
	if en := e.logged(client.EventSessionEnded); en.Data["bytes_from_partner"].(uint64) < uint64(len(data)) {
		t.Errorf("session_ended line = %v, want at least %d bytes from the partner", en.Data, len(data))
	}
}

// serveEndpoint runs ep as the internal OFTP2 server on loopback.
func serveEndpoint(t *testing.T, ep *endpoint.Endpoint) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ep.Run(ctx, conn)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		wg.Wait()
	})
	return ln.Addr().String()
}

// runPartner connects the partner endpoint over loopback TCP to a Bridge on conn and runs one
// session that sends files. It returns the partner's result and error and the Bridge's error.
func runPartner(t *testing.T, conn *clienttest.Conn, partner *endpoint.Endpoint, files ...endpoint.OutgoingFile) (*endpoint.Result, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bridgeErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			bridgeErr <- err
			return
		}
		bridgeErr <- conn.Bridge(ctx, c)
	}()
	pc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	res, runErr := partner.Run(ctx, pc, files...)
	return res, runErr, <-bridgeErr
}

// TestIncomingSessionFlow checks the wire: the internal server's SSRM is not forwarded, the
// partner's SSID reaches it unchanged, its SSID answer comes back as the first buffer, data
// flows both ways, and its end of stream half-closes the session.
func TestIncomingSessionFlow(t *testing.T) {
	gotSSID := make(chan []byte, 1)
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		b, err := r.ReadBuffer()
		if err != nil {
			return
		}
		gotSSID <- append([]byte(nil), b...)
		w.WriteCommand(responderSSID)
		if b, err = r.ReadBuffer(); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSFID {
			return
		}
		w.WriteBuffer([]byte("2" + strings.Repeat("0", 17))) // SFPA-shaped answer; the client does not validate
		w.WriteCommand(&oftp2.ESID{Reason: oftp2.ESIDNormal})
		// Return: the connection closes (end of stream).
	})
	e := newEnv(t, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	partnerSSID := ssid(t, clienttest.PartnerID, clienttest.PartnerPassword)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", partnerSSID)
	if err != nil {
		t.Fatalf("Open() = %v, want accepted", err)
	}
	if got := <-gotSSID; !bytes.Equal(got, partnerSSID) {
		t.Errorf("internal server received %q, want the partner's SSID %q", got, partnerSSID)
	}
	if ra := ts.Opened().GetRemoteAddr(); ra != internal.addr() {
		t.Errorf("SessionOpened.remote_addr = %q, want the internal server %q", ra, internal.addr())
	}
	first, err := ts.ReadBuffer(ctx)
	if err != nil || oftp2.CommandCode(first[0]) != oftp2.CodeSSID {
		t.Fatalf("first buffer from the client = %q, %v; want the internal server's SSID (SSRM swallowed)", first, err)
	}
	sfid := append([]byte{'H'}, bytes.Repeat([]byte{' '}, 100)...) // only the code matters to the script
	if err := ts.WriteBuffer(ctx, sfid); err != nil {
		t.Fatal(err)
	}
	var codes []oftp2.CommandCode
	for {
		b, err := ts.ReadBuffer(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ReadBuffer() = %v, want buffers then EOF", err)
		}
		codes = append(codes, oftp2.CommandCode(b[0]))
	}
	if len(codes) != 2 || codes[0] != '2' || codes[1] != oftp2.CodeESID {
		t.Errorf("buffers after SSID = %v, want SFPA then ESID, then end of stream", codes)
	}
	ts.CloseWrite()
	select {
	case <-ts.Done():
	case <-ctx.Done():
		t.Fatal("session did not end after both half-closes")
	}
	if err := ts.Err(); err != nil {
		t.Errorf("session Err() = %v, want a clean end", err)
	}
}

// TestOpenRefused: refusals by the client's own checks and by an unreachable internal server,
// each with its reason and ESID; the client's checks fail before any connection inside.
func TestOpenRefused(t *testing.T) {
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer()
		r.ReadBuffer()
	})
	e := newEnv(t, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	tests := []struct {
		name    string
		partner string
		ssid    []byte
		reason  tunnelv1.AbortReason
		esid    uint32
	}{
		{"unknown partner", "O0013000000000STRANGER", ssid(t, "O0013000000000STRANGER", ""), tunnelv1.AbortReason_ABORT_REASON_REFUSED, 3},
		{"disabled partner", clienttest.DisabledPartnerID, ssid(t, clienttest.DisabledPartnerID, ""), tunnelv1.AbortReason_ABORT_REASON_REFUSED, 3},
		{"wrong password", clienttest.PartnerID, ssid(t, clienttest.PartnerID, "WRONG"), tunnelv1.AbortReason_ABORT_REASON_REFUSED, 4},
		{"SSID of another partner", clienttest.OtherPartnerID, ssid(t, clienttest.PartnerID, clienttest.PartnerPassword), tunnelv1.AbortReason_ABORT_REASON_REFUSED, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			_, err := conn.Open(ctx, tt.partner, "192.0.2.1:5000", tt.ssid)
			var ce *tunnel.CloseError
			if !errors.As(err, &ce) || !ce.Remote || ce.Reason != tt.reason || ce.ESID != tt.esid {
				t.Fatalf("Open() = %v, want refused by the client with %v and ESID %d", err, tt.reason, tt.esid)
			}
		})
	}
	if n := internal.connections(); n != 0 {
		t.Errorf("internal server saw %d connections, want none for refused partners", n)
	}
	if en := e.logged(client.EventPartnerRefused); en == nil {
		t.Error("no session_refused_by_client line")
	}

	// The internal server goes away: CONNECT_FAILED with ESID 08.
	internal.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	_, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(t, clienttest.PartnerID, clienttest.PartnerPassword))
	var ce *tunnel.CloseError
	if !errors.As(err, &ce) || ce.Reason != tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED || ce.ESID != 8 {
		t.Fatalf("Open() with the internal server down = %v, want CONNECT_FAILED with ESID 08", err)
	}
	if en := e.logged(client.EventInternalConnectFailed); en == nil {
		t.Error("no internal_connect_failed line")
	}
}

// endsWith runs a session against a scripted internal server, ends it with end, and returns the
// ESID the internal server received (nil for none) and whether its connection was closed after.
func endsWith(t *testing.T, end func(e *env, conn *clienttest.Conn, ts *tunnel.Session)) (*oftp2.ESID, bool) {
	t.Helper()
	type result struct {
		esid   *oftp2.ESID
		closed bool
	}
	results := make(chan result, 1)
	ready := make(chan struct{})
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer() // SSID
		w.WriteCommand(responderSSID)
		close(ready)
		var res result
		conn.SetReadDeadline(time.Now().Add(waitLong))
		b, err := r.ReadBuffer()
		if err == nil {
			if cmd, perr := oftp2.Parse(b, nil); perr == nil {
				res.esid, _ = cmd.(*oftp2.ESID)
			}
			_, err = r.ReadBuffer()
		}
		res.closed = errors.Is(err, io.EOF)
		results <- res
	})
	e := newEnv(t, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(t, clienttest.PartnerID, clienttest.PartnerPassword))
	if err != nil {
		t.Fatal(err)
	}
	<-ready
	if _, err := ts.ReadBuffer(ctx); err != nil { // the responder's SSID
		t.Fatal(err)
	}
	end(e, conn, ts)
	select {
	case r := <-results:
		return r.esid, r.closed
	case <-time.After(waitLong):
		for _, en := range e.hook.AllEntries() {
			t.Logf("%s %s %v", en.Level, en.Message, en.Data)
		}
		t.Fatal("the internal server's session did not end")
		return nil, false
	}
}

func TestAbortSendsESIDInside(t *testing.T) {
	tests := []struct {
		name string
		end  func(e *env, conn *clienttest.Conn, ts *tunnel.Session)
		want oftp2.ESIDReason
	}{
		{"protocol violation found by the DMZ", func(e *env, conn *clienttest.Conn, ts *tunnel.Session) {
			ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, 2, "DATA beyond credit")
		}, oftp2.ESIDProtocolViolation},
		{"server shutting down", func(e *env, conn *clienttest.Conn, ts *tunnel.Session) {
			ts.Abort(tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, 0, "")
		}, oftp2.ESIDLocalEmergency},
		{"tunnel lost", func(e *env, conn *clienttest.Conn, ts *tunnel.Session) { conn.Drop() }, oftp2.ESIDLocalEmergency},
		{"client shutting down", func(e *env, conn *clienttest.Conn, ts *tunnel.Session) { e.stop() }, oftp2.ESIDLocalEmergency},
		{"killed by an operator", func(e *env, conn *clienttest.Conn, ts *tunnel.Session) {
			list, err := e.client.Admin().Sessions(context.Background())
			if err != nil || len(list) != 1 || list[0].PartnerOdetteID != clienttest.PartnerID || list[0].State != "open" {
				t.Errorf("admin Sessions() = %+v, %v; want the one open session of %s", list, err, clienttest.PartnerID)
				return
			}
			if err := e.client.Admin().KillSession(context.Background(), list[0].ID, "test"); err != nil {
				t.Errorf("KillSession() = %v", err)
			}
			if err := e.client.Admin().KillSession(context.Background(), 9999, ""); !errors.Is(err, admin.ErrNotFound) {
				t.Errorf("KillSession(unknown) = %v, want admin.ErrNotFound", err)
			}
			<-ts.Done()
			var ce *tunnel.CloseError
			if !errors.As(ts.Err(), &ce) || ce.Reason != tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL || !ce.Remote {
				t.Errorf("server session Err() = %v, want ADMIN_KILL from the client", ts.Err())
			}
		}, oftp2.ESIDLocalEmergency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esid, closed := endsWith(t, tt.end)
			if esid == nil || esid.Reason != tt.want {
				t.Errorf("internal server received ESID %v, want reason %02d", esid, tt.want)
			}
			if !closed {
				t.Error("internal connection not closed after the ESID")
			}
		})
	}
}

// TestInternalLostAbortsSession: the internal server's connection breaks mid-session; the
// server side of the tunnel learns it as PEER_CLOSED.
func TestInternalLostAbortsSession(t *testing.T) {
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer()
		w.WriteCommand(responderSSID)
		r.ReadBuffer()                 // whatever the partner sends next
		conn.Write([]byte{0x10, 0x00}) // half a stream header, then the connection breaks
		conn.(*net.TCPConn).SetLinger(0)
	})
	e := newEnv(t, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(t, clienttest.PartnerID, clienttest.PartnerPassword))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.WriteBuffer(ctx, []byte{byte(oftp2.CodeCD)}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = ts.ReadBuffer(ctx); err != nil {
			break
		}
	}
	var ce *tunnel.CloseError
	if !errors.As(err, &ce) || ce.Reason != tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED || !ce.Remote {
		t.Errorf("server session ended with %v, want PEER_CLOSED from the client", err)
	}
}

func TestSessionLogLevel(t *testing.T) {
	block := make(chan struct{})
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer()
		<-block
	})
	defer close(block)
	e := newEnv(t, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(t, clienttest.PartnerID, clienttest.PartnerPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Abort(tunnelv1.AbortReason_ABORT_REASON_NORMAL, 0, "")
	b := e.client.Admin()
	list, _ := b.Sessions(ctx)
	if len(list) != 1 {
		t.Fatalf("Sessions() = %d sessions, want 1", len(list))
	}
	id := list[0].ID
	prev, err := b.SetLogLevel(ctx, id, tunnelv1.LogLevel_LOG_LEVEL_TRACE, "test")
	if err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED {
		t.Errorf("SetLogLevel(session, trace) = %v, %v; want UNSPECIFIED before", prev, err)
	}
	if list, _ := b.Sessions(ctx); list[0].LogLevel != tunnelv1.LogLevel_LOG_LEVEL_TRACE {
		t.Errorf("session log level = %v, want TRACE", list[0].LogLevel)
	}
	if prev, err := b.SetLogLevel(ctx, id, tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED, "test"); err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_TRACE {
		t.Errorf("SetLogLevel(session, unspecified) = %v, %v; want TRACE before", prev, err)
	}
	if list, _ := b.Sessions(ctx); list[0].LogLevel != tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED {
		t.Errorf("session log level = %v, want UNSPECIFIED (follows the process)", list[0].LogLevel)
	}
	if prev, err := b.SetLogLevel(ctx, 0, tunnelv1.LogLevel_LOG_LEVEL_WARN, "test"); err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_DEBUG {
		t.Errorf("SetLogLevel(process, warn) = %v, %v; want DEBUG before", prev, err)
	}
	if _, err := b.SetLogLevel(ctx, 9999, tunnelv1.LogLevel_LOG_LEVEL_WARN, "test"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("SetLogLevel(unknown session) = %v, want admin.ErrNotFound", err)
	}
}

// manyRevoked returns n revocation entries with large serial numbers, to make a big CRL.
func manyRevoked(n int) []pki.RevokedCert {
	out := make([]pki.RevokedCert, n)
	base := new(big.Int).Lsh(big.NewInt(1), 120)
	for i := range out {
		out[i] = pki.RevokedCert{SerialNumber: new(big.Int).Add(base, big.NewInt(int64(i)))}
	}
	return out
}
