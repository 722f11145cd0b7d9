package server

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

const testProxyID = "SPX-0000-0000-0000-00T1"

// env is a running Server with a test client connected over the real tunnel transport and an
// internal OFTP2 responder behind the client.
type env struct {
	s         *Server
	pki       *servertest.PKI
	hook      *test.Hook
	reg       *prometheus.Registry
	client    *servertest.Client
	responder *servertest.Responder
	recvDir   string
	licPath   string
	tunnel    string // tunnel address
	stop      func() // stops the server (idempotent)
}

// envOptions tunes newEnv.
type envOptions struct {
	noLicense bool                                           // start without a license file
	noClient  bool                                           // do not start the test client
	refuse    func(*tunnelv1.SessionOpen) *tunnel.CloseError // the client refuses matching sessions
	config    func(*Config)                                  // changes the server configuration
	responder func(*endpoint.Config)                         // changes the responder configuration
	logLevel  logrus.Level                                   // if zero, debug
}

// newEnv starts a server and, unless opts.noClient, a client that pushes cfg as version 1 and
// waits until it is applied.
func newEnv(t testing.TB, p *servertest.PKI, cfg *tunnelv1.SecurityConfig, opts envOptions) *env {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	if opts.logLevel == 0 {
		opts.logLevel = logrus.DebugLevel
	}
	log.SetLevel(opts.logLevel)
	hook := test.NewLocal(log)
	t.Cleanup(func() {
		if t.Failed() {
			for _, en := range hook.AllEntries() {
				line, _ := en.String()
				t.Log(strings.TrimSpace(line))
			}
		}
	})
	tunnelLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{pki: p, hook: hook, reg: prometheus.NewRegistry(), tunnel: tunnelLn.Addr().String()}
	e.licPath = filepath.Join(t.TempDir(), "license")
	if !opts.noLicense {
		writeTestLicense(t, e.licPath, testProxyID)
	}
	sc := Config{
		TunnelListener:    tunnelLn,
		TunnelCredentials: &transport.StaticCredentials{Cert: p.TunnelServer.TLS, Pool: p.TunnelCA.Pool()},
		ProxyID:           testProxyID,
		LicensePath:       e.licPath,
		Logger:            log,
		Metrics:           e.reg,
		DrainTimeout:      2 * time.Second,
		ListenRetry:       100 * time.Millisecond,
		EventQueue:        4096,
		RefusalLogBurst:   -1, // tests count every event; refusals_test.go covers the summaries
	}
	if opts.config != nil {
		opts.config(&sc)
	}
	e.s, err = New(sc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.s.Run(ctx) }()
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}
	t.Cleanup(e.stop)

	e.recvDir = t.TempDir()
	rc := endpoint.Config{ID: "O0013COMPANY", ReceiveDir: e.recvDir, Timeout: 20 * time.Second}
	if opts.responder != nil {
		opts.responder(&rc)
	}
	e.responder = servertest.StartResponder(t, rc)
	if !opts.noClient {
		e.client = e.startClient(t, opts.refuse)
		if cfg != nil {
			e.client.PushConfig(1, cfg)
			if a := e.client.WaitApplied(t, 1); !a.GetOk() {
				t.Fatalf("configuration refused: %v", a.GetErrors())
			}
			e.waitListener(t, true)
		}
	}
	return e
}

// startClient starts a (further) test client against the server.
func (e *env) startClient(t testing.TB, refuse func(*tunnelv1.SessionOpen) *tunnel.CloseError) *servertest.Client {
	t.Helper()
	c := servertest.StartClient(t, servertest.ClientConfig{Addr: e.tunnel, PKI: e.pki, Responder: e.responder.Addr, Refuse: refuse})
	c.WaitWelcome(t)
	return c
}

// waitListener waits until the partner listener is open (or closed) and returns its address.
func (e *env) waitListener(t testing.TB, open bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		addr := e.s.PartnerAddr()
		if (addr != "") == open {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("partner listener open = %v, want %v", addr != "", open)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logEntry waits for the log entry with event name accepted by match.
func (e *env) logEntry(t testing.TB, name string, match func(*logrus.Entry) bool) *logrus.Entry {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, en := range e.hook.AllEntries() {
			if en.Data["event"] == name && (match == nil || match(en)) {
				return en
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log entry with event=%s; events: %v", name, eventNames(e.hook))
		}
		time.Sleep(5 * time.Millisecond)
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

func countEvents(h *test.Hook, name string) int {
	n := 0
	for _, en := range h.AllEntries() {
		if en.Data["event"] == name {
			n++
		}
	}
	return n
}

func writeTestLicense(t testing.TB, path, proxyID string) {
	t.Helper()
	key, keyID := devkey.SigningKey()
	file, err := license.Sign(license.License{ProxyID: proxyID, Customer: "test", NotAfter: time.Now().Add(24 * time.Hour)}, key, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits until cond holds, failing t after 20 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
