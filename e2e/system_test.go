package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"smartproxy/admin"
	"smartproxy/client"
	"smartproxy/client/configfile"
	"smartproxy/internal/backoff"
	"smartproxy/internal/license"
	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server"
	"smartproxy/server/servertest"
	"smartproxy/tunnel/transport"
)

// waitTimeout bounds every wait of the tests for something the system does on its own.
const waitTimeout = 30 * time.Second

// logCapture is a logger whose entries a test can inspect.
type logCapture struct {
	log  *logrus.Logger
	hook *test.Hook
}

func newLogCapture() *logCapture {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.InfoLevel)
	return &logCapture{log: l, hook: test.NewLocal(l)}
}

// entries returns the entries with event name whose fields match every key/value of want.
func (c *logCapture) entries(name string, want map[string]string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range c.hook.AllEntries() {
		if e.Data["event"] != name {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(e.Data[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

// wait waits until an entry with event name and the fields of want is logged and returns it.
func (c *logCapture) wait(t testing.TB, who, name string, want map[string]string) *logrus.Entry {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if es := c.entries(name, want); len(es) > 0 {
			return es[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no event=%s with %v; its events: %s", who, name, want, c.summary())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// summary lists the event names logged so far with their counts.
func (c *logCapture) summary() string {
	counts := make(map[string]int)
	for _, e := range c.hook.AllEntries() {
		if n, ok := e.Data["event"].(string); ok {
			counts[n]++
		}
	}
	names := make([]string, 0, len(counts))
	for n, k := range counts {
		names = append(names, fmt.Sprintf("%s×%d", n, k))
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// system is the whole incoming path in-process: an internal OFTP2 responder that counts the
// connections it accepts, smartproxy-server (server.New/Run) with a license, and
// smartproxy-client (client.New/Run) with its configuration read from the fixture's JSON file
// by configfile.Loader, both over real mutual TLS on 127.0.0.1.
type system struct {
	fx        *fixture
	responder *servertest.Responder
	recvDir   string
	cfgPath   string

	server     *server.Server
	serverLog  *logCapture
	tunnelAddr string // the server's tunnel listener
	stopServer func()
	// serverConfig, if not nil, changes the configuration of every server startServer starts.
	serverConfig func(*server.Config)

	clientLog *logCapture         // shared by every client the test starts
	window    int                 // per-session tunnel window of the clients
	backoff   backoff.Exponential // reconnect backoff of the clients
	license   func(*license.License)

	mu     sync.Mutex
	client *runningClient // the client started last
}

// systemOptions tunes startSystem.
type systemOptions struct {
	// listen is the partner listen address of the configuration. If empty, a free port on
	// 127.0.0.1 is chosen (and kept, so that the address stays the same when the listener
	// closes and opens again).
	listen string
	// license, if not nil, changes the server's license before it is signed.
	license func(*license.License)
	// config, if not nil, changes the configuration file before it is written.
	config func(*configfile.File)
	// responder, if not nil, changes the internal responder's configuration.
	responder func(*endpoint.Config)
	// noClient starts no client.
	noClient bool
	// tunnelVia, if not nil, returns the address the client dials instead of the server's
	// tunnel port (a forwarder the test can cut).
	tunnelVia func(target string) string
	// window is the per-session tunnel window of both daemons in bytes. If zero, the tunnel's
	// default.
	window int
	// internalVia, if not nil, returns the internal server address of the configuration
	// instead of the responder's (a forwarder the test can pause).
	internalVia func(target string) string
	// server, if not nil, changes the server's configuration before it starts.
	server func(*server.Config)
	// backoff, if not nil, is the clients' reconnect backoff instead of the fast one of the
	// tests (20 ms doubling up to 200 ms).
	backoff *backoff.Exponential
}

// startSystem starts responder, server and (unless opts.noClient) client and waits until the
// partner listener is open. Everything stops when the test ends.
func startSystem(t testing.TB, fx *fixture, opts systemOptions) *system {
	t.Helper()
	s := &system{fx: fx, recvDir: t.TempDir(), serverLog: newLogCapture(), clientLog: newLogCapture(), window: opts.window, license: opts.license}
	rc := endpoint.Config{
		ID: companyID, Password: companyPassword, ReceiveDir: s.recvDir, Timeout: 30 * time.Second,
		Partners: map[string]oftp2.Password{partnerID: partnerPassword, healthyID: ""},
	}
	if opts.responder != nil {
		opts.responder(&rc)
	}
	s.responder = servertest.StartResponder(t, rc)

	if opts.listen == "" {
		opts.listen = testnet.ReserveAddr(t)
	}
	internal := s.responder.Addr
	if opts.internalVia != nil {
		internal = opts.internalVia(internal)
	}
	cf := fx.config(opts.listen, internal)
	if opts.config != nil {
		opts.config(&cf)
	}
	s.cfgPath = fx.writeConfig(t, cf)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.tunnelAddr = ln.Addr().String()
	s.serverConfig = opts.server
	s.backoff = backoff.Exponential{Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond}
	if opts.backoff != nil {
		s.backoff = *opts.backoff
	}
	s.startServer(t, ln)

	if !opts.noClient {
		addr := s.tunnelAddr
		if opts.tunnelVia != nil {
			addr = opts.tunnelVia(addr)
		}
		s.startClient(t, addr)
		s.waitListener(t, true)
	}
	return s
}

// startServer runs a new smartproxy-server on the tunnel listener ln until the test ends or
// s.stopServer is called.
func (s *system) startServer(t testing.TB, ln net.Listener) {
	t.Helper()
	cfg := server.Config{
		TunnelListener:    ln,
		TunnelCredentials: &transport.StaticCredentials{Cert: s.fx.TunnelServer.TLS, Pool: s.fx.TunnelCA.Pool()},
		ProxyID:           testProxyID,
		LicensePath:       writeLicense(t, t.TempDir(), testProxyID, s.license),
		Logger:            s.serverLog.log,
		Metrics:           prometheus.NewRegistry(),
		DrainTimeout:      2 * time.Second,
		ListenRetry:       50 * time.Millisecond,
		EventQueue:        4096,
		RefusalLogBurst:   -1, // the tests wait for every event; attack_test.go runs the default
		SessionWindow:     uint32(s.window),
	}
	if s.serverConfig != nil {
		s.serverConfig(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	s.server = srv
	s.stopServer = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server.Run() = %v, want nil", err)
			}
		})
	}
	t.Cleanup(s.stopServer)
}

// runningClient is one in-process smartproxy-client.
type runningClient struct {
	c      *client.Client
	health *admin.Health // the client's health service (the tunnel part)
	stop   func()        // cancels Run and waits for it (idempotent)
}

// startClient loads the configuration file as smartproxy-client --config does and runs a
// client against tunnelAddr until the test ends or its stop is called.
func (s *system) startClient(t testing.TB, tunnelAddr string) *runningClient {
	t.Helper()
	loader, err := configfile.NewLoader(s.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := loader.Load()
	if err != nil {
		t.Fatalf("the client refused the configuration file: %v", err)
	}
	return s.startClientWith(t, tunnelAddr, res.Snapshot)
}

// startClientWith runs a client with the configuration snap against tunnelAddr until the test
// ends or its stop is called.
func (s *system) startClientWith(t testing.TB, tunnelAddr string, snap *client.Snapshot) *runningClient {
	t.Helper()
	health := admin.NewHealth(s.clientLog.log, admin.HealthClientTunnel)
	c, err := client.New(client.Config{
		Health:          health,
		Servers:         []string{tunnelAddr},
		ServerName:      "localhost",
		Credentials:     &transport.StaticCredentials{Cert: s.fx.TunnelClient.TLS, Pool: s.fx.TunnelCA.Pool()},
		Config:          snap,
		Logger:          s.clientLog.log,
		Metrics:         prometheus.NewRegistry(),
		Backoff:         s.backoff,
		ShutdownTimeout: 5 * time.Second,
		Window:          s.window,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	rc := &runningClient{c: c, health: health, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("client.Run() = %v, want nil", err)
			}
		})
	}}
	t.Cleanup(rc.stop)
	s.mu.Lock()
	s.client = rc
	s.mu.Unlock()
	return rc
}

// waitListener waits until the partner listener is open (or closed) and returns its address.
func (s *system) waitListener(t testing.TB, open bool) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		addr := s.server.PartnerAddr()
		if (addr != "") == open {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("partner listener open = %t, want %t; server events: %s", addr != "", open, s.serverLog.summary())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// partnerAddr returns the open partner listener's address.
func (s *system) partnerAddr(t testing.TB) string {
	t.Helper()
	return s.waitListener(t, true)
}

// securityEvent waits for the security event name about the partner connection from local
// (its address as the server sees it) in the server's log and, as an Event frame, in the
// client's log, and returns both entries. want adds fields both must carry.
func (s *system) securityEvent(t testing.TB, name, local string, want map[string]string) (serverEntry, clientEntry *logrus.Entry) {
	t.Helper()
	sw := map[string]string{"remote_addr": local}
	cw := map[string]string{"remote_addr": local, "source": "server"}
	for k, v := range want {
		sw[k], cw[k] = v, v
	}
	serverEntry = s.serverLog.wait(t, "the server", name, sw)
	if serverEntry.Level != logrus.WarnLevel {
		t.Errorf("server event %s logged at %s, want warning", name, serverEntry.Level)
	}
	clientEntry = s.clientLog.wait(t, "the client", name, cw)
	return serverEntry, clientEntry
}

// responderResults waits until the responder has finished n sessions and returns them.
func (s *system) responderResults(t testing.TB, n int) []servertest.ResponderResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := s.responder.WaitResults(ctx, n)
	if err != nil {
		t.Fatalf("the responder finished %d sessions, want %d: %v", len(s.responder.Results()), n, err)
	}
	return res
}

// finalFiles lists the regular files under the responder's receive directory outside its
// .oftp2 state directory: the files delivered under their final names.
func (s *system) finalFiles(t testing.TB) []string {
	t.Helper()
	return finalFiles(t, s.recvDir)
}

func finalFiles(t testing.TB, dir string) []string {
	t.Helper()
	out, err := listFinal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// listFinal is finalFiles without the test, for goroutines other than the test's.
func listFinal(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Name() == ".oftp2" || !e.Type().IsRegular() {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out, nil
}

// isRefused reports whether err is a refused TCP connection.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
