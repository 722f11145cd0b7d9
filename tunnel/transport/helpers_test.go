package transport

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/tunnel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests. It is a safety net, never a
// pass/fail criterion of timing.
const testTimeout = 30 * time.Second

// testPKI is a tunnel CA with one server and one client certificate.
type testPKI struct {
	ca     *pki.CA
	server *pki.Leaf
	client *pki.Leaf
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("Test tunnel CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(pki.Request{CommonName: "smartproxy-server", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(pki.Request{CommonName: "smartproxy-client", Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, server: server, client: client}
}

// identityFiles are the three files of a CertSource.
type identityFiles struct {
	cert, key, ca string
}

// writeIdentity writes leaf and ca into dir under prefix and returns the
// paths.
func writeIdentity(t *testing.T, dir, prefix string, leaf *pki.Leaf, ca *pki.CA) identityFiles {
	t.Helper()
	f := identityFiles{
		cert: filepath.Join(dir, prefix+".pem"),
		key:  filepath.Join(dir, prefix+"-key.pem"),
		ca:   filepath.Join(dir, prefix+"-ca.pem"),
	}
	if err := pki.WriteCertFile(f.cert, leaf.CertPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(f.key, leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCertFile(f.ca, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	return f
}

func newSource(t *testing.T, f identityFiles, log logrus.FieldLogger) *CertSource {
	t.Helper()
	s, err := NewCertSource(CertSourceConfig{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca, Logger: log})
	if err != nil {
		t.Fatalf("NewCertSource = %v", err)
	}
	return s
}

func static(leaf *pki.Leaf, ca *pki.CA) *StaticCredentials {
	return &StaticCredentials{Cert: leaf.TLS, Pool: ca.Pool()}
}

// newLogger returns a logger at DEBUG whose entries the hook records.
func newLogger(t *testing.T) (*logrus.Logger, *logtest.Hook) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return l, hook
}

// waitEntry waits until the hook holds an entry matching match and returns
// it. It fails the test after testTimeout.
func waitEntry(t *testing.T, hook *logtest.Hook, what string, match func(*logrus.Entry) bool) *logrus.Entry {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		for _, e := range hook.AllEntries() {
			if match(e) {
				return e
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log entry %s within %v; entries:\n%s", what, testTimeout, dumpEntries(hook))
	return nil
}

func countEntries(hook *logtest.Hook, match func(*logrus.Entry) bool) int {
	n := 0
	for _, e := range hook.AllEntries() {
		if match(e) {
			n++
		}
	}
	return n
}

func dumpEntries(hook *logtest.Hook) string {
	var s string
	for _, e := range hook.AllEntries() {
		line, _ := e.String()
		s += line
	}
	return s
}

func isRejection(reason string) func(*logrus.Entry) bool {
	return func(e *logrus.Entry) bool {
		return e.Data["event"] == EventClientRejected && e.Data["reason"] == reason
	}
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// runServer starts srv on a loopback listener and stops it at cleanup.
func runServer(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// echoHandler answers every Ping with a Pong until the stream ends.
func echoHandler(ctx context.Context, _ PeerInfo, s ConnectServer) error {
	// A multiplexer answers Ping with Pong and sends the server's Drain frames.
	mux, err := tunnel.New(ServerStream(s), tunnel.Config{Side: tunnel.SideServer, ReconcileInterval: -1, PingInterval: -1})
	if err != nil {
		return err
	}
	return mux.Run(ctx)
}

// clientStreamHandle is one stream handed to a test by collectingHandler.
type clientStreamHandle struct {
	index  int
	peer   PeerInfo
	stream ConnectClient
	end    chan error // the test sends the handler's result here
}

// collectingHandler hands every client stream to the test through ch and
// returns when the test sends to its end channel or ctx ends.
func collectingHandler(ch chan<- *clientStreamHandle) ClientStreamHandler {
	return func(ctx context.Context, index int, p PeerInfo, s ConnectClient) error {
		h := &clientStreamHandle{index: index, peer: p, stream: s, end: make(chan error, 1)}
		select {
		case ch <- h:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-h.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func receiveHandle(t *testing.T, ch <-chan *clientStreamHandle) *clientStreamHandle {
	t.Helper()
	select {
	case h := <-ch:
		return h
	case <-time.After(testTimeout):
		t.Fatalf("no client stream within %v", testTimeout)
		return nil
	}
}

// ping sends a Ping on a client stream and waits for its Pong.
func ping(t *testing.T, s ConnectClient, nonce uint64) error {
	t.Helper()
	if err := s.Send(&tunnelv1.ConnectRequest{Frame: &tunnelv1.Frame{Kind: &tunnelv1.Frame_Ping{Ping: &tunnelv1.Ping{Nonce: nonce}}}}); err != nil {
		return err
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		if p := m.GetFrame().GetPong(); p != nil {
			if p.Nonce != nonce {
				t.Errorf("Pong nonce = %d, want %d", p.Nonce, nonce)
			}
			return nil
		}
	}
}

// runClient runs c until cleanup.
func runClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Client.Run() = %v, want context.Canceled", err)
		}
	})
}

// forwarder is a loopback TCP relay between a client and a server whose
// sockets the test can cut.
type forwarder struct {
	ln     net.Listener
	target string

	frozen atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, target: target}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.close)
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", f.target)
		if err != nil {
			in.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, in, out)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(in, out)
		go f.pipe(out, in)
	}
}

func (f *forwarder) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if f.frozen.Load() {
			// A dead path passes nothing on, not even a close: dst stays
			// open until cut or close.
			if err != nil {
				return
			}
			continue
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// freeze makes the relay drop everything while keeping both TCP connections
// open: a path that died without a FIN or RST, which only keepalive notices.
func (f *forwarder) freeze() { f.frozen.Store(true) }

// thaw makes the relay forward again (for connections made afterwards).
func (f *forwarder) thaw() { f.frozen.Store(false) }

// cut closes both sockets of every relayed connection.
func (f *forwarder) cut() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.conns) / 2
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
	return n
}

func (f *forwarder) close() {
	f.ln.Close()
	f.cut()
	f.wg.Wait()
}

// replaceFile overwrites path atomically with data.
func replaceFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := pki.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
