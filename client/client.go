package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"smartproxy/internal/event"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/backoff"
	"smartproxy/internal/logging"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

// ProtocolVersion is the tunnel protocol version the client speaks (Hello.protocol_version).
const ProtocolVersion = 1

// Defaults of Config.
const (
	// DefaultHandshakeTimeout is Config.HandshakeTimeout when zero.
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultConfigTimeout is Config.ConfigTimeout when zero.
	DefaultConfigTimeout = 30 * time.Second
	// DefaultShutdownTimeout is Config.ShutdownTimeout when zero.
	DefaultShutdownTimeout = 5 * time.Second
	// DefaultLinger is Config.Linger when zero.
	DefaultLinger = 30 * time.Second
)

// Config configures a Client. Its zero value is not usable: Server, Credentials and Config are
// required; every other field has a documented default.
type Config struct {
	// Servers are the DMZ servers, each "host[:port]"; the port defaults to 2878. At least one
	// is required, none twice. The client keeps Streams tunnel streams to each, every one with
	// its own reconnect loop, pushes the configuration on each and serves the sessions each
	// server opens; an outgoing session goes out on any established stream (see pickStream).
	Servers []string
	// ServerName is the name every server's tunnel certificate must carry. If empty, the host
	// of each server's address.
	ServerName string
	// SourceIP is the local address of the connections to the server (the product's -o). If
	// empty, the system chooses.
	SourceIP string
	// Credentials are the client's tunnel certificate and the tunnel CA. They are asked on every
	// handshake, so rotated files are used by the next connection. Required.
	Credentials transport.Credentials
	// Streams is the number of tunnel streams kept up to each server, each on its own
	// connection. If zero, 1.
	Streams int
	// ClientID is the identity sent in Hello. If empty, the identity of the tunnel certificate
	// (common name, else first URI or DNS name).
	ClientID string
	// Version is the software version sent in Hello and reported by the admin service. If
	// empty, "devel".
	Version string
	// Config is the configuration in force at start. Required; SetConfig replaces it.
	Config *Snapshot
	// Logger receives the client's log. If nil, nothing is logged.
	Logger logrus.FieldLogger
	// Levels, if not nil, gives every session its own logger whose level an operator can change
	// (admin service), and lets the admin service change the process level. If nil, sessions log
	// on Logger and level changes through the admin service are refused.
	Levels *logging.Levels
	// Metrics, if not nil, receives the client's Prometheus collectors.
	Metrics prometheus.Registerer
	// HandshakeTimeout bounds the wait for the server's Welcome after Hello. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// ConfigTimeout is how long the client waits for ConfigApplied after pushing a configuration
	// before it logs a warning (it keeps waiting). If zero, DefaultConfigTimeout.
	ConfigTimeout time.Duration
	// ShutdownTimeout bounds the orderly end when Run's context ends: sessions are aborted with
	// ABORT_REASON_SHUTDOWN, the internal server receives ESID 05, then the tunnels close. If
	// zero, DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Linger is how long a session whose tunnel side has half-closed waits for the internal
	// server to close its side before it is aborted. If zero, DefaultLinger.
	Linger time.Duration
	// Window is the per-session receive window in bytes (see tunnel.Config.Window). If zero, the
	// tunnel's default.
	Window int
	// PingInterval is how often each tunnel measures its round-trip time. If zero, the tunnel's
	// default.
	PingInterval time.Duration
	// Backoff spaces reconnects (see backoff.Exponential). Its zero value is the documented
	// default.
	Backoff backoff.Exponential
	// KeepaliveTime is the gRPC keepalive interval (see transport.ClientConfig). If zero, 20s.
	KeepaliveTime time.Duration
	// Observer, if not nil, is told what the servers report: configuration results, events,
	// CRL URL reports and license states. If nil, they are only logged.
	Observer Observer
	// Health, if not nil, is told whether at least one tunnel stream is up
	// (admin.HealthClientTunnel).
	Health *admin.Health
}

// Client is smartproxy-client: it keeps tunnel streams to the DMZ server up, pushes the
// configuration, and serves the sessions the server opens. Create it with New and run it with
// Run; its methods are safe for concurrent use.
type Client struct {
	// Immutable after New.
	cfg        Config
	log        logrus.FieldLogger
	metrics    *metrics
	clientID   string
	started    time.Time
	transports []*transport.Client // one per server, in the order of Config.Servers
	events     *event.Emitter      // the client's own events: log line, and warnings or worse to the Observer

	// wg counts the goroutines the Client starts besides transport.Run: tunnel multiplexers
	// and sessions. Run waits for it.
	wg sync.WaitGroup

	mu         sync.Mutex
	snap       *Snapshot               // configuration in force
	cfgChanged chan struct{}           // closed and replaced by SetConfig
	streams    map[*stream]struct{}    // established streams (Welcome received)
	sessions   map[uint64]*session     // open sessions by local id
	nextID     uint64                  // last local session id handed out
	license    *tunnelv1.LicenseStatus // last license state from a server
	proxyID    string                  // last Proxy ID from a server
	shutdown   bool                    // Run's context has ended

	licenseFile   []byte              // license to push (SetLicense); nil if none
	licenseSum    [32]byte            // SHA-256 of licenseFile
	licChanged    chan struct{}       // closed and replaced by SetLicense
	licensePushed map[string][32]byte // license content pushed per server Proxy ID
}

// New checks cfg and returns a Client that is not yet running.
func New(cfg Config) (*Client, error) {
	switch {
	case len(cfg.Servers) == 0:
		return nil, errors.New("client: Config.Servers is required")
	case cfg.Credentials == nil:
		return nil, errors.New("client: Config.Credentials is required")
	case cfg.Config == nil || cfg.Config.Security == nil:
		return nil, errors.New("client: Config.Config is required")
	case cfg.Config.Version == 0:
		return nil, errors.New("client: Config.Config.Version must not be 0")
	case cfg.Config.Internal.Address == "":
		return nil, errors.New("client: Config.Config.Internal.Address is required")
	case cfg.Streams < 0:
		return nil, fmt.Errorf("client: Config.Streams %d is negative", cfg.Streams)
	}
	if err := cfg.Config.check(); err != nil {
		return nil, fmt.Errorf("client: Config.Config: %w", err)
	}
	if cfg.Streams == 0 {
		cfg.Streams = 1
	}
	if cfg.Version == "" {
		cfg.Version = "devel"
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.ConfigTimeout <= 0 {
		cfg.ConfigTimeout = DefaultConfigTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Linger <= 0 {
		cfg.Linger = DefaultLinger
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = l
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("client: metrics: %w", err)
	}
	c := &Client{
		cfg:        cfg,
		log:        log,
		metrics:    m,
		clientID:   cfg.ClientID,
		started:    time.Now(),
		snap:       cfg.Config,
		cfgChanged: make(chan struct{}),
		streams:    make(map[*stream]struct{}),
		sessions:   make(map[uint64]*session),

		licChanged:    make(chan struct{}),
		licensePushed: make(map[string][32]byte),
	}
	c.events = event.NewEmitter(func(e event.Event) { c.observe(func(o Observer) { o.ClientEvent(e) }) }, logrus.WarnLevel)
	if c.clientID == "" {
		c.clientID = identityOf(cfg.Credentials)
	}
	m.configVersion.Set(float64(cfg.Config.Version))
	seen := make(map[string]bool, len(cfg.Servers))
	for _, server := range cfg.Servers {
		if seen[server] {
			return nil, fmt.Errorf("client: server %q is listed twice in Config.Servers", server)
		}
		seen[server] = true
		t, err := transport.NewClient(transport.ClientConfig{
			Address:     server,
			ServerName:  cfg.ServerName,
			SourceIP:    cfg.SourceIP,
			Credentials: cfg.Credentials,
			OnStream: func(ctx context.Context, index int, peer transport.PeerInfo, cs transport.ConnectClient) error {
				return c.runStream(ctx, server, index, peer, cs)
			},
			Streams:       cfg.Streams,
			Backoff:       cfg.Backoff,
			KeepaliveTime: cfg.KeepaliveTime,
			Logger:        log,
		})
		if err != nil {
			return nil, fmt.Errorf("client: server %s: %w", server, err)
		}
		c.transports = append(c.transports, t)
	}
	return c, nil
}

// identityOf returns the identity of the credentials' certificate, as the server sees it.
func identityOf(creds transport.Credentials) string {
	cert := creds.Certificate()
	if cert == nil {
		return ""
	}
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	if leaf == nil {
		return ""
	}
	return transport.PeerInfo{Certificate: leaf}.Identity()
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Run keeps the tunnel streams up and serves sessions until ctx ends. Then it ends every session
// in order (ABORT_REASON_SHUTDOWN to the server, ESID 05 to the internal server), closes the
// tunnels and returns nil once everything it started has ended.
func (c *Client) Run(ctx context.Context) error {
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// One transport per server, each with its own reconnect loops; done receives the first
	// that ends and, after the shutdown, all of them.
	done := make(chan error, len(c.transports))
	for _, t := range c.transports {
		go func() { done <- t.Run(tctx) }()
	}
	// The route listeners close as soon as the shutdown begins: no new outgoing sessions.
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.runRoutes(ctx) }()
	c.log.WithFields(logrus.Fields{"servers": strings.Join(c.cfg.Servers, ","), "streams": c.cfg.Streams, "client_id": c.clientID,
		"config_version": c.Current().Version}).Info("smartproxy-client running")

	var err error
	select {
	case <-ctx.Done():
	case err = <-done:
		// transport.Run ends only with its context; anything else is a bug worth reporting.
		err = fmt.Errorf("client: transport ended: %w", err)
		done <- nil // counted again below
	}
	c.mu.Lock()
	c.shutdown = true
	streams := c.streamList()
	c.mu.Unlock()

	sctx, scancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	for _, st := range streams {
		st.mux.Shutdown(sctx, "smartproxy-client is shutting down")
	}
	c.waitSessions(sctx)
	// A last round trip on each stream before it closes: the server answers a Ping after the
	// control frames it queued earlier, so its last Event frames (a refusal logged just before
	// the shutdown) reach the Observer instead of being cut off with the stream.
	for _, st := range streams {
		st.mux.Ping(sctx)
	}
	scancel()
	cancel()
	for range c.transports {
		<-done
	}
	c.wg.Wait()
	return err
}

// waitSessions waits until no session is open or ctx ends.
func (c *Client) waitSessions(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		n := len(c.sessions)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Current returns the configuration in force.
func (c *Client) Current() *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// SetConfig makes s the configuration in force and pushes it to every connected tunnel stream.
// A snapshot with the version in force is ignored; a lower version is refused, as the server
// would refuse it.
func (c *Client) SetConfig(s *Snapshot) error {
	if s == nil || s.Security == nil {
		return errors.New("client: SetConfig: no configuration")
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("client: SetConfig: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case s.Version == c.snap.Version:
		return nil
	case s.Version < c.snap.Version:
		return fmt.Errorf("client: configuration version %d is lower than %d, the version in force", s.Version, c.snap.Version)
	}
	c.snap = s
	close(c.cfgChanged)
	c.cfgChanged = make(chan struct{})
	c.metrics.configVersion.Set(float64(s.Version))
	c.log.WithFields(logrus.Fields{"config_version": s.Version, "config_sha256": fmt.Sprintf("%x", s.Digest[:8]),
		"tunnels": len(c.streams)}).Info("configuration changed; pushing it to the server")
	return nil
}

// configState returns the configuration in force and the channel closed at its next change.
func (c *Client) configState() (*Snapshot, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap, c.cfgChanged
}

// streamList returns the established streams ordered by server (as in Config.Servers) and
// index. c.mu must be held.
func (c *Client) streamList() []*stream {
	out := make([]*stream, 0, len(c.streams))
	for st := range c.streams {
		out = append(out, st)
	}
	order := func(server string) int { return slices.Index(c.cfg.Servers, server) }
	slices.SortFunc(out, func(a, b *stream) int {
		if d := order(a.server) - order(b.server); d != 0 {
			return d
		}
		return a.index - b.index
	})
	return out
}

// TunnelInfo describes one established tunnel stream.
type TunnelInfo struct {
	// Server is the server's address as given in Config.Servers.
	Server string
	// Index is the stream's slot, 0 to Config.Streams-1 (Hello.tunnel_index), counted per
	// server.
	Index int
	// RemoteAddr is the server's address.
	RemoteAddr string
	// ConnectedAt is when the stream was established.
	ConnectedAt time.Time
	// ProxyID and ServerVersion come from the server's Welcome.
	ProxyID, ServerVersion string
	// SentVersion is the last configuration version pushed on the stream; 0 if none.
	SentVersion uint64
	// AppliedVersion is the last configuration version the server confirmed with
	// ConfigApplied{ok} on this stream, or the version it reported in Welcome.
	AppliedVersion uint64
	// ConfigErrors are the problems of the last refused version; empty after ok.
	ConfigErrors []*tunnelv1.ConfigError
	// Draining is true once the server announced that it is going away.
	Draining bool
	// Sessions is the number of sessions open on the stream.
	Sessions int
	// LastRTT is the last measured Ping round-trip time; zero before the first.
	LastRTT time.Duration
}

// Tunnels describes the established tunnel streams, ordered by server and index.
func (c *Client) Tunnels() []TunnelInfo {
	c.mu.Lock()
	list := c.streamList()
	c.mu.Unlock()
	out := make([]TunnelInfo, 0, len(list))
	for _, st := range list {
		out = append(out, st.info())
	}
	return out
}

// session is one incoming OFTP2 session.
type session struct {
	// Immutable after creation.
	id      uint64 // local id, unique in the process (admin service)
	st      *stream
	ts      *tunnel.Session
	partner string
	remote  string // the partner's address
	started time.Time
	logKey  string // key of the session's logger in Levels; "" without Levels

	fromInternal atomic.Uint64 // bytes read from the internal server (to the partner)
	toInternal   atomic.Uint64 // bytes written to the internal server (from the partner)

	mu     sync.Mutex
	state  string
	closed bool
}

func (s *session) setState(v string) {
	s.mu.Lock()
	s.state = v
	s.mu.Unlock()
}

// addSession registers a new session and returns it with its logger.
func (c *Client) addSession(st *stream, ts *tunnel.Session) (*session, *logrus.Entry) {
	open := ts.Open()
	c.mu.Lock()
	c.nextID++
	s := &session{id: c.nextID, st: st, ts: ts, partner: open.GetPartnerOdetteId(), remote: open.GetRemoteAddr(),
		started: time.Now(), state: "opening"}
	c.sessions[s.id] = s
	n := len(c.sessions)
	c.mu.Unlock()
	c.metrics.sessions.Set(float64(n))
	var base logrus.FieldLogger = c.log
	if c.cfg.Levels != nil {
		s.logKey = strconv.FormatUint(s.id, 10)
		base = c.cfg.Levels.Session(s.logKey)
	}
	log := base.WithFields(logrus.Fields{
		"session_id": s.id, "tunnel": st.index, "tunnel_session_id": ts.ID(),
		"direction": strings.ToLower(strings.TrimPrefix(open.GetDirection().String(), "DIRECTION_")), "partner": s.partner, "remote_addr": s.remote,
	})
	return s, log
}

// removeSession forgets a session that has ended.
func (c *Client) removeSession(s *session) {
	c.mu.Lock()
	delete(c.sessions, s.id)
	n := len(c.sessions)
	c.mu.Unlock()
	c.metrics.sessions.Set(float64(n))
	if s.logKey != "" {
		c.cfg.Levels.Release(s.logKey)
	}
}
