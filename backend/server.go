package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
	"smartproxy/internal/logging"
)

// Config configures a Server. Store is required; every other zero value
// selects the documented default.
type Config struct {
	// Store is the open database. Required. The Server does not close it.
	Store *store.Store
	// Logger receives request lines, security events and job results. If
	// nil, logs are discarded.
	Logger logrus.FieldLogger
	// TLSConfig is the server's TLS configuration with its certificate.
	// Required by Run (the API is served over HTTPS only); Handler works
	// without it.
	TLSConfig *tls.Config
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// MaxWait is the longest long poll of GET /v1/config. If zero,
	// apiv1.MaxWait (60s).
	MaxWait time.Duration
	// RevisionPollInterval is how often the revision is read to notice
	// changes made by other processes (the admin CLI). If zero, 200ms.
	RevisionPollInterval time.Duration
	// IgnoreExpiryInterval is how often expired log-ignore rules are
	// removed. If zero, one minute.
	IgnoreExpiryInterval time.Duration
	// ShutdownTimeout bounds the graceful shutdown of the HTTPS server
	// before open connections are closed. If zero, 10s.
	ShutdownTimeout time.Duration
	// Events configures the event processor and the event script.
	Events EscalatorConfig
	// CRL configures the CRL downloader.
	CRL FetcherConfig
	// Admin, if not nil, is served for every path below AdminPath (the web
	// admin, which does its own authentication); the API's bearer tokens
	// do not apply there.
	Admin http.Handler
	// Metrics is where the server registers its collectors. If nil, metrics
	// are kept but not registered anywhere.
	Metrics prometheus.Registerer
}

// AdminPath is the path below which Config.Admin is served.
const AdminPath = "/admin/"

// Server is the HTTPS API of contract v1 with the jobs beside it. Create it
// with New, serve with Run.
type Server struct {
	// Immutable after New.
	cfg     Config
	st      *store.Store
	log     logrus.FieldLogger
	now     func() time.Time
	fetcher *Fetcher
	esc     *Escalator
	handler http.Handler
	metrics *metrics

	stopOnce sync.Once
	stopping chan struct{} // closed when Run begins to shut down; ends long polls
	waiting  atomic.Int64  // long polls waiting for a change

	docMu   sync.Mutex // guards the cached configuration document
	docRev  int64
	docBody []byte
	docETag string

	touchMu sync.Mutex
	touched map[int64]time.Time // client id → last recorded request

	tunnelMu sync.Mutex
	tunnels  map[int64]TunnelReport        // client id → last tunnel state reported
	licenses map[int64]apiv1.LicenseStatus // client id → last license status, without its tunnel
}

// TunnelReport is the tunnel state a proxy client last reported with its license status. It is
// kept in memory only: it describes the moment, and clients repeat it every 30 s.
type TunnelReport struct {
	apiv1.TunnelState
	// ReportedAt is when the backend received it.
	ReportedAt time.Time
}

// recordTunnel keeps the tunnel state of a license status report and reports whether the
// license part differs from the client's previous report.
func (s *Server) recordTunnel(clientID int64, st apiv1.LicenseStatus) (licenseChanged bool) {
	s.tunnelMu.Lock()
	defer s.tunnelMu.Unlock()
	if st.Tunnel != nil {
		s.tunnels[clientID] = TunnelReport{TunnelState: *st.Tunnel, ReportedAt: s.now()}
	}
	st.Tunnel = nil
	prev, ok := s.licenses[clientID]
	s.licenses[clientID] = st
	return !ok || prev.ProxyID != st.ProxyID || prev.Valid != st.Valid || prev.Reason != st.Reason ||
		(prev.ExpiresAt == nil) != (st.ExpiresAt == nil) || (prev.ExpiresAt != nil && !prev.ExpiresAt.Equal(*st.ExpiresAt))
}

// Tunnel returns the tunnel state the client last reported, if it reported one since this
// process started.
func (s *Server) Tunnel(clientID int64) (TunnelReport, bool) {
	s.tunnelMu.Lock()
	defer s.tunnelMu.Unlock()
	r, ok := s.tunnels[clientID]
	return r, ok
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("backend: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = apiv1.MaxWait
	}
	if cfg.IgnoreExpiryInterval <= 0 {
		cfg.IgnoreExpiryInterval = time.Minute
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	esc, err := NewEscalator(cfg.Store, cfg.Events, cfg.Logger, cfg.Now)
	if err != nil {
		return nil, err
	}
	fetcher, err := NewFetcher(cfg.Store, cfg.CRL, cfg.Logger, cfg.Now)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	fetcher.fetches = m.crlFetches
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger, now: cfg.Now, esc: esc, fetcher: fetcher, metrics: m,
		stopping: make(chan struct{}), touched: make(map[int64]time.Time),
		tunnels: make(map[int64]TunnelReport), licenses: make(map[int64]apiv1.LicenseStatus)}
	s.handler = s.routes()
	return s, nil
}

// FetchCRL downloads the CRL of the distribution point with the given id
// now ("fetch now" of the web admin).
func (s *Server) FetchCRL(ctx context.Context, id int64) error { return s.fetcher.FetchNow(ctx, id) }

// Handler returns the HTTP handler of the API. Run serves it; tests may
// serve it themselves.
func (s *Server) Handler() http.Handler { return s.handler }

// stop ends long polls; it is called when Run shuts down.
func (s *Server) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// Run serves the API over TLS on ln and runs the revision poller, the CRL
// downloader, the event processor and the ignore-rule expiry job until ctx
// ends or one of them fails. Then it shuts the HTTPS server down gracefully
// and returns when every goroutine it started has ended. Run closes ln.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLSConfig == nil {
		ln.Close()
		return errors.New("backend: Config.TLSConfig is required to serve")
	}
	pending, err := s.st.PendingEvents(ctx, pendingLimit)
	if err != nil {
		ln.Close()
		if ctx.Err() != nil {
			return nil // stopped while starting: a stop like any other
		}
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.st.PollRevision(gctx, s.cfg.RevisionPollInterval) })
	g.Go(func() error { return s.fetcher.Run(gctx) })
	g.Go(func() error { return s.esc.Run(gctx, pending) })
	g.Go(func() error { return s.expireIgnoreRules(gctx) })
	g.Go(func() error {
		tlsCfg := s.cfg.TLSConfig.Clone()
		if len(tlsCfg.NextProtos) == 0 {
			tlsCfg.NextProtos = []string{"h2", "http/1.1"}
		}
		srv := &http.Server{
			Handler:           s.handler,
			TLSConfig:         tlsCfg,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          log.New(httpErrorLog{s.log.WithField("component", "http")}, "", 0),
		}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(tls.NewListener(ln, tlsCfg)) }()
		select {
		case err := <-errc:
			return fmt.Errorf("backend: serve: %w", err)
		case <-gctx.Done():
		}
		s.stop()
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.log.WithError(err).Warn("graceful shutdown timed out; closing connections")
			srv.Close()
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("backend: serve: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// pendingLimit bounds the events picked up again at start.
const pendingLimit = 10000

// expireIgnoreRules removes expired log-ignore rules every
// IgnoreExpiryInterval (and once at start) and logs each removal.
func (s *Server) expireIgnoreRules(ctx context.Context) error {
	t := time.NewTicker(s.cfg.IgnoreExpiryInterval)
	defer t.Stop()
	for {
		s.ExpireIgnoreRules(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ExpireIgnoreRules removes the log-ignore rules whose validity has ended
// and logs each removal with event=ignore_rule_expired. It returns how many
// it removed.
func (s *Server) ExpireIgnoreRules(ctx context.Context) int {
	removed, err := s.st.RemoveExpiredIgnoreRules(ctx, s.now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.WithError(err).Error("cannot remove expired log-ignore rules")
		}
		return 0
	}
	for _, r := range removed {
		s.log.WithFields(logrus.Fields{
			"event":       "ignore_rule_expired",
			"id":          r.ID,
			"substring":   r.Substring,
			"description": r.Description,
			"valid_until": r.ValidUntil.UTC().Format(time.RFC3339),
		}).Info("log-ignore rule expired and removed")
	}
	return len(removed)
}

// httpErrorLog passes the HTTP server's own messages (TLS handshake errors
// and the like) to the logger at DEBUG.
type httpErrorLog struct{ log logrus.FieldLogger }

func (l httpErrorLog) Write(p []byte) (int, error) {
	l.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
