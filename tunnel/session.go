package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// sessionState is where a session is in its life.
type sessionState int

const (
	stateOpening   sessionState = iota + 1 // opened by this side, waiting for SessionOpened
	stateAccepting                         // opened by the peer, waiting for Accept or Reject
	stateOpen                              // data may flow
)

// errNotOpen is returned by WriteBuffer and CloseWrite on a session that is
// still waiting to be accepted.
var errNotOpen = errors.New("tunnel: session not accepted yet")

// Session is one multiplexed session. Its methods are safe for concurrent
// use, but buffers are delivered in order only to one reader at a time and
// sent in order only from one writer at a time.
type Session struct {
	// Immutable after creation.
	m        *Mux
	id       uint64
	local    bool
	open     *tunnelv1.SessionOpen
	log      logrus.FieldLogger
	started  time.Time
	openedCh chan struct{} // closed when opening is resolved (accepted, refused or ended)
	done     chan struct{} // closed when the session has ended
	recvWake chan struct{} // capacity 1: data or half-close arrived
	sendWake chan struct{} // capacity 1: credit arrived

	// Guarded by m.mu.
	state          sessionState
	opened         *tunnelv1.SessionOpened
	openedClosed   bool
	announced      bool // our SessionOpen was handed to the writer (local sessions)
	ended          bool
	err            error // *CloseError, or nil after a clean end
	inq            queue[[]byte]
	inBuffered     int // bytes in inq
	recvCredit     int // credit granted to the peer and not used yet
	unGranted      int // bytes read by the user and not granted back yet
	pendingGrant   int // credit waiting for the writer to send
	inGrantQ       bool
	peerHalfClosed bool
	sendCredit     int // credit the peer granted and we have not used yet
	outq           queue[*[]byte]
	outBytes       int // bytes in outq
	inReady        bool
	writeClosed    bool // CloseWrite was called
	hcSent         bool // SessionHalfClose handed to the writer
	bytesIn        uint64
	bytesOut       uint64
}

// newSessionLocked creates a session and registers it.
func (m *Mux) newSessionLocked(open *tunnelv1.SessionOpen, local bool) *Session {
	s := &Session{
		m:        m,
		id:       open.GetSessionId(),
		local:    local,
		open:     open,
		started:  time.Now(),
		openedCh: make(chan struct{}),
		done:     make(chan struct{}),
		recvWake: make(chan struct{}, 1),
		sendWake: make(chan struct{}, 1),
		state:    stateOpening,
	}
	if !local {
		s.state = stateAccepting
	}
	fields := logrus.Fields{"session_id": s.id, "direction": directionString(open.GetDirection())}
	if p := open.GetPartnerOdetteId(); p != "" {
		fields["partner"] = p
	}
	if a := open.GetRemoteAddr(); a != "" {
		fields["remote_addr"] = a
	}
	s.log = m.log.WithFields(fields)
	m.sessions[s.id] = s
	return s
}

func directionString(d tunnelv1.Direction) string {
	switch d {
	case tunnelv1.Direction_DIRECTION_INCOMING:
		return "incoming"
	case tunnelv1.Direction_DIRECTION_OUTGOING:
		return "outgoing"
	}
	return "unspecified"
}

// signal puts a token into a capacity-1 wake channel.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// endLocked ends s: err nil is a clean end (buffered data stays readable),
// otherwise a *CloseError (buffered data is dropped).
func (m *Mux) endLocked(s *Session, err error) {
	if s.ended {
		return
	}
	s.ended = true
	s.err = err
	delete(m.sessions, s.id)
	if err != nil {
		s.inq.reset(nil)
		s.inBuffered = 0
	}
	s.outq.reset(m.pool.Put)
	s.outBytes = 0
	s.pendingGrant = 0
	if !s.openedClosed {
		s.openedClosed = true
		close(s.openedCh)
	}
	close(s.done)
	if m.cfg.Metrics != nil && s.state == stateOpen {
		m.cfg.Metrics.SessionEnded(err)
	}
	if err == nil {
		s.log.WithFields(logrus.Fields{"bytes_in": s.bytesIn, "bytes_out": s.bytesOut}).Debug("session closed")
		return
	}
	var ce *CloseError
	errors.As(err, &ce)
	entry := s.log.WithFields(logrus.Fields{
		"bytes_in": s.bytesIn, "bytes_out": s.bytesOut,
		"reason": ReasonString(ce.Reason), "esid": ce.ESID, "by_peer": ce.Remote,
	})
	if ce.Text != "" {
		entry = entry.WithField("text", ce.Text)
	}
	entry.Debug("session aborted")
}

// abortLocked ends s with a local CloseError and tells the peer.
func (m *Mux) abortLocked(s *Session, reason tunnelv1.AbortReason, esid uint32, text string) {
	if s.ended {
		return
	}
	ce := closeError(reason, esid, text, false)
	m.endLocked(s, ce)
	m.queueFrameLocked(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionAbort{SessionAbort: &tunnelv1.SessionAbort{
		SessionId: s.id, Reason: ce.Reason, EsidReason: ce.ESID, Text: ce.Text,
	}}})
}

// infoLocked returns a snapshot of s.
func (s *Session) infoLocked() SessionInfo {
	state := "open"
	switch {
	case s.state == stateOpening:
		state = "opening"
	case s.state == stateAccepting:
		state = "accepting"
	case s.peerHalfClosed && s.hcSent:
		state = "closing"
	case s.hcSent || s.writeClosed:
		state = "write-closed"
	case s.peerHalfClosed:
		state = "read-closed"
	}
	return SessionInfo{
		ID: s.id, Local: s.local, Open: s.open, State: state,
		Buffered: s.inBuffered, Queued: s.outBytes,
		SendCredit: s.sendCredit, RecvCredit: s.recvCredit,
		BytesIn: s.bytesIn, BytesOut: s.bytesOut, Started: s.started,
	}
}

// ID returns the session id.
func (s *Session) ID() uint64 { return s.id }

// Local reports whether this side opened the session.
func (s *Session) Local() bool { return s.local }

// Open returns the SessionOpen the session was opened with. Do not modify it.
func (s *Session) Open() *tunnelv1.SessionOpen { return s.open }

// Opened returns the SessionOpened that accepted the session, or nil while
// it is being opened or if it was refused. Do not modify it.
func (s *Session) Opened() *tunnelv1.SessionOpened {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.opened
}

// Logger returns the session's log entry (fields session_id, direction,
// partner, remote_addr).
func (s *Session) Logger() logrus.FieldLogger { return s.log }

// Done returns a channel that is closed when the session has ended: aborted
// by either side, refused, ended by the Mux, or half-closed by both sides.
// Data received before a clean end can still be read after Done is closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session is open or after a clean end (both
// sides half-closed), otherwise the *CloseError that ended it.
func (s *Session) Err() error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.err
}

// Buffered returns the number of received bytes not read yet. It never
// exceeds the Mux's window.
func (s *Session) Buffered() int {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.inBuffered
}

// Info returns a snapshot of the session.
func (s *Session) Info() SessionInfo {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.infoLocked()
}

// Accept answers the peer's SessionOpen positively. The Mux fills in
// session_id, accepted and initial_window of opened (which may be nil) and
// sends it; the caller must not modify it afterwards. It returns the
// session's *CloseError if the peer or the Mux ended the session meanwhile,
// and ErrNotPending if the session is not waiting to be accepted.
func (s *Session) Accept(opened *tunnelv1.SessionOpened) error {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended {
		return s.endErr()
	}
	if s.state != stateAccepting {
		return ErrNotPending
	}
	if opened == nil {
		opened = &tunnelv1.SessionOpened{}
	}
	opened.SessionId = s.id
	opened.Accepted = true
	opened.Reason = tunnelv1.AbortReason_ABORT_REASON_UNSPECIFIED
	opened.InitialWindow = uint32(m.cfg.Window)
	s.opened = opened
	s.state = stateOpen
	s.recvCredit = m.cfg.Window
	s.openedClosed = true
	close(s.openedCh)
	m.queueFrameLocked(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpened{SessionOpened: opened}})
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.SessionStarted(false)
	}
	s.log.Debug("session accepted")
	return nil
}

// Reject answers the peer's SessionOpen negatively and ends the session
// with a local *CloseError. An esid of 0 with a reason other than
// ABORT_REASON_NORMAL means DefaultESID(reason).
func (s *Session) Reject(reason tunnelv1.AbortReason, esid uint32, text string) error {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended {
		return s.endErr()
	}
	if s.state != stateAccepting {
		return ErrNotPending
	}
	if reason == tunnelv1.AbortReason_ABORT_REASON_UNSPECIFIED {
		reason = tunnelv1.AbortReason_ABORT_REASON_REFUSED
	}
	ce := closeError(reason, esid, text, false)
	m.endLocked(s, ce)
	m.queueFrameLocked(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpened{SessionOpened: &tunnelv1.SessionOpened{
		SessionId: s.id, Reason: ce.Reason, EsidReason: ce.ESID, Text: ce.Text,
	}}})
	return nil
}

// endErr returns the error of an ended session for callers that need a
// non-nil one.
func (s *Session) endErr() error {
	if s.err != nil {
		return s.err
	}
	return io.EOF
}

// ReadBuffer returns the next buffer the peer sent, in order. The caller
// owns the returned slice. After the peer's half-close it returns io.EOF
// once every buffer has been read; after an abort it returns the
// *CloseError (buffers not read yet are dropped). It blocks until a buffer
// arrives, the session ends or ctx ends (then it returns ctx.Err()).
// Reading gives credit back to the peer. See ReleaseBuffer.
func (s *Session) ReadBuffer(ctx context.Context) ([]byte, error) {
	m := s.m
	for {
		m.mu.Lock()
		if b, ok := s.inq.pop(); ok {
			n := len(b)
			s.inBuffered -= n
			s.unGranted += n
			if !s.ended && !s.peerHalfClosed && s.unGranted >= m.grantThreshold {
				s.recvCredit += s.unGranted
				s.pendingGrant += s.unGranted
				s.unGranted = 0
				if !s.inGrantQ {
					s.inGrantQ = true
					m.grants.push(s)
				}
				m.wakeWriter()
			}
			if s.inq.len() > 0 {
				signal(s.recvWake) // pass the baton to another reader
			}
			m.mu.Unlock()
			return b, nil
		}
		if s.ended && s.err != nil {
			err := s.err
			m.mu.Unlock()
			return nil, err
		}
		if s.peerHalfClosed || s.ended {
			m.mu.Unlock()
			return nil, io.EOF
		}
		m.mu.Unlock()
		select {
		case <-s.recvWake:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ReleaseBuffer hands a buffer returned by ReadBuffer back for reuse once the
// caller is done with it (has written it to its connection); the caller must
// not touch b afterwards. Releasing is optional: a buffer not released is
// left to the garbage collector. Released buffers let a bulk transfer run
// without allocating a buffer per received frame (docs/benchmarks.md).
func (s *Session) ReleaseBuffer(b []byte) { s.m.pool.PutSlice(b) }

// WriteBuffer sends b, one OFTP2 exchange buffer (1 to MaxBufferSize
// bytes), on the session. It copies b, so the caller may reuse it at once.
// It blocks while the peer's credit for the session is used up — this is
// how a slow receiver slows the sender's socket reads — and until the
// session is accepted. It returns the session's *CloseError once the
// session has ended, ErrWriteClosed after CloseWrite, and ctx.Err() if ctx
// ends first.
func (s *Session) WriteBuffer(ctx context.Context, b []byte) error {
	return s.write(ctx, b, false)
}

// NewBuffer returns a buffer of n bytes, not zeroed, from the pool the
// session's sent and received buffers come from, for WriteOwned.
func (s *Session) NewBuffer(n int) []byte { return s.m.pool.GetSlice(n) }

// WriteOwned is WriteBuffer for a buffer the session takes over instead of
// copying it, best one from NewBuffer (or one ReadBuffer returned): it is
// sent as it is and then reused. The caller must not touch b after the call,
// whatever it returns. A relay that reads each buffer into NewBuffer's memory
// and writes it with WriteOwned moves it without a copy.
func (s *Session) WriteOwned(ctx context.Context, b []byte) error {
	return s.write(ctx, b, true)
}

// write is WriteBuffer, and WriteOwned when owned.
func (s *Session) write(ctx context.Context, b []byte, owned bool) (err error) {
	m := s.m
	if owned {
		defer func() {
			if err != nil {
				m.pool.PutSlice(b)
			}
		}()
	}
	if len(b) == 0 || len(b) > m.cfg.MaxBufferSize {
		return fmt.Errorf("tunnel: WriteBuffer: buffer of %d bytes: must be 1 to %d", len(b), m.cfg.MaxBufferSize)
	}
	stalled := false
	for {
		m.mu.Lock()
		switch {
		case s.ended:
			err := s.endErr()
			m.mu.Unlock()
			return err
		case s.writeClosed:
			m.mu.Unlock()
			return ErrWriteClosed
		case s.state != stateOpen:
			m.mu.Unlock()
			return errNotOpen
		}
		if s.sendCredit >= len(b) {
			s.sendCredit -= len(b)
			var p *[]byte
			if owned {
				p = m.pool.Hold(b)
			} else {
				p = m.pool.Get(len(b))
				copy(*p, b)
			}
			s.outq.push(p)
			s.outBytes += len(b)
			s.bytesOut += uint64(len(b))
			if !s.inReady {
				s.inReady = true
				m.ready.push(s)
			}
			m.wakeWriter()
			if s.sendCredit > 0 {
				signal(s.sendWake) // pass the baton to another writer
			}
			m.mu.Unlock()
			return nil
		}
		if !stalled {
			stalled = true
			if m.cfg.Metrics != nil {
				m.cfg.Metrics.WindowStall()
			}
		}
		m.mu.Unlock()
		select {
		case <-s.sendWake:
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CloseWrite half-closes the session: the peer receives SessionHalfClose
// after every buffer written before, then io.EOF from ReadBuffer. Data in
// the other direction still flows. The session ends cleanly once both sides
// have half-closed. CloseWrite is idempotent; on an ended session it returns
// nil.
func (s *Session) CloseWrite() error {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended || s.writeClosed {
		return nil
	}
	if s.state != stateOpen {
		return errNotOpen
	}
	s.writeClosed = true
	if !s.inReady {
		s.inReady = true
		m.ready.push(s)
	}
	m.wakeWriter()
	return nil
}

// Abort ends the session at once in both directions: data not sent or not
// read yet is dropped, the peer receives SessionAbort with reason, esid and
// text, and Err returns a *CloseError with Remote false. An esid of 0 with a
// reason other than ABORT_REASON_NORMAL means DefaultESID(reason). Abort is
// idempotent: on an ended session it does nothing.
func (s *Session) Abort(reason tunnelv1.AbortReason, esid uint32, text string) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended {
		return
	}
	s.log.WithFields(logrus.Fields{"reason": ReasonString(reason), "text": text}).Debug("session abort requested")
	m.abortLocked(s, reason, esid, text)
}
