package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel/bufpool"
)

// Side says which end of the tunnel a Mux runs on. It decides the parity of
// the session ids the Mux opens, so that both ends can open sessions at the
// same time without collisions.
type Side int

const (
	// SideClient is smartproxy-client: it opens sessions with odd ids.
	SideClient Side = 1
	// SideServer is smartproxy-server: it opens sessions with even ids.
	SideServer Side = 2
)

// String returns "client" or "server".
func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideServer:
		return "server"
	}
	return fmt.Sprintf("Side(%d)", int(s))
}

// Defaults and bounds of Config.
const (
	// DefaultWindow is the per-session receive window when Config.Window is
	// zero: 256 KiB, two and a half of the largest OFTP2 exchange buffers.
	// One session's throughput is at most a window per credit round trip;
	// on loopback 256 KiB carries a single bulk session at about half the
	// speed of a plain TLS copy, 1 MiB at about three quarters, while the
	// whole proxy path of a session is several times slower than either
	// (docs/benchmarks.md). The window also bounds the memory a session can
	// hold on each side, so the default stays small; raise it for links
	// with a long round trip.
	DefaultWindow = 256 << 10
	// MaxWindow is the largest per-session window (it travels as uint32 and
	// the sum of grants must stay below 2^31).
	MaxWindow = 1 << 30
	// DefaultMaxBufferSize is the largest SessionData buffer when
	// Config.MaxBufferSize is zero: the largest OFTP2 exchange buffer
	// (RFC 5024 section 2.4: SSIDSDEB up to 99,999).
	DefaultMaxBufferSize = 99999
	// DefaultReconcileInterval is how often SessionSync is sent when
	// Config.ReconcileInterval is zero.
	DefaultReconcileInterval = 30 * time.Second
	// DefaultPingInterval is how often Ping is sent when Config.PingInterval
	// is zero.
	DefaultPingInterval = 30 * time.Second

	// maxControlBacklog bounds the control frames the Mux queues in answer
	// to peer frames that are not bounded by the number of sessions
	// (refusals of SessionOpen, aborts for sessions listed in SessionSync
	// but unknown here) while they wait for the writer. A peer that makes
	// the Mux exceed it while not reading what it is sent breaks the tunnel.
	maxControlBacklog = 8192
	// maxPendingPongs bounds Pong answers waiting for the writer; further
	// Pings are not answered until the writer catches up.
	maxPendingPongs = 64
	// maxPendingPings bounds Pings waiting for their Pong.
	maxPendingPings = 16
	// maxCredit bounds a session's send credit; a peer granting more breaks
	// the session.
	maxCredit = 1 << 31
)

// Metrics receives counters from a Mux. Every method is called with the
// Mux's lock held, from any of its goroutines or its callers': it must be
// fast, must not block and must not call the Mux.
type Metrics interface {
	// DataSent counts one SessionData buffer of n bytes handed to the stream.
	DataSent(n int)
	// DataReceived counts one SessionData buffer of n bytes accepted from the
	// stream.
	DataReceived(n int)
	// SessionStarted counts a session that became open; local is true when
	// this side opened it.
	SessionStarted(local bool)
	// SessionEnded counts a session that ended: err is nil after a clean
	// half-close from both sides, otherwise a *CloseError.
	SessionEnded(err error)
	// WindowStall counts a WriteBuffer call that had to wait for credit.
	WindowStall()
	// RTT reports the round-trip time of one Ping.
	RTT(d time.Duration)
}

// Config configures a Mux. The zero value of every field but Side is a
// documented default.
type Config struct {
	// Side says which end of the tunnel this is. Required.
	Side Side
	// Window is the receive window of every session in bytes: the most data
	// the peer may have sent on a session that this side's user has not
	// read yet, and so the most memory one session's inbound data can take.
	// It must be at least MaxBufferSize. If zero, DefaultWindow is used.
	Window int
	// MaxBufferSize is the largest SessionData buffer accepted and sent. If
	// zero, DefaultMaxBufferSize is used.
	MaxBufferSize int
	// Logger receives the Mux's log lines, with fields side and, per session,
	// session_id, direction, partner and remote_addr. If nil, nothing is
	// logged.
	Logger logrus.FieldLogger
	// Accept is called for every SessionOpen from the peer, on the goroutine
	// that reads the stream: it must not block. It must eventually call
	// Session.Accept or Session.Reject (or Session.Abort), typically from a
	// goroutine it starts that first connects the session's destination. If
	// nil, every SessionOpen from the peer is rejected with
	// ABORT_REASON_REFUSED.
	Accept func(s *Session)
	// Control is called for every frame that is not about a session and not
	// a Ping or Pong (Hello, Welcome, configuration, license, events, CRL
	// reports, Drain), on the goroutine that reads the stream: it must not
	// block, and it owns the frame. If nil, such frames are logged at debug
	// level and dropped.
	Control func(f *tunnelv1.Frame)
	// ReconcileInterval is how often the Mux sends SessionSync. If zero,
	// DefaultReconcileInterval is used; if negative, the Mux never sends
	// SessionSync (it still answers the peer's).
	ReconcileInterval time.Duration
	// PingInterval is how often the Mux sends Ping to measure the round-trip
	// time for Metrics.RTT. If zero, DefaultPingInterval is used; if
	// negative, the Mux sends Ping only through Mux.Ping. Liveness of the
	// connection is HTTP/2 keepalive's job; the Mux answers every Ping.
	PingInterval time.Duration
	// Metrics receives counters. If nil, none are kept.
	Metrics Metrics
}

// Mux multiplexes sessions over one Stream; see the package documentation
// for the protocol. Create it with New, run it with Run. Its methods are
// safe for concurrent use.
type Mux struct {
	// Immutable after New.
	stream         Stream
	cfg            Config
	log            logrus.FieldLogger
	grantThreshold int
	peerParity     uint64        // id%2 of sessions the peer opens
	wake           chan struct{} // capacity 1: work for the writer
	done           chan struct{} // closed when the Mux stops
	running        atomic.Bool
	pool           *bufpool.Pool // immutable; the stream's when it has one (BufferPool)

	mu sync.Mutex
	// Guarded by mu.
	closed         bool
	err            error // why the Mux stopped
	shutdown       bool  // refusing new sessions
	sessions       map[uint64]*Session
	nextID         uint64 // next id this side opens
	highestPeerID  uint64 // highest id the peer opened
	ctrl           queue[*ctrlItem]
	peerDrivenCtrl int // peer-driven items in ctrl
	grants         queue[*Session]
	ready          queue[*Session]
	pongs          int  // Pong frames in ctrl
	batches        bool // the peer takes SessionData batches (UsePeerCapabilities)
	pings          map[uint64]*pingWait
	nextNonce      uint64
}

// ctrlItem is one entry of the control queue. Owned by the Mux's lock while
// queued, by the writer once popped.
type ctrlItem struct {
	f          *tunnelv1.Frame // nil for a flush marker
	peerDriven bool            // an answer to a peer frame (counts against maxControlBacklog)
	done       chan error      // capacity 1; the caller waiting for the send, or nil
	sync       bool            // a SessionSync whose lists are built when it is sent
	open       *Session        // a SessionOpen: marks the session announced
	pong       bool
	canceled   bool // the waiting caller gave up; do not send
}

// pingWait is a Ping waiting for its Pong.
type pingWait struct {
	sent time.Time
	ch   chan time.Duration // capacity 1; nil for the periodic Ping
}

// New returns a Mux over s. It validates cfg; the Mux does nothing until Run.
func New(s Stream, cfg Config) (*Mux, error) {
	if s == nil {
		return nil, errors.New("tunnel: nil stream")
	}
	switch cfg.Side {
	case SideClient, SideServer:
	default:
		return nil, fmt.Errorf("tunnel: Config.Side %v: must be SideClient or SideServer", cfg.Side)
	}
	if cfg.MaxBufferSize == 0 {
		cfg.MaxBufferSize = DefaultMaxBufferSize
	}
	if cfg.MaxBufferSize < 1 || cfg.MaxBufferSize > MaxWindow {
		return nil, fmt.Errorf("tunnel: Config.MaxBufferSize %d: must be between 1 and %d", cfg.MaxBufferSize, MaxWindow)
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Window < cfg.MaxBufferSize || cfg.Window > MaxWindow {
		return nil, fmt.Errorf("tunnel: Config.Window %d: must be between MaxBufferSize (%d) and %d", cfg.Window, cfg.MaxBufferSize, MaxWindow)
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		l.Level = logrus.PanicLevel
		log = l
	}
	m := &Mux{
		stream:         s,
		cfg:            cfg,
		log:            log.WithField("side", cfg.Side.String()),
		grantThreshold: max(cfg.Window/4, 1),
		wake:           make(chan struct{}, 1),
		done:           make(chan struct{}),
		sessions:       make(map[uint64]*Session),
		pings:          make(map[uint64]*pingWait),
	}
	if cfg.Side == SideClient {
		m.nextID, m.peerParity = 1, 0
	} else {
		m.nextID, m.peerParity = 2, 1
	}
	if a, ok := s.(ControlAttacher); ok {
		a.AttachControl(m.SendControl)
	}
	m.pool = new(bufpool.Pool)
	if p, ok := s.(interface{ BufferPool() *bufpool.Pool }); ok && p.BufferPool() != nil {
		m.pool = p.BufferPool()
	}
	return m, nil
}

// Run reads and dispatches frames on the calling goroutine and writes frames
// from one goroutine it starts. It returns when the stream fails, when the
// peer breaks the tunnel protocol (a *ProtocolError), or when ctx ends and
// the stream's Recv has returned (see Stream) — after every session has
// ended and the writer has exited. Sessions still open then end with
// ABORT_REASON_TUNNEL_LOST (the server's stream context also ends when the
// connection breaks, so an ended ctx does not mean an orderly stop); call
// Shutdown first for an orderly stop with ABORT_REASON_SHUTDOWN. The error
// says why the Mux stopped: context.Cause(ctx) if ctx ended, otherwise the
// stream's error or a *ProtocolError. After a *ProtocolError Run stops
// reading; if its writer is blocked because the peer reads nothing, Run
// returns only once the stream's context ends. Run may be called once;
// later calls return ErrClosed.
func (m *Mux) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return ErrClosed
	}
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		m.writeLoop(ctx, stop)
	}()

	for {
		f, err := m.stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				// The stream ended because ctx did.
				m.fail(context.Cause(ctx))
			} else {
				m.fail(fmt.Errorf("tunnel: receive: %w", err))
			}
			break
		}
		if err := m.dispatch(f); err != nil {
			m.fail(err)
			break
		}
	}
	close(stop)
	<-writerDone
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Done returns a channel that is closed when the Mux has stopped.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err returns why the Mux stopped, or nil while it runs.
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Window returns the per-session receive window in bytes.
func (m *Mux) Window() int { return m.cfg.Window }

// fail stops the Mux: every session ends with ABORT_REASON_TUNNEL_LOST (or
// ABORT_REASON_SHUTDOWN after Shutdown), waiting callers are released. Only
// the first call has an effect.
func (m *Mux) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failLocked(err)
}

func (m *Mux) failLocked(err error) {
	if m.closed {
		return
	}
	reason := tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST
	if m.shutdown {
		reason = tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN
	}
	m.closed = true
	m.err = err
	text := err.Error()
	n := len(m.sessions)
	for _, s := range m.sessions {
		m.endLocked(s, closeError(reason, 0, text, false))
	}
	for {
		it, ok := m.ctrl.pop()
		if !ok {
			break
		}
		if it.done != nil {
			it.done <- ErrClosed
		}
	}
	m.grants.reset(nil)
	m.ready.reset(nil)
	clear(m.pings) // waiters select on done
	close(m.done)
	m.log.WithError(err).WithFields(logrus.Fields{"sessions": n, "reason": ReasonString(reason)}).Info("tunnel mux stopped")
}

// wakeWriter tells the writer there is work.
func (m *Mux) wakeWriter() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// queueCtrlLocked appends a control item for the writer. Peer-driven items
// fail the Mux when the backlog is exceeded.
func (m *Mux) queueCtrlLocked(it *ctrlItem) {
	if m.closed {
		if it.done != nil {
			it.done <- ErrClosed
		}
		return
	}
	if it.peerDriven {
		if m.peerDrivenCtrl >= maxControlBacklog {
			m.failLocked(&ProtocolError{Text: fmt.Sprintf("more than %d control frames waiting: the peer sends faster than it reads", maxControlBacklog)})
			return
		}
		m.peerDrivenCtrl++
	}
	if it.pong {
		m.pongs++
	}
	m.ctrl.push(it)
	m.wakeWriter()
}

// queueFrameLocked queues a control frame caused by this side (bounded by
// the number of sessions).
func (m *Mux) queueFrameLocked(f *tunnelv1.Frame) {
	m.queueCtrlLocked(&ctrlItem{f: f})
}

// queuePeerDrivenLocked queues a control frame that answers a peer frame.
func (m *Mux) queuePeerDrivenLocked(f *tunnelv1.Frame) {
	m.queueCtrlLocked(&ctrlItem{f: f, peerDriven: true})
}

// Open opens a session: it assigns the session id and initial window (the
// fields session_id and initial_window of open are overwritten), sends
// SessionOpen and waits for the peer's SessionOpened. A refusal returns a
// *CloseError with Remote set; a session the peer accepted is returned even
// when it has ended since (its methods return the end). If ctx ends first,
// the session is aborted (ABORT_REASON_INTERNAL) and ctx.Err() is returned.
// The Mux keeps open; the caller must not modify it afterwards.
func (m *Mux) Open(ctx context.Context, open *tunnelv1.SessionOpen) (*Session, error) {
	if open == nil {
		return nil, errors.New("tunnel: Open: nil SessionOpen")
	}
	m.mu.Lock()
	if m.closed || m.shutdown {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	id := m.nextID
	m.nextID += 2
	open.SessionId = id
	open.InitialWindow = uint32(m.cfg.Window)
	s := m.newSessionLocked(open, true)
	s.recvCredit = m.cfg.Window
	m.queueCtrlLocked(&ctrlItem{f: &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpen{SessionOpen: open}}, open: s})
	m.mu.Unlock()
	s.log.Debug("session opening")

	select {
	case <-s.openedCh:
	case <-ctx.Done():
		s.Abort(tunnelv1.AbortReason_ABORT_REASON_INTERNAL, 0, "open canceled: "+ctx.Err().Error())
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.opened == nil {
		// Refused, or ended before the peer answered.
		if s.err != nil {
			return nil, s.err
		}
		return nil, ErrClosed
	}
	// Accepted: the session is the caller's even when it has ended meanwhile (the peer
	// accepted and aborted at once); its reads and writes carry the end.
	return s, nil
}

// SendControl sends a frame that is not about a session (Hello, Welcome,
// configuration, license, event, CRL report, Drain) ahead of all session
// data, and waits until it has been handed to the stream. If ctx ends
// first, the frame is not sent if it has not been yet, and ctx.Err() is
// returned. Session frames are refused: they belong to Session's methods.
func (m *Mux) SendControl(ctx context.Context, f *tunnelv1.Frame) error {
	switch f.GetKind().(type) {
	case nil:
		return errors.New("tunnel: SendControl: frame without kind")
	case *tunnelv1.Frame_SessionOpen, *tunnelv1.Frame_SessionOpened, *tunnelv1.Frame_SessionData,
		*tunnelv1.Frame_SessionWindow, *tunnelv1.Frame_SessionHalfClose, *tunnelv1.Frame_SessionAbort,
		*tunnelv1.Frame_SessionSync, *tunnelv1.Frame_Ping, *tunnelv1.Frame_Pong:
		return fmt.Errorf("tunnel: SendControl: %T is sent by the Mux itself", f.Kind)
	}
	it := &ctrlItem{f: f, done: make(chan error, 1)}
	m.mu.Lock()
	m.queueCtrlLocked(it)
	m.mu.Unlock()
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		m.mu.Lock()
		it.canceled = true
		m.mu.Unlock()
		return ctx.Err()
	}
}

// Ping sends a Ping and returns the round-trip time when its Pong arrives.
func (m *Mux) Ping(ctx context.Context) (time.Duration, error) {
	ch := make(chan time.Duration, 1)
	m.mu.Lock()
	nonce, ok := m.queuePingLocked(ch)
	m.mu.Unlock()
	if !ok {
		return 0, ErrClosed
	}
	select {
	case d := <-ch:
		return d, nil
	case <-m.done:
		return 0, ErrClosed
	case <-ctx.Done():
		m.mu.Lock()
		delete(m.pings, nonce)
		m.mu.Unlock()
		return 0, ctx.Err()
	}
}

// queuePingLocked queues a Ping; ok is false when the Mux is closed or too
// many Pings are waiting.
func (m *Mux) queuePingLocked(ch chan time.Duration) (nonce uint64, ok bool) {
	if m.closed || len(m.pings) >= maxPendingPings {
		return 0, false
	}
	m.nextNonce++
	nonce = m.nextNonce
	now := time.Now()
	m.pings[nonce] = &pingWait{sent: now, ch: ch}
	m.queueFrameLocked(&tunnelv1.Frame{Kind: &tunnelv1.Frame_Ping{Ping: &tunnelv1.Ping{Nonce: nonce, SentAt: timestamppb.New(now)}}})
	return nonce, true
}

// Shutdown stops accepting and opening sessions, aborts every open session
// with ABORT_REASON_SHUTDOWN and the given text, and waits until those
// aborts have been handed to the stream or ctx ends. The Mux keeps running
// (control frames still flow) until Run's context ends or the stream fails.
func (m *Mux) Shutdown(ctx context.Context, text string) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.shutdown = true
	for _, s := range m.sessions {
		m.abortLocked(s, tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, 0, text)
	}
	marker := &ctrlItem{done: make(chan error, 1)}
	m.queueCtrlLocked(marker)
	m.mu.Unlock()
	select {
	case err := <-marker.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SessionInfo is a snapshot of one session, for the admin service, metrics
// and tests.
type SessionInfo struct {
	// ID is the session id.
	ID uint64
	// Local is true when this side opened the session.
	Local bool
	// Open is the SessionOpen the session was opened with (do not modify).
	Open *tunnelv1.SessionOpen
	// State is "opening", "accepting", "open", "write-closed", "read-closed"
	// or "closing" (both half-closes seen, buffered data not yet read).
	State string
	// Buffered is the number of received bytes the user has not read yet;
	// never more than the window.
	Buffered int
	// Queued is the number of bytes written by the user and not yet handed
	// to the stream; never more than the peer's window.
	Queued int
	// SendCredit is the number of bytes the user may still write before
	// WriteBuffer blocks (the peer's credit not used yet).
	SendCredit int
	// RecvCredit is the credit the peer has not used yet.
	RecvCredit int
	// BytesIn and BytesOut count SessionData bytes received and written.
	BytesIn, BytesOut uint64
	// Started is when the session was created on this side.
	Started time.Time
}

// Sessions returns a snapshot of the sessions known to the tunnel, ordered
// by id.
func (m *Mux) Sessions() []SessionInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SessionInfo, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s.infoLocked())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Session returns the open session with the given id, or nil.
func (m *Mux) Session(id uint64) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[id]
}

// Abort aborts the session with the given id (see Session.Abort). It
// reports whether the session was known.
func (m *Mux) Abort(id uint64, reason tunnelv1.AbortReason, esid uint32, text string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return false
	}
	m.abortLocked(s, reason, esid, text)
	return true
}
