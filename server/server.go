package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"smartproxy/internal/event"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/license"
	"smartproxy/internal/logging"
	"smartproxy/tunnel/transport"
)

// Config configures a Server. Files, flags and the environment are read by the command, not
// here; every field's zero value is documented.
type Config struct {
	// TunnelListener is the bound tunnel port (the product's -i [ip]:port). Required. Run closes
	// it when it returns.
	TunnelListener net.Listener
	// TunnelCredentials are the tunnel server certificate and the tunnel CA. Required.
	TunnelCredentials transport.Credentials
	// AllowedClients restricts tunnel clients to these identities; empty means every
	// certificate of the tunnel CA.
	AllowedClients transport.AllowList
	// RegisterTunnelServices, if not nil, registers further gRPC services on the tunnel port
	// behind its mTLS (the admin service, for example).
	RegisterTunnelServices func(grpc.ServiceRegistrar)

	// PartnerListenAddress, if not empty, is the partner listener's address, "host:port",
	// instead of the configuration's partner_listen_address. Several DMZ servers share one
	// configuration (docs/high-availability.md); this lets each bind an address of its own (its
	// own IP, or its own port when two run on one host). If empty, the configuration decides.
	PartnerListenAddress string

	// ProxyID is this host's Proxy ID (license.ProxyID). Required.
	ProxyID string
	// LicensePath is the license file: read at start and by ReloadLicense, and replaced
	// atomically when the client pushes a new license. If empty, the server starts without a
	// license and keeps a pushed one in memory only.
	LicensePath string
	// LicenseKeys are the keys license signatures are verified with. If nil,
	// license.TrustedKeys() is used.
	LicenseKeys map[string]ed25519.PublicKey

	// Version is the software version reported in Welcome and by the admin service. If empty,
	// "dev" is used.
	Version string
	// Logger is the process logger. If nil, logs are discarded.
	Logger *logrus.Logger
	// Levels manages the global and per-session log levels over Logger. If nil, one is created
	// over Logger.
	Levels *logging.Levels
	// Metrics is where the server registers its collectors. If nil, metrics are kept but not
	// registered anywhere.
	Metrics prometheus.Registerer

	// SessionWindow is the credit window in bytes the server grants per tunnel session. If
	// zero, the tunnel package's default is used.
	SessionWindow uint32
	// HelloTimeout bounds the wait for a new tunnel's Hello. If zero, 10s.
	HelloTimeout time.Duration
	// DrainTimeout is how long partner sessions may run on after Run's context ends (SIGTERM)
	// before they are ended with ESID 05. If zero, 30s.
	DrainTimeout time.Duration
	// ListenRetry is how long the server waits before binding the partner listener again after
	// a failed bind. If zero, 5s.
	ListenRetry time.Duration
	// EventQueue is how many Event frames may wait for a tunnel; more are dropped (the log line
	// is always written). If zero, 1024.
	EventQueue int
	// MaxCRLBytes bounds the total size of the chunked CRLs of one pending configuration. If
	// zero, 512 MiB.
	MaxCRLBytes int64
	// RefusalLogInterval is the interval of the refusal log summaries (see refusals.go): per
	// source, the first RefusalLogBurst security events of an interval are logged one by one,
	// the rest as one partner_refusals_suppressed line at its end. If zero, 10s.
	RefusalLogInterval time.Duration
	// RefusalLogBurst is how many security events of one source are logged one by one per
	// interval. If zero, 10; if negative, every event is logged one by one.
	RefusalLogBurst int
	// RefusalLogMax bounds, per interval, the security events logged one by one and the
	// sources summarised. If zero, 200.
	RefusalLogMax int
	// LicenseCheckInterval is how often the license is re-evaluated (expiry) and a changed
	// status reported. If zero, 1 minute.
	LicenseCheckInterval time.Duration
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time
}

// Server is smartproxy-server: the tunnel listener, the configuration received over it, the
// partner listener with admission checks, and the relay of verified OFTP2 sessions. Create it
// with New and start it with Run.
type Server struct {
	cfg     Config // immutable after New
	log     *logrus.Logger
	levels  *logging.Levels
	now     func() time.Time
	metrics *metrics
	started time.Time

	policy  atomic.Pointer[Policy]       // swapped by applyPolicy under applyMu
	license atomic.Pointer[licenseState] // swapped under licenseMu
	applyMu sync.Mutex
	// licenseMu serialises license loads, stores and status reports.
	licenseMu     sync.Mutex
	licenseStatus *tunnelv1.LicenseStatus // last status reported; owned by licenseMu

	draining atomic.Bool
	kick     chan struct{} // wakes the listener manager; capacity 1

	tunnelsMu sync.Mutex
	tunnels   map[*tunnelConn]struct{} // connected tunnels (Hello answered)

	sessionsMu sync.Mutex
	sessions   map[uint64]*partnerSession // by process-wide session id
	nextID     atomic.Uint64
	partnerWG  sync.WaitGroup // every partner connection goroutine

	sessionGate gate
	preadmit    *preadmitPool // connections in TLS handshake or SSID exchange
	rate        *rateLimiter

	events   chan queuedEvent // to the event sender
	emitter  *event.Emitter   // writes the events' log lines; emitOn queues their frames
	refusals *refusalLog      // which security events are logged one by one

	crlMu       sync.Mutex
	crlVersion  uint64          // config version the reported set belongs to
	crlReported map[string]bool // URLs reported for crlVersion

	listenerMu   sync.Mutex
	listenerAddr string // address of the open partner listener, "" when closed

	health   *admin.Health // on the tunnel port, and on the admin port through Health()
	healthMu sync.Mutex    // serialises updateHealth
}

// New checks cfg and returns a server that is not yet running.
func New(cfg Config) (*Server, error) {
	if cfg.TunnelListener == nil {
		return nil, errors.New("server: Config.TunnelListener is required")
	}
	if cfg.TunnelCredentials == nil {
		return nil, errors.New("server: Config.TunnelCredentials is required")
	}
	if cfg.ProxyID == "" {
		return nil, errors.New("server: Config.ProxyID is required")
	}
	if cfg.PartnerListenAddress != "" {
		if _, _, err := net.SplitHostPort(cfg.PartnerListenAddress); err != nil {
			return nil, fmt.Errorf("server: Config.PartnerListenAddress: %w", err)
		}
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.New()
		cfg.Logger.SetOutput(io.Discard)
	}
	if cfg.Levels == nil {
		cfg.Levels = logging.NewLevels(cfg.Logger)
	}
	if cfg.LicenseKeys == nil {
		cfg.LicenseKeys = license.TrustedKeys()
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.ListenRetry <= 0 {
		cfg.ListenRetry = 5 * time.Second
	}
	if cfg.EventQueue <= 0 {
		cfg.EventQueue = 1024
	}
	if cfg.MaxCRLBytes <= 0 {
		cfg.MaxCRLBytes = 512 << 20
	}
	if cfg.RefusalLogInterval <= 0 {
		cfg.RefusalLogInterval = DefaultRefusalLogInterval
	}
	if cfg.RefusalLogBurst == 0 {
		cfg.RefusalLogBurst = DefaultRefusalLogBurst
	}
	if cfg.RefusalLogMax <= 0 {
		cfg.RefusalLogMax = DefaultRefusalLogMax
	}
	if cfg.LicenseCheckInterval <= 0 {
		cfg.LicenseCheckInterval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		levels:      cfg.Levels,
		now:         cfg.Now,
		metrics:     m,
		started:     cfg.Now(),
		kick:        make(chan struct{}, 1),
		tunnels:     make(map[*tunnelConn]struct{}),
		sessions:    make(map[uint64]*partnerSession),
		rate:        newRateLimiter(0, cfg.Now),
		preadmit:    newPreadmitPool(cfg.Now, m),
		events:      make(chan queuedEvent, cfg.EventQueue),
		emitter:     event.NewEmitter(nil, 0),
		refusals:    newRefusalLog(cfg.RefusalLogBurst, cfg.RefusalLogMax),
		crlReported: make(map[string]bool),
	}
	s.health = admin.NewHealth(cfg.Logger, admin.HealthServerPartners, admin.HealthServerTunnel)
	s.license.Store(loadLicense(cfg.LicensePath, cfg.LicenseKeys))
	s.noteLicense("start")
	return s, nil
}

// Run serves the tunnel port, the partner listener and the sessions until ctx ends, then
// drains: tunnels get a Drain frame, the partner listener closes, open sessions get
// Config.DrainTimeout to finish and are then ended with ESID 05 (local site emergency close
// down) and ABORT_REASON_SHUTDOWN. Run returns when everything it started has ended; the error
// is nil after a drain caused by ctx, and the tunnel server's error if that failed first.
func (s *Server) Run(ctx context.Context) error {
	ts, err := transport.NewServer(transport.ServerConfig{
		Credentials:    s.cfg.TunnelCredentials,
		AllowedClients: s.cfg.AllowedClients,
		OnStream:       s.handleStream,
		Register:       s.cfg.RegisterTunnelServices,
		Health:         s.health.Server(),
		Logger:         s.log,
	})
	if err != nil {
		s.cfg.TunnelListener.Close()
		return fmt.Errorf("server: %w", err)
	}
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()

	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Add(4)
	go func() { defer wg.Done(); serveErr <- ts.Serve(s.cfg.TunnelListener) }()
	go func() { defer wg.Done(); s.listenerLoop(bg) }()
	go func() { defer wg.Done(); s.eventLoop(bg) }()
	go func() { defer wg.Done(); s.licenseLoop(bg) }()
	s.log.WithFields(logrus.Fields{"tunnel_addr": s.cfg.TunnelListener.Addr().String(), "proxy_id": s.cfg.ProxyID, "version": s.cfg.Version}).
		Info("smartproxy-server running; waiting for a client tunnel and its configuration")

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, transport.ErrServerClosed) {
			runErr = fmt.Errorf("server: tunnel listener: %w", err)
		}
	}

	// Drain: no new partners, Drain frames to the clients, time for open sessions.
	s.draining.Store(true)
	s.kickListener()
	deadline := s.now().Add(s.cfg.DrainTimeout)
	ts.Drain("shutdown", deadline, 0)
	s.log.WithFields(logrus.Fields{"open_sessions": s.openSessions(), "drain_timeout": s.cfg.DrainTimeout.String()}).Info("draining")
	done := make(chan struct{})
	go func() { s.partnerWG.Wait(); close(done) }()
	timer := time.NewTimer(s.cfg.DrainTimeout)
	select {
	case <-done:
	case <-timer.C:
		n := s.abortAllSessions(tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, "server shutdown: drain timeout")
		s.log.WithField("sessions", n).Warn("drain timeout: ending the remaining sessions with ESID 05")
		<-done
	}
	timer.Stop()
	// Every session has ended and the clients got their Drain frame: close the tunnels (a
	// stream handler ends only with its stream, so a graceful wait would only time out).
	ts.Close()
	stopBG()
	wg.Wait()
	s.log.Info("server stopped: every session and tunnel has ended")
	return runErr
}

// kickListener wakes the listener manager to compare the wanted state with the actual one.
func (s *Server) kickListener() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Policy returns the configuration in force, or nil before the first valid one.
func (s *Server) Policy() *Policy { return s.policy.Load() }

// openSessions returns the number of partner connections being handled.
func (s *Server) openSessions() int {
	s.sessionsMu.Lock()
	defer s.sessionsMu.Unlock()
	return len(s.sessions)
}
