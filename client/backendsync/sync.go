package backendsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"smartproxy/internal/event"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"smartproxy/admin"
	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
	"smartproxy/client"
	"smartproxy/client/configspec"
	"smartproxy/client/spool"
	"smartproxy/internal/backoff"
)

// API is the part of the backend API the Syncer uses; *apiclient.Client implements it.
type API interface {
	// Config long-polls GET /v1/config: with etag and a wait it returns when the document
	// differs from etag, or after the wait with changed false.
	Config(ctx context.Context, etag string, wait time.Duration) (doc *apiv1.ConfigDocument, newETag string, changed bool, err error)
	// CRL streams the body of CRL id into w unless its ETag is etag.
	CRL(ctx context.Context, id, etag string, w io.Writer) (newETag string, changed bool, err error)
	// ReportCRLURLs posts CRL distribution points the server reported.
	ReportCRLURLs(ctx context.Context, urls []string) error
	// PostEvents posts a batch of events.
	PostEvents(ctx context.Context, evs []apiv1.Event) (accepted, duplicates int, err error)
	// PutLicenseStatus reports the server's license state.
	PutLicenseStatus(ctx context.Context, st *apiv1.LicenseStatus) error
	// License returns the license file unless its ETag is etag.
	License(ctx context.Context, etag string) (file []byte, newETag string, changed bool, err error)
	// ReportConfigStatus reports the server's answer to a configuration.
	ReportConfigStatus(ctx context.Context, st *apiv1.ConfigStatus) error
}

// Target is the part of the client the Syncer drives; *client.Client implements it.
type Target interface {
	// Current returns the configuration in force.
	Current() *client.Snapshot
	// SetConfig makes a new configuration version the one in force and pushes it.
	SetConfig(s *client.Snapshot) error
	// SetLicense makes file the license pushed to the servers.
	SetLicense(file []byte) error
	// Tunnels describes the established tunnel streams (reported with the license status).
	Tunnels() []client.TunnelInfo
}

// Defaults of Config.
const (
	// DefaultWait is Config.Wait when zero.
	DefaultWait = 30 * time.Second
	// DefaultLicenseInterval is Config.LicenseInterval when zero.
	DefaultLicenseInterval = time.Minute
	// DefaultStateInterval is Config.StateInterval when zero.
	DefaultStateInterval = 30 * time.Second
	// DefaultMaxCRLBytes is Config.MaxCRLBytes when zero.
	DefaultMaxCRLBytes = 256 << 20
	// DefaultEventQueue is Config.EventQueue when zero.
	DefaultEventQueue = 4096
	// DefaultRetryBase and DefaultRetryCap bound the backoff of the polls when Config.Backoff
	// leaves them zero. A poll is one small request, so the cap is short: a backend that is
	// back is noticed within seconds.
	DefaultRetryBase = 500 * time.Millisecond
	DefaultRetryCap  = 10 * time.Second
	// DefaultOperatorRetry is Config.OperatorRetry when zero.
	DefaultOperatorRetry = time.Minute
)

// Config configures a Syncer. API and StateDir are required; every other zero value is a
// documented default.
type Config struct {
	// API is the backend. Required.
	API API
	// StateDir is the directory of the last good configuration and the event spool, created
	// with mode 0700. Required.
	StateDir string
	// Wait is the long-poll wait of GET /v1/config (at most apiv1.MaxWait). If zero,
	// DefaultWait.
	Wait time.Duration
	// LicenseInterval is how often GET /v1/license is asked. If zero, DefaultLicenseInterval.
	LicenseInterval time.Duration
	// StateInterval is how often the last license status is reported again with the tunnel's
	// current state (streams, open sessions) for the backend's dashboard. If zero,
	// DefaultStateInterval.
	StateInterval time.Duration
	// Backoff spaces the retries after a failed poll or report (full jitter). If its Base or Cap
	// is zero, DefaultRetryBase and DefaultRetryCap.
	Backoff backoff.Exponential
	// OperatorRetry is the least time between two polls while the backend refuses this
	// client's token or its certificate is not the one expected: failures only an operator can
	// fix, logged as errors once per poll instead of retried at the backoff's pace. If zero,
	// DefaultOperatorRetry.
	OperatorRetry time.Duration
	// MaxCRLBytes bounds one CRL. If zero, DefaultMaxCRLBytes.
	MaxCRLBytes int64
	// Spool bounds the event spool; its Dir and Logger are set by New.
	Spool spool.Config
	// Send configures the spool's sender.
	Send spool.SendConfig
	// EventQueue is the number of events queued in memory between the tunnels and the spool;
	// beyond it events are dropped, counted and logged. If zero, DefaultEventQueue.
	EventQueue int
	// Logger receives the Syncer's log. If nil, nothing is logged.
	Logger logrus.FieldLogger
	// Health, if not nil, is told whether the last configuration poll of the backend
	// succeeded (admin.HealthClientBackend).
	Health *admin.Health
	// Now is the clock for certificate and CRL validity. If nil, time.Now.
	Now func() time.Time
}

// Event names of the Syncer's log lines.
const (
	// EventBackendUnreachable: a poll of the backend failed; the configuration in force stays.
	EventBackendUnreachable = "backend_unreachable"
	// EventBackendUnauthorized: the backend refused this client's token (401 or 403). Only an
	// operator can fix it; polls go on every Config.OperatorRetry.
	EventBackendUnauthorized = "backend_unauthorized"
	// EventBackendCertificateMismatch: the backend's certificate does not have the pinned
	// fingerprint (--api-fingerprint).
	EventBackendCertificateMismatch = "backend_certificate_mismatch"
	// EventBackendCertificateUntrusted: the backend's certificate does not verify (a
	// self-signed certificate without --api-fingerprint or --api-ca, a wrong name, expired).
	EventBackendCertificateUntrusted = "backend_certificate_untrusted"
	// EventBackendReachable: the backend answers again after failures.
	EventBackendReachable = "backend_reachable"
	// EventCachedConfig: the client started with the last good configuration from the state
	// directory.
	EventCachedConfig = "config_cached"
	// EventConfigReceived: a new configuration document is in force in the client.
	EventConfigReceived = "config_received"
	// EventConfigInvalid: the builder refused a configuration document.
	EventConfigInvalid = "config_invalid"
	// EventEventsDropped: events were dropped before reaching the spool (queue full or refused).
	EventEventsDropped = "events_dropped"
	// EventLicenseReceived: a new license file came from the backend.
	EventLicenseReceived = "license_received"
)

// Syncer keeps a client in step with the backend. Create it with New, get the configuration to
// start the client with from Initial, then Run it with the client. It implements
// client.Observer.
type Syncer struct {
	// Immutable after New.
	cfg   Config
	log   logrus.FieldLogger
	store *store
	spool *spool.Spool
	now   func() time.Time

	events        chan apiv1.Event // Observer → eventLoop
	emitter       *event.Emitter   // the Syncer's own events: log line, and warnings or worse to the spool
	eventsDropped atomic.Uint64    // dropped because events was full or refused by the spool

	// Owned by Initial, then by configLoop.
	verified  map[[32]byte]string // CRL contents built before, with the trust key they were checked with
	etag      string
	unhealthy bool // the last poll failed

	mu       sync.Mutex // guards the fields below
	revs     map[uint64]revision
	reported map[uint64]bool // versions whose result went to the backend, by Applied
	statuses []*apiv1.ConfigStatus
	urls     map[string]bool
	license  *apiv1.LicenseStatus // to report; nil when reported
	lastLic  *apiv1.LicenseStatus // the servers' last license status, reported again every StateInterval
	wake     chan struct{}        // capacity 1: reporter has work
	// licWake (capacity 1) asks the license loop to ask now: a license status was reported,
	// and the backend may now know which Proxy ID's license this client wants.
	licWake chan struct{}
	// recovered (capacity 1) ends the reporter's retry wait: the backend answers again.
	recovered chan struct{}
}

// revision is the document a snapshot version was built from.
type revision struct {
	rev  int64
	etag string
}

// New checks cfg, creates the state directory and opens the spool.
func New(cfg Config) (*Syncer, error) {
	switch {
	case cfg.API == nil:
		return nil, errors.New("backendsync: Config.API is required")
	case cfg.StateDir == "":
		return nil, errors.New("backendsync: Config.StateDir is required")
	case cfg.Wait < 0 || cfg.Wait > apiv1.MaxWait:
		return nil, fmt.Errorf("backendsync: Config.Wait %v is out of range 0 to %v", cfg.Wait, apiv1.MaxWait)
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.LicenseInterval <= 0 {
		cfg.LicenseInterval = DefaultLicenseInterval
	}
	if cfg.StateInterval <= 0 {
		cfg.StateInterval = DefaultStateInterval
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff.Base = DefaultRetryBase
	}
	if cfg.Backoff.Cap <= 0 {
		cfg.Backoff.Cap = DefaultRetryCap
	}
	if cfg.MaxCRLBytes <= 0 {
		cfg.MaxCRLBytes = DefaultMaxCRLBytes
	}
	if cfg.OperatorRetry <= 0 {
		cfg.OperatorRetry = DefaultOperatorRetry
	}
	if cfg.EventQueue <= 0 {
		cfg.EventQueue = DefaultEventQueue
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	st := &store{dir: cfg.StateDir}
	if err := st.init(); err != nil {
		return nil, fmt.Errorf("backendsync: state directory: %w", err)
	}
	scfg := cfg.Spool
	scfg.Dir = filepath.Join(cfg.StateDir, spoolDir)
	scfg.Logger = log
	sp, err := spool.Open(scfg)
	if err != nil {
		return nil, fmt.Errorf("backendsync: %w", err)
	}
	s := &Syncer{
		cfg: cfg, log: log, store: st, spool: sp, now: now,
		events:   make(chan apiv1.Event, cfg.EventQueue),
		verified: make(map[[32]byte]string),
		revs:     make(map[uint64]revision),
		reported: make(map[uint64]bool),
		urls:     make(map[string]bool),
		wake:     make(chan struct{}, 1),
		licWake:  make(chan struct{}, 1),

		recovered: make(chan struct{}, 1),
	}
	s.emitter = event.NewEmitter(s.ClientEvent, logrus.WarnLevel)
	return s, nil
}

// Spool returns the Syncer's event spool.
func (s *Syncer) Spool() *spool.Spool { return s.spool }

// Initial returns the configuration to start the client with: the last good configuration of
// the state directory when there is one (the backend is not asked, so that a client restarted
// during a backend outage configures the server at once; Run catches up), otherwise the
// backend's document, asked for until it answers with a usable one or ctx ends.
func (s *Syncer) Initial(ctx context.Context) (*client.Snapshot, error) {
	saved, err := s.store.load()
	if err != nil {
		s.log.WithError(err).Error("the saved configuration cannot be read; asking the backend")
	}
	if saved != nil {
		snap, err := s.buildSaved(saved)
		if err == nil {
			s.etag = saved.ETag
			s.emitter.Emit(s.log, event.New(EventCachedConfig, "starting with the last good configuration from the state directory; the backend is asked next and its changes follow").
				With("config_version", strconv.FormatUint(snap.Version, 10)).With("revision", strconv.FormatInt(saved.Document.Revision, 10)).
				With("saved_at", saved.SavedAt.Format(time.RFC3339)))
			return snap, nil
		}
		s.log.WithError(err).Error("the saved configuration is not usable; asking the backend")
	}
	bo := s.cfg.Backoff
	etag := ""
	for {
		wait := time.Duration(0)
		if etag != "" {
			wait = s.cfg.Wait // a refused document: wait for its change
		}
		doc, newETag, changed, err := s.cfg.API.Config(ctx, etag, wait)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil && changed {
			snap, aerr := s.apply(ctx, doc, newETag, 0)
			if aerr == nil {
				bo.Reset()
				s.unhealthy = false
				s.reportBackend(nil)
				return snap, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ce *configspec.Error
			if errors.As(aerr, &ce) {
				etag = newETag
				continue
			}
			err = aerr
		}
		if err == nil {
			continue // unchanged after the wait
		}
		d := s.pollFailed(err, &bo, "no configuration yet: the state directory holds none", nil)
		if !sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// buildSaved builds the snapshot of a saved document, after checking its CRL files.
func (s *Syncer) buildSaved(st *savedState) (*client.Snapshot, error) {
	for i := range st.Document.CRLs {
		info := &st.Document.CRLs[i]
		if err := checkCRLInfo(info, s.cfg.MaxCRLBytes); err != nil {
			return nil, fmt.Errorf("crls[%d]: %w", i, err)
		}
		if err := s.store.verifyCRL(info); err != nil {
			return nil, err
		}
	}
	snap, err := s.build(st.Document)
	if err != nil {
		return nil, err
	}
	snap.Version = st.Version
	snap.Source = fmt.Sprintf("backend revision %d (saved %s)", st.Document.Revision, st.SavedAt.Format(time.RFC3339))
	snap.Origin = client.OriginBackend
	s.mu.Lock()
	s.revs[snap.Version] = revision{rev: st.Document.Revision, etag: st.ETag}
	s.mu.Unlock()
	return snap, nil
}

// build builds the snapshot of a document whose CRLs are on disk. The CRLs are streamed: the
// snapshot lists them, and the client reads them from the state directory when it pushes the
// configuration, so that even a CRL of a million serials is never held in memory for long. A
// CRL content verified before against the same trusted CAs is not read again.
func (s *Syncer) build(doc *apiv1.ConfigDocument) (*client.Snapshot, error) {
	caKey := trustKey(doc)
	var checked [][32]byte
	var read int64
	spec := specOf(doc, func(info *apiv1.CRLInfo, c *configspec.CRL) {
		c.Stream = true
		sum, err := hex.DecodeString(info.SHA256)
		if err != nil || len(sum) != 32 {
			c.Err = fmt.Errorf("sha256 %q is not 64 hexadecimal digits", info.SHA256)
			return
		}
		copy(c.SHA256[:], sum)
		c.Size = info.Size
		if s.verified[c.SHA256] == caKey {
			c.Verified = true
			return
		}
		c.Data, c.Err = os.ReadFile(s.store.crlPath(info.SHA256))
		checked = append(checked, c.SHA256)
		read += int64(len(c.Data))
	})
	res, err := configspec.Build(spec, s.now())
	spec = nil
	if read >= gcAfterBytes {
		// The CRL bytes read for the checks are garbage now. Collect them at once: otherwise
		// the collector's next target, set while they were live, would let the garbage of the
		// push that follows grow the heap to twice their size before it runs.
		runtime.GC()
	}
	if err != nil {
		return nil, err
	}
	for _, sum := range checked {
		s.verified[sum] = caKey
	}
	for _, w := range res.Warnings {
		s.emitter.Emit(s.log, event.New("config_warning", "configuration: "+w).With("revision", strconv.FormatInt(doc.Revision, 10)))
	}
	files := make(map[string]string, len(doc.CRLs))
	for _, c := range res.Snapshot.Security.GetCrls() {
		files[c.GetId()] = s.store.crlPath(hex.EncodeToString(c.GetSha256()))
	}
	res.Snapshot.CRLSource = func(id string) (io.ReadCloser, error) {
		path, ok := files[id]
		if !ok {
			return nil, fmt.Errorf("no CRL %q in this configuration", id)
		}
		return os.Open(path)
	}
	return res.Snapshot, nil
}

// gcAfterBytes is the amount of CRL bytes read for one build above which build collects them at
// once.
const gcAfterBytes = 8 << 20

// trustKey identifies a document's set of trusted CAs, for the cache of verified CRLs.
func trustKey(doc *apiv1.ConfigDocument) string {
	h := sha256.New()
	for _, pem := range doc.TrustedCACertificatesPEM {
		fmt.Fprintf(h, "%d:%s", len(pem), pem)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fetchCRLs downloads the CRLs of doc whose content is not on disk yet, one at a time.
func (s *Syncer) fetchCRLs(ctx context.Context, doc *apiv1.ConfigDocument) error {
	for i := range doc.CRLs {
		info := &doc.CRLs[i]
		if err := checkCRLInfo(info, s.cfg.MaxCRLBytes); err != nil {
			return &configspec.Error{Problems: []configspec.Problem{{Field: fmt.Sprintf("crls[%d]", i), Msg: err.Error()}}}
		}
		if s.store.haveCRL(info) {
			continue
		}
		start := time.Now()
		err := s.store.writeCRL(info, func(w io.Writer) error {
			_, _, err := s.cfg.API.CRL(ctx, info.ID, "", w)
			return err
		})
		if err != nil {
			return fmt.Errorf("CRL %s: %w", info.ID, err)
		}
		s.log.WithFields(logrus.Fields{"crl_id": info.ID, "url": info.URL, "bytes": info.Size,
			"took": time.Since(start).Round(time.Millisecond).String()}).Info("CRL downloaded from the backend")
	}
	return nil
}

// apply makes a document the configuration: CRLs, snapshot, saved state. cur is the version in
// force (0 at start). A *configspec.Error means the document is refused (and was reported).
func (s *Syncer) apply(ctx context.Context, doc *apiv1.ConfigDocument, etag string, cur uint64) (*client.Snapshot, error) {
	if err := s.fetchCRLs(ctx, doc); err != nil {
		var ce *configspec.Error
		if errors.As(err, &ce) {
			s.refused(doc, etag, ce)
		}
		return nil, err
	}
	snap, err := s.build(doc)
	if err != nil {
		var ce *configspec.Error
		if errors.As(err, &ce) {
			s.refused(doc, etag, ce)
		}
		return nil, err
	}
	version := uint64(max(doc.Revision, 0))
	if version <= cur {
		s.log.WithFields(logrus.Fields{"revision": doc.Revision, "config_version": cur}).
			Warn("the backend's revision is not higher than the configuration version in force (was the backend's database replaced?); using the next version")
		version = cur + 1
	}
	snap.Version = version
	snap.Source = fmt.Sprintf("backend revision %d", doc.Revision)
	snap.Origin = client.OriginBackend
	if err := s.store.save(&savedState{ETag: etag, Version: version, SavedAt: s.now().UTC(), Document: doc}); err != nil {
		// The configuration is still good; only a restart during an outage would miss it.
		s.log.WithError(err).Error("saving the configuration in the state directory failed")
	} else if n, err := s.store.prune(doc); err != nil {
		s.log.WithError(err).Warn("removing old CRL files from the state directory failed")
	} else if n > 0 {
		s.log.WithField("files", n).Debug("removed CRL files the configuration no longer names")
	}
	s.mu.Lock()
	s.revs[version] = revision{rev: doc.Revision, etag: etag}
	s.mu.Unlock()
	s.etag = etag
	return snap, nil
}

// refused logs a refused document and queues its status for the backend.
func (s *Syncer) refused(doc *apiv1.ConfigDocument, etag string, ce *configspec.Error) {
	st := &apiv1.ConfigStatus{Revision: doc.Revision, ETag: etag, Applied: false}
	for _, p := range ce.Problems {
		st.Errors = append(st.Errors, apiv1.ConfigError{Field: p.Field, Message: p.Msg})
		s.emitter.Emit(s.log, event.New(EventConfigInvalid, "configuration problem").
			With("revision", strconv.FormatInt(doc.Revision, 10)).With("field", p.Field).With("error", p.Msg))
	}
	s.emitter.Emit(s.log, event.New(EventConfigInvalid, "the backend's configuration document is refused; the configuration in force stays").
		With("revision", strconv.FormatInt(doc.Revision, 10)).With("problems", strconv.Itoa(len(ce.Problems))))
	s.queueStatus(st)
}

// Run keeps the client in step with the backend until ctx ends: the configuration long poll,
// the license poll, the relay of the servers' reports and the event spool's sender. It returns
// nil after ctx ended and everything it started has stopped, and closes the spool.
func (s *Syncer) Run(ctx context.Context, target Target) error {
	defer s.spool.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.configLoop(gctx, target); return nil })
	g.Go(func() error { s.licenseLoop(gctx, target); return nil })
	g.Go(func() error { s.reportLoop(gctx, target); return nil })
	g.Go(func() error { s.eventLoop(gctx); return nil })
	g.Go(func() error { return s.spool.Send(gctx, s.postEvents, s.cfg.Send, nil) })
	return g.Wait()
}

// reportBackend tells the health service the result of a configuration poll (pollFailed
// reports the failures).
func (s *Syncer) reportBackend(err error) {
	if s.cfg.Health == nil {
		return
	}
	why := ""
	if err != nil {
		why = "configuration poll failed: " + err.Error()
	}
	s.cfg.Health.Set(admin.HealthClientBackend, err == nil, why)
}

// configLoop long-polls the configuration and applies every change.
func (s *Syncer) configLoop(ctx context.Context, target Target) {
	bo := s.cfg.Backoff
	for ctx.Err() == nil {
		doc, etag, changed, err := s.cfg.API.Config(ctx, s.etag, s.cfg.Wait)
		if ctx.Err() != nil {
			return
		}
		if err == nil && changed {
			var snap *client.Snapshot
			snap, err = s.apply(ctx, doc, etag, target.Current().Version)
			if err == nil {
				if serr := target.SetConfig(snap); serr != nil {
					s.log.WithError(serr).Error("the client refused the configuration")
				} else {
					s.log.WithFields(logrus.Fields{"event": EventConfigReceived, "revision": doc.Revision, "config_version": snap.Version,
						"partners": len(doc.Partners), "crls": len(doc.CRLs)}).Info("new configuration from the backend")
				}
			} else if ctx.Err() != nil {
				return
			} else if errors.As(err, new(*configspec.Error)) {
				s.etag = etag // wait for the next change of the document
				err = nil
			}
		}
		if err == nil {
			s.reportBackend(nil)
			if s.unhealthy {
				s.unhealthy = false
				s.log.WithField("event", EventBackendReachable).Info("the backend answers again")
				// The event sender and the reporter may be in a long backoff: retry now.
				s.spool.Kick()
				select {
				case s.recovered <- struct{}{}:
				default:
				}
			}
			bo.Reset()
			continue
		}
		d := s.pollFailed(err, &bo, "the configuration in force stays (running on cached configuration)",
			logrus.Fields{"config_version": target.Current().Version})
		if !sleep(ctx, d) {
			return
		}
	}
}

// pollFailure is why a poll of the backend failed, as an event name, and what to do about it.
type pollFailure struct {
	event string
	// hint tells the operator what to fix; empty for failures that may pass by themselves.
	hint string
}

// classifyPoll names a failed poll. A refused token and a backend certificate that is not the
// expected one do not pass by retrying; everything else is backend_unreachable.
func classifyPoll(err error) pollFailure {
	switch {
	case errors.Is(err, apiclient.ErrUnauthorized), errors.Is(err, apiclient.ErrForbidden):
		return pollFailure{EventBackendUnauthorized, "the backend refused this client's token: check --token-file (or -T) against smartproxy-api token list"}
	case errors.Is(err, apiclient.ErrCertificateMismatch):
		return pollFailure{EventBackendCertificateMismatch, "the backend's certificate is not the one --api-fingerprint names: check the fingerprint smartproxy-api printed"}
	case errors.Is(err, apiclient.ErrCertificateUntrusted):
		return pollFailure{EventBackendCertificateUntrusted, "the backend's certificate does not verify: give --api-fingerprint or --api-ca, and check its name and validity"}
	}
	return pollFailure{event: EventBackendUnreachable}
}

// pollFailed logs a failed configuration poll and returns how long to wait before the next.
// A failure only an operator can fix is logged as an error at every poll and the polls are
// spaced by at least Config.OperatorRetry, so a wrong token is neither a hot loop nor a silent
// one; a backend that is down is logged once (then at debug) and retried with the backoff. Both
// say what the client runs on meanwhile (state).
func (s *Syncer) pollFailed(err error, bo *backoff.Exponential, state string, fields logrus.Fields) time.Duration {
	s.reportBackend(err)
	f := classifyPoll(err)
	d := bo.Next()
	if f.hint != "" {
		d = max(d, s.cfg.OperatorRetry)
	}
	e := event.New(f.event, "backend poll failed again").With("error", err.Error()).With("retry_in", d.Round(time.Millisecond).String())
	for k, v := range fields {
		e = e.With(k, fmt.Sprint(v))
	}
	first := !s.unhealthy
	s.unhealthy = true
	level := logrus.DebugLevel
	switch {
	case f.hint != "":
		level, e.Message = logrus.ErrorLevel, fmt.Sprintf("backend poll failed: %s; %s", f.hint, state)
	case first:
		level, e.Message = logrus.WarnLevel, "backend poll failed: the backend is not reachable; "+state
	}
	s.emitter.EmitAt(s.log, e, level)
	return d
}

// licenseLoop asks for the license file and hands a new one to the client.
func (s *Syncer) licenseLoop(ctx context.Context, target Target) {
	etag := ""
	notFound := false
	bo := s.cfg.Backoff
	for {
		file, newETag, changed, err := s.cfg.API.License(ctx, etag)
		if ctx.Err() != nil {
			return
		}
		d := s.cfg.LicenseInterval
		switch {
		case err == nil && changed:
			notFound = false
			bo.Reset()
			if err := target.SetLicense(file); err != nil {
				s.log.WithError(err).Error("license from the backend not used")
			} else {
				etag = newETag
				s.log.WithFields(logrus.Fields{"event": EventLicenseReceived, "bytes": len(file)}).Info("license file from the backend")
			}
		case err == nil:
			bo.Reset()
		case isNotFound(err):
			bo.Reset()
			if !notFound {
				notFound = true
				s.log.Info("the backend holds no license file for this proxy")
			}
		default:
			d = min(bo.Next(), s.cfg.LicenseInterval)
			s.log.WithError(err).Debug("license poll failed")
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.licWake:
			t.Stop()
		case <-t.C:
		}
	}
}

// isNotFound reports whether err is the backend's 404.
func isNotFound(err error) bool { return errors.Is(err, apiclient.ErrNotFound) }

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
