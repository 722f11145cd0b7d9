package clienttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

// Server plays the DMZ server's side of the tunnel for tests of smartproxy-client: a real
// transport.Server with mutual TLS on 127.0.0.1 and a tunnel.Mux per stream. It answers Hello
// with Welcome, reassembles and records every configuration the client pushes and answers it
// with ConfigApplied, and lets the test open incoming sessions (Conn.Open, Bridge) and drop
// tunnels.
type Server struct {
	// Addr is the tunnel listener's address, "127.0.0.1:port".
	Addr string
	// ClientCredentials are a client certificate of the server's tunnel CA, for the client.
	ClientCredentials *transport.StaticCredentials
	// CA is the tunnel CA.
	CA *pki.CA
	// ClientLeaf is the certificate of ClientCredentials, with its PEM forms.
	ClientLeaf *pki.Leaf

	cfg ServerConfig
	srv *transport.Server
	wg  sync.WaitGroup

	outgoing atomic.Int64 // outgoing sessions the client opened (each refused)

	mu             sync.Mutex
	welcomeVersion uint64 // Welcome.config_version for the next connections
	conns          chan *Conn
	closed         bool
}

// ServerConfig configures a Server. Every field is optional.
type ServerConfig struct {
	// ProxyID is sent in Welcome. If empty, "TEST-PROXY".
	ProxyID string
	// License is sent in Welcome. If nil, a valid license for ProxyID.
	License *tunnelv1.LicenseStatus
	// Check, if not nil, decides the ConfigApplied answer of a complete configuration: the
	// errors it returns refuse the version. If nil, every version is applied.
	Check func(*tunnelv1.ConfigSnapshot) []*tunnelv1.ConfigError
	// Logger receives the server's log. If nil, nothing is logged.
	Logger logrus.FieldLogger
	// CA is the tunnel CA. If nil, a new one. Servers that share a CA accept each other's
	// ClientCredentials: one client connected to several servers.
	CA *pki.CA
}

// NewServer starts a Server on 127.0.0.1. It is stopped by t.Cleanup.
func NewServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.ProxyID == "" {
		cfg.ProxyID = "TEST-PROXY"
	}
	if cfg.License == nil {
		cfg.License = &tunnelv1.LicenseStatus{ProxyId: cfg.ProxyID, Valid: true}
	}
	if cfg.Logger == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		cfg.Logger = l
	}
	ca := cfg.CA
	if ca == nil {
		var err error
		if ca, err = pki.NewCA("Test tunnel CA"); err != nil {
			t.Fatal(err)
		}
	}
	srvLeaf, err := ca.Issue(pki.Request{CommonName: "smartproxy-server", DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	cliLeaf, err := ca.Issue(pki.Request{CommonName: "test-client", DNSNames: []string{"test-client"}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		CA:                ca,
		ClientCredentials: &transport.StaticCredentials{Cert: cliLeaf.TLS, Pool: ca.Pool()},
		ClientLeaf:        cliLeaf,
		cfg:               cfg,
		conns:             make(chan *Conn, 16),
	}
	s.srv, err = transport.NewServer(transport.ServerConfig{
		Credentials: &transport.StaticCredentials{Cert: srvLeaf.TLS, Pool: ca.Pool()},
		OnStream:    s.handle,
		Logger:      cfg.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(ln)
	}()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its goroutines. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.srv.Close()
	s.wg.Wait()
}

// WriteClientFiles writes the client's tunnel certificate, key and the tunnel CA as PEM files
// into dir and returns their paths, for a smartproxy-client process.
func (s *Server) WriteClientFiles(t testing.TB, dir string) (cert, key, ca string) {
	t.Helper()
	cert, key, ca = filepath.Join(dir, "tunnel-client.pem"), filepath.Join(dir, "tunnel-client-key.pem"), filepath.Join(dir, "tunnel-ca.pem")
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{cert, s.ClientLeaf.CertPEM, pki.CertFileMode}, {key, s.ClientLeaf.KeyPEM, pki.KeyFileMode}, {ca, s.CA.CertPEM, pki.CertFileMode}} {
		if err := pki.WriteFile(f.path, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// SetWelcomeVersion sets the configuration version the server claims to hold in the Welcome of
// later connections (0: none, as after a restart).
func (s *Server) SetWelcomeVersion(v uint64) {
	s.mu.Lock()
	s.welcomeVersion = v
	s.mu.Unlock()
}

// WaitConn returns the next tunnel stream that completed Hello/Welcome, or fails the test after
// timeout.
func (s *Server) WaitConn(t testing.TB, timeout time.Duration) *Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(timeout):
		t.Fatalf("no tunnel stream within %v", timeout)
		return nil
	}
}

// Conn is one tunnel stream of the client, seen from the server.
type Conn struct {
	// Hello is the client's Hello.
	Hello *tunnelv1.Hello
	// Mux is the stream's multiplexer.
	Mux *tunnel.Mux
	// Peer is the client's verified identity.
	Peer transport.PeerInfo

	srv      *Server
	cancel   context.CancelFunc
	done     chan struct{}
	configs  chan *tunnelv1.ConfigSnapshot
	licenses chan []byte

	mu      sync.Mutex // guards the fields below; owned by the Control callback otherwise
	pending *tunnelv1.ConfigSnapshot
	parts   map[string][]byte // chunked CRLs being reassembled, by id
	applied uint64
}

// handle runs one Connect stream (transport.ServerStreamHandler).
func (s *Server) handle(ctx context.Context, peer transport.PeerInfo, stream transport.ConnectServer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	welcomeVersion := s.welcomeVersion
	s.mu.Unlock()
	c := &Conn{Peer: peer, srv: s, cancel: cancel, done: make(chan struct{}), configs: make(chan *tunnelv1.ConfigSnapshot, 16),
		licenses: make(chan []byte, 16),
		parts:    make(map[string][]byte), applied: welcomeVersion}
	defer close(c.done)
	hello := make(chan *tunnelv1.Hello, 1)
	var helloOnce sync.Once
	mux, err := tunnel.New(transport.ServerStream(stream), tunnel.Config{
		Side:   tunnel.SideServer,
		Logger: s.cfg.Logger,
		// Outgoing sessions are counted and refused: the harness dials no partner.
		Accept: func(sess *tunnel.Session) {
			s.outgoing.Add(1)
			sess.Reject(tunnelv1.AbortReason_ABORT_REASON_REFUSED, uint32(oftp2.ESIDResourcesNotAvailable), "clienttest dials no partner")
		},
		Control: func(f *tunnelv1.Frame) {
			if h := f.GetHello(); h != nil {
				helloOnce.Do(func() { hello <- h })
				return
			}
			c.control(f)
		},
	})
	if err != nil {
		return err
	}
	c.Mux = mux
	// Run reads with the stream's own context, which ends only when this handler returns; the
	// Server waits for it.
	runDone := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		runDone <- mux.Run(ctx)
	}()
	select {
	case c.Hello = <-hello:
	case err := <-runDone:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("clienttest: no Hello")
	}
	// As the real server: the capabilities both sides have, in use from the Welcome on.
	mux.UsePeerCapabilities(c.Hello.GetCapabilities())
	w := &tunnelv1.Welcome{ProxyId: s.cfg.ProxyID, ServerVersion: "clienttest", ProtocolVersion: 1, License: s.cfg.License,
		SessionWindow: uint32(mux.Window()), ConfigVersion: welcomeVersion, Capabilities: tunnel.CommonCapabilities(c.Hello.GetCapabilities())}
	if err := mux.SendControl(ctx, &tunnelv1.Frame{Kind: &tunnelv1.Frame_Welcome{Welcome: w}}); err != nil {
		return err
	}
	select {
	case s.conns <- c:
	case <-ctx.Done():
	}
	select {
	case err = <-runDone:
	case <-ctx.Done():
		// Dropped: returning ends the gRPC stream at once, as a lost connection would.
		err = errors.New("clienttest: tunnel dropped")
	}
	return err
}

// control handles the client's configuration and license frames.
func (c *Conn) control(f *tunnelv1.Frame) {
	switch k := f.GetKind().(type) {
	case *tunnelv1.Frame_ConfigSnapshot:
		c.mu.Lock()
		c.pending = proto.Clone(k.ConfigSnapshot).(*tunnelv1.ConfigSnapshot)
		c.parts = make(map[string][]byte)
		c.mu.Unlock()
		c.tryComplete()
	case *tunnelv1.Frame_LicenseUpdate:
		select {
		case c.licenses <- k.LicenseUpdate.GetLicense():
		default:
		}
	case *tunnelv1.Frame_ConfigChunk:
		ch := k.ConfigChunk
		c.mu.Lock()
		if c.pending != nil && c.pending.GetVersion() == ch.GetVersion() && uint64(len(c.parts[ch.GetCrlId()])) == ch.GetOffset() {
			c.parts[ch.GetCrlId()] = append(c.parts[ch.GetCrlId()], ch.GetData()...)
		} else {
			c.pending = nil // a gap or a stray chunk: the version can never complete
		}
		c.mu.Unlock()
		c.tryComplete()
	}
}

// tryComplete applies the pending configuration once every chunked CRL has all its bytes. It
// runs on the stream's reading goroutine; the ConfigApplied answer is sent from a goroutine so
// that the reader never blocks.
func (c *Conn) tryComplete() {
	c.mu.Lock()
	p := c.pending
	if p == nil {
		c.mu.Unlock()
		return
	}
	var errs []*tunnelv1.ConfigError
	for i, crl := range p.GetConfig().GetCrls() {
		if crl.GetSize() == 0 {
			continue
		}
		data := c.parts[crl.GetId()]
		if uint64(len(data)) < crl.GetSize() {
			c.mu.Unlock()
			return // more chunks to come
		}
		sum := sha256.Sum256(data)
		if uint64(len(data)) != crl.GetSize() || !bytes.Equal(sum[:], crl.GetSha256()) {
			errs = append(errs, &tunnelv1.ConfigError{Field: fmt.Sprintf("crls[%d]", i), Message: "reassembled CRL does not match its size and sha256"})
		}
		crl.Der, crl.Size = data, 0
	}
	c.pending = nil
	if len(errs) == 0 && c.srv.cfg.Check != nil {
		errs = c.srv.cfg.Check(p)
	}
	if len(errs) == 0 && p.GetVersion() <= c.applied {
		errs = append(errs, &tunnelv1.ConfigError{Field: "version", Message: fmt.Sprintf("%d is not higher than %d, the version in force", p.GetVersion(), c.applied)})
	}
	ok := len(errs) == 0
	if ok {
		c.applied = p.GetVersion()
	}
	c.mu.Unlock()
	select {
	case c.configs <- p:
	default:
	}
	answer := &tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigApplied{ConfigApplied: &tunnelv1.ConfigApplied{Version: p.GetVersion(), Ok: ok, Errors: errs}}}
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		c.Mux.SendControl(context.Background(), answer) // ends with the Mux at the latest
	}()
}

// WaitConfig returns the next complete configuration the client pushed on this stream (CRLs
// reassembled), or fails the test after timeout.
func (c *Conn) WaitConfig(t testing.TB, timeout time.Duration) *tunnelv1.ConfigSnapshot {
	t.Helper()
	select {
	case p := <-c.configs:
		return p
	case <-time.After(timeout):
		t.Fatalf("no configuration on tunnel %d within %v", c.Hello.GetTunnelIndex(), timeout)
		return nil
	}
}

// Licenses returns the channel of license files the client pushed on this stream
// (LicenseUpdate).
func (c *Conn) Licenses() <-chan []byte { return c.licenses }

// Configs returns the channel of complete configurations received on this stream.
func (c *Conn) Configs() <-chan *tunnelv1.ConfigSnapshot { return c.configs }

// Applied returns the configuration version in force on this stream.
func (c *Conn) Applied() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

// Open opens an incoming session for partner with the partner's SSID buffer and waits for the
// client's SessionOpened. A refusal is a *tunnel.CloseError.
func (c *Conn) Open(ctx context.Context, partner, remoteAddr string, ssid []byte) (*tunnel.Session, error) {
	return c.Mux.Open(ctx, &tunnelv1.SessionOpen{
		Direction:       tunnelv1.Direction_DIRECTION_INCOMING,
		PartnerOdetteId: partner,
		RemoteAddr:      remoteAddr,
		Tls:             &tunnelv1.TlsInfo{Version: "TLS 1.3", PeerSubject: "CN=partner.test"},
		Ssid:            ssid,
	})
}

// Send sends a control frame (Event, CrlUrlReport, LicenseStatus, Drain) to the client.
func (c *Conn) Send(ctx context.Context, f *tunnelv1.Frame) error { return c.Mux.SendControl(ctx, f) }

// Drop ends the stream abruptly, as a lost connection does, and waits until its handler has
// returned.
func (c *Conn) Drop() {
	c.cancel()
	<-c.done
}

// Done is closed when the stream has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// ProxyID returns the Proxy ID the server sends in Welcome.
func (s *Server) ProxyID() string { return s.cfg.ProxyID }

// Outgoing returns how many outgoing sessions the client opened on this server (all refused).
func (s *Server) Outgoing() int { return int(s.outgoing.Load()) }
