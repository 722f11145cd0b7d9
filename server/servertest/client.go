package servertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"

	"smartproxy/bridge"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/backoff"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

// ClientConfig configures a test Client.
type ClientConfig struct {
	// Addr is the server's tunnel address. Required.
	Addr string
	// PKI provides the tunnel client certificate and CA. Required.
	PKI *PKI
	// Responder is the address of the internal OFTP2 server (plain TCP) that incoming
	// sessions are relayed to. If empty, every session is refused with CONNECT_FAILED.
	Responder string
	// ClientID is sent in Hello. If empty, "servertest-client".
	ClientID string
	// Refuse, if not nil, is asked for every SessionOpen before connecting inside; a non-nil
	// result refuses the session with that reason, ESID and text.
	Refuse func(*tunnelv1.SessionOpen) *tunnel.CloseError
	// Logger receives the client's log. If nil, logs are discarded.
	Logger logrus.FieldLogger
	// Capabilities are announced in Hello; the client batches data once the Welcome names
	// tunnel.CapabilityDataBatches. If nil, none: the client speaks as one without them.
	Capabilities []string
}

// Client plays smartproxy-client against a real smartproxy-server with the real tunnel
// transport and multiplexer: it sends Hello, pushes configurations, records every frame the
// server sends, and relays incoming sessions to an internal OFTP2 server the way the real
// client does (the internal server's SSRM is checked and consumed, the SSID from SessionOpen is
// written, ESIDs follow aborts). Its methods are safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	ctx    context.Context // ends at Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every recorded change
	mux       *tunnel.Mux   // current stream's mux; nil when disconnected
	welcome   *tunnelv1.Welcome
	version   uint64
	config    *tunnelv1.SecurityConfig
	applied   []*tunnelv1.ConfigApplied
	mark      int // applied entries before the last PushConfig
	events    []*tunnelv1.Event
	crlURLs   [][]string
	licenses  []*tunnelv1.LicenseStatus
	drains    []*tunnelv1.Drain
	opens     []*tunnelv1.SessionOpen
	connects  int // streams established
	sessionWG sync.WaitGroup
}

// StartClient starts a client that keeps one tunnel stream to cfg.Addr up until the test ends
// (or Stop). It fails tb on a configuration error.
func StartClient(tb testing.TB, cfg ClientConfig) *Client {
	tb.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID = "servertest-client"
	}
	if cfg.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Logger = l
	}
	c := &Client{cfg: cfg, changed: make(chan struct{})}
	tc, err := transport.NewClient(transport.ClientConfig{
		Address:     cfg.Addr,
		ServerName:  "localhost",
		Credentials: &transport.StaticCredentials{Cert: cfg.PKI.TunnelClient.TLS, Pool: cfg.PKI.TunnelCA.Pool()},
		OnStream:    c.runStream,
		Backoff:     backoff.Exponential{Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond},
		Logger:      cfg.Logger,
	})
	if err != nil {
		tb.Fatalf("servertest.StartClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx, c.cancel = ctx, cancel
	c.wg.Add(1)
	go func() { defer c.wg.Done(); tc.Run(ctx) }()
	tb.Cleanup(c.Stop)
	return c
}

// Stop closes the tunnel and waits until every goroutine of the client has ended. It is
// idempotent.
func (c *Client) Stop() {
	c.cancel()
	c.wg.Wait()
	c.sessionWG.Wait()
}

// notify wakes waiters; c.mu is held.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// runStream runs one tunnel stream: mux, Hello, Welcome, the current configuration.
func (c *Client) runStream(ctx context.Context, index int, _ transport.PeerInfo, stream transport.ConnectClient) error {
	mux, err := tunnel.New(transport.ClientStream(stream), tunnel.Config{
		Side:    tunnel.SideClient,
		Logger:  c.cfg.Logger,
		Control: c.control,
		Accept:  c.accept,
	})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- mux.Run(ctx) }()
	c.mu.Lock()
	version := c.version
	c.mu.Unlock()
	hello := &tunnelv1.Frame{Kind: &tunnelv1.Frame_Hello{Hello: &tunnelv1.Hello{
		ProtocolVersion: 1, ClientId: c.cfg.ClientID, SoftwareVersion: "servertest", TunnelIndex: uint32(index), ConfigVersion: version,
		Capabilities: c.cfg.Capabilities,
	}}}
	// The mux is current before Hello goes out, so that the Welcome (and with it the
	// configuration push) always finds it.
	c.mu.Lock()
	c.mux = mux
	c.connects++
	c.notifyLocked()
	c.mu.Unlock()
	mux.SendControl(ctx, hello) // a failure ends the stream, and Run with it
	err = <-runErr
	c.mu.Lock()
	if c.mux == mux {
		c.mux = nil
		c.welcome = nil
	}
	c.notifyLocked()
	c.mu.Unlock()
	return err
}

// control records a control frame from the server; a Welcome triggers the configuration push.
func (c *Client) control(f *tunnelv1.Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notifyLocked()
	switch k := f.GetKind().(type) {
	case *tunnelv1.Frame_Welcome:
		c.welcome = k.Welcome
		if c.mux != nil {
			c.mux.UsePeerCapabilities(k.Welcome.GetCapabilities())
		}
		if c.config != nil && c.mux != nil {
			c.pushLocked()
		}
	case *tunnelv1.Frame_ConfigApplied:
		c.applied = append(c.applied, k.ConfigApplied)
	case *tunnelv1.Frame_Event:
		c.events = append(c.events, k.Event)
	case *tunnelv1.Frame_CrlUrlReport:
		c.crlURLs = append(c.crlURLs, k.CrlUrlReport.GetUrls())
	case *tunnelv1.Frame_LicenseStatus:
		c.licenses = append(c.licenses, k.LicenseStatus)
	case *tunnelv1.Frame_Drain:
		c.drains = append(c.drains, k.Drain)
	}
}

// pushLocked sends the current configuration on the current stream without blocking the
// caller (the mux's reader may be the caller). c.mu is held.
func (c *Client) pushLocked() {
	mux := c.mux
	f := &tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigSnapshot{ConfigSnapshot: &tunnelv1.ConfigSnapshot{
		Version: c.version, Config: proto.Clone(c.config).(*tunnelv1.SecurityConfig),
	}}}
	c.sessionWG.Add(1)
	go func() {
		defer c.sessionWG.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mux.SendControl(ctx, f)
	}()
}

// PushConfig makes cfg version the client's configuration and sends it now (when connected)
// and after every reconnect.
func (c *Client) PushConfig(version uint64, cfg *tunnelv1.SecurityConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version, c.config = version, proto.Clone(cfg).(*tunnelv1.SecurityConfig)
	c.mark = len(c.applied)
	if c.mux != nil && c.welcome != nil {
		c.pushLocked()
	}
}

// Send sends a control frame (a LicenseUpdate, a raw ConfigChunk) on the current stream.
func (c *Client) Send(ctx context.Context, f *tunnelv1.Frame) error {
	c.mu.Lock()
	mux := c.mux
	c.mu.Unlock()
	if mux == nil {
		return errors.New("servertest: not connected")
	}
	return mux.SendControl(ctx, f)
}

// wait waits until cond (called with c.mu held) is true, failing tb after timeout.
func (c *Client) wait(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		ok := cond()
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			tb.Fatalf("servertest: timed out waiting for %s", what)
		}
	}
}

// WaitWelcome waits until a stream is up and returns the server's Welcome.
func (c *Client) WaitWelcome(tb testing.TB) *tunnelv1.Welcome {
	tb.Helper()
	var w *tunnelv1.Welcome
	c.wait(tb, 20*time.Second, "Welcome", func() bool { w = c.welcome; return w != nil })
	return w
}

// WaitDisconnected waits until no stream is up.
func (c *Client) WaitDisconnected(tb testing.TB) {
	tb.Helper()
	c.wait(tb, 20*time.Second, "the tunnel to go down", func() bool { return c.mux == nil })
}

// WaitApplied waits for the ConfigApplied of version received since the last PushConfig and
// returns it.
func (c *Client) WaitApplied(tb testing.TB, version uint64) *tunnelv1.ConfigApplied {
	tb.Helper()
	var got *tunnelv1.ConfigApplied
	c.wait(tb, 20*time.Second, fmt.Sprintf("ConfigApplied for version %d", version), func() bool {
		for _, a := range c.applied[c.mark:] {
			if a.GetVersion() == version {
				got = a
				return true
			}
		}
		return false
	})
	return got
}

// WaitEvent waits for an Event frame named name (and, if match is not nil, accepted by it)
// and returns it.
func (c *Client) WaitEvent(tb testing.TB, name string, match func(*tunnelv1.Event) bool) *tunnelv1.Event {
	tb.Helper()
	var got *tunnelv1.Event
	c.wait(tb, 20*time.Second, "Event "+name, func() bool {
		for _, e := range c.events {
			if e.GetName() == name && (match == nil || match(e)) {
				got = e
				return true
			}
		}
		return false
	})
	return got
}

// WaitLicense waits for a LicenseStatus accepted by match and returns it.
func (c *Client) WaitLicense(tb testing.TB, match func(*tunnelv1.LicenseStatus) bool) *tunnelv1.LicenseStatus {
	tb.Helper()
	var got *tunnelv1.LicenseStatus
	c.wait(tb, 20*time.Second, "LicenseStatus", func() bool {
		for _, l := range c.licenses {
			if match(l) {
				got = l
				return true
			}
		}
		return false
	})
	return got
}

// WaitDrain waits for a Drain frame.
func (c *Client) WaitDrain(tb testing.TB) *tunnelv1.Drain {
	tb.Helper()
	var got *tunnelv1.Drain
	c.wait(tb, 20*time.Second, "Drain", func() bool {
		if len(c.drains) > 0 {
			got = c.drains[0]
			return true
		}
		return false
	})
	return got
}

// Events returns the Event frames received so far.
func (c *Client) Events() []*tunnelv1.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tunnelv1.Event(nil), c.events...)
}

// CRLReports returns the URL lists of the CrlUrlReport frames received so far.
func (c *Client) CRLReports() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]string(nil), c.crlURLs...)
}

// SessionOpens returns every SessionOpen the server sent.
func (c *Client) SessionOpens() []*tunnelv1.SessionOpen {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tunnelv1.SessionOpen(nil), c.opens...)
}

// Connects returns how many streams have been established.
func (c *Client) Connects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connects
}

// accept handles a SessionOpen from the server.
func (c *Client) accept(s *tunnel.Session) {
	open := s.Open()
	c.mu.Lock()
	c.opens = append(c.opens, open)
	c.notifyLocked()
	c.mu.Unlock()
	c.sessionWG.Add(1)
	go func() {
		defer c.sessionWG.Done()
		c.relay(s, open)
	}()
}

// relay connects the session inside and carries it until both sides are done.
func (c *Client) relay(s *tunnel.Session, open *tunnelv1.SessionOpen) {
	if c.cfg.Refuse != nil {
		if ce := c.cfg.Refuse(open); ce != nil {
			s.Reject(ce.Reason, ce.ESID, ce.Text)
			return
		}
	}
	if c.cfg.Responder == "" {
		s.Reject(tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, 8, "no internal server configured")
		return
	}
	conn, err := net.DialTimeout("tcp", c.cfg.Responder, 10*time.Second)
	if err != nil {
		s.Reject(tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, 8, err.Error())
		return
	}
	defer conn.Close()
	r, w := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := r.ReadBuffer()
	var ssrm oftp2.SSRM
	if err == nil {
		err = ssrm.Decode(b, nil)
	}
	if err != nil {
		s.Reject(tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, 8, "internal server's SSRM: "+err.Error())
		return
	}
	conn.SetReadDeadline(time.Time{})
	if err := w.WriteBuffer(open.GetSsid()); err != nil {
		s.Reject(tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, 8, err.Error())
		return
	}
	if err := s.Accept(&tunnelv1.SessionOpened{RemoteAddr: conn.RemoteAddr().String()}); err != nil {
		return
	}
	// Stopping the client stops the session (ESID 05 to the internal server).
	bridge.Run(c.ctx, bridge.Config{Conn: conn, Session: s, ConnName: "internal", SessionName: "server", Logger: c.cfg.Logger})
}
