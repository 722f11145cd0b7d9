package tunnel

import (
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// dispatch handles one received frame. It never blocks: session data is
// queued for the session's reader, control frames go to Config.Control. It
// returns an error only when the peer broke the tunnel protocol as a whole,
// or when the Mux has stopped.
func (m *Mux) dispatch(f *tunnelv1.Frame) error {
	switch k := f.GetKind().(type) {
	case *tunnelv1.Frame_SessionData:
		m.onData(k.SessionData)
	case *tunnelv1.Frame_SessionWindow:
		m.onWindow(k.SessionWindow)
	case *tunnelv1.Frame_SessionHalfClose:
		m.onHalfClose(k.SessionHalfClose)
	case *tunnelv1.Frame_SessionAbort:
		m.onAbort(k.SessionAbort)
	case *tunnelv1.Frame_SessionOpen:
		if err := m.onOpen(k.SessionOpen); err != nil {
			return err
		}
	case *tunnelv1.Frame_SessionOpened:
		m.onOpened(k.SessionOpened)
	case *tunnelv1.Frame_SessionSync:
		m.onSync(k.SessionSync)
	case *tunnelv1.Frame_Ping:
		m.onPing(k.Ping)
	case *tunnelv1.Frame_Pong:
		m.onPong(k.Pong)
	case nil:
		return &ProtocolError{Text: "frame without kind"}
	default:
		if m.cfg.Control != nil {
			m.cfg.Control(f)
		} else {
			m.log.WithField("frame", fmt.Sprintf("%T", k)).Debug("control frame dropped: no handler")
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.err
	}
	return nil
}

// onData queues the buffers of one SessionData (buffer, then more_buffers)
// for the session's reader, within the credit this side granted. A buffer
// that breaks the rules aborts the session; the buffers after it are
// dropped.
func (m *Mux) onData(d *tunnelv1.SessionData) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[d.GetSessionId()]
	if s == nil {
		// Ended here while the data was in flight, or never known: the
		// peer learns from our SessionAbort or from reconciliation.
		return
	}
	if !m.queueDataLocked(s, d.GetBuffer()) {
		return
	}
	for _, b := range d.GetMoreBuffers() {
		if !m.queueDataLocked(s, b) {
			return
		}
	}
	signal(s.recvWake)
}

// queueDataLocked queues one received buffer for s's reader, or aborts s
// when the buffer breaks the rules (ok false; s has then ended and left
// m.sessions, so the caller drops the rest of the batch).
func (m *Mux) queueDataLocked(s *Session, b []byte) (ok bool) {
	n := len(b)
	switch {
	case n == 0 || n > m.cfg.MaxBufferSize:
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR,
			fmt.Sprintf("SessionData of %d bytes: must be 1 to %d", n, m.cfg.MaxBufferSize))
	case s.peerHalfClosed:
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR, "SessionData after SessionHalfClose")
	case n > s.recvCredit:
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_CREDIT_EXCEEDED,
			fmt.Sprintf("SessionData of %d bytes with %d bytes of credit left", n, s.recvCredit))
	default:
		s.recvCredit -= n
		s.inq.push(b)
		s.inBuffered += n
		s.bytesIn += uint64(n)
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.DataReceived(n)
		}
		return true
	}
	return false
}

// peerErrorLocked aborts a session because of a frame the peer sent.
func (m *Mux) peerErrorLocked(s *Session, reason tunnelv1.AbortReason, text string) {
	s.log.WithFields(logrus.Fields{"reason": ReasonString(reason), "text": text}).Warn("session aborted: peer broke the tunnel protocol")
	m.abortLocked(s, reason, 0, text)
}

// onWindow adds credit.
func (m *Mux) onWindow(w *tunnelv1.SessionWindow) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[w.GetSessionId()]
	if s == nil {
		return
	}
	c := int(w.GetCredit())
	switch {
	case c == 0:
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR, "SessionWindow with zero credit")
	case s.state != stateOpen:
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR, "SessionWindow before the session was open")
	case s.sendCredit+c > maxCredit:
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR, "SessionWindow grants more than 2^31 bytes")
	default:
		s.sendCredit += c
		signal(s.sendWake)
	}
}

// onHalfClose marks the peer's direction finished.
func (m *Mux) onHalfClose(h *tunnelv1.SessionHalfClose) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[h.GetSessionId()]
	if s == nil || s.peerHalfClosed {
		return
	}
	if s.state != stateOpen {
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR, "SessionHalfClose before the session was open")
		return
	}
	s.peerHalfClosed = true
	s.log.Debug("session half-closed by peer")
	signal(s.recvWake)
	if s.hcSent {
		m.endLocked(s, nil)
	}
}

// onAbort ends a session the peer aborted.
func (m *Mux) onAbort(a *tunnelv1.SessionAbort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[a.GetSessionId()]
	if s == nil {
		return
	}
	m.endLocked(s, closeError(a.GetReason(), a.GetEsidReason(), a.GetText(), true))
}

// onOpen registers a session the peer opens and hands it to Config.Accept.
func (m *Mux) onOpen(o *tunnelv1.SessionOpen) error {
	id := o.GetSessionId()
	m.mu.Lock()
	if m.closed {
		// The writer stopped the Mux meanwhile; a session created now would
		// never be ended.
		m.mu.Unlock()
		return ErrClosed
	}
	if id == 0 || id%2 != m.peerParity || id <= m.highestPeerID {
		m.mu.Unlock()
		return &ProtocolError{Text: fmt.Sprintf("SessionOpen with id %d: ids from the peer must be %s and increase (last %d)",
			id, map[uint64]string{0: "even", 1: "odd"}[m.peerParity], m.highestPeerID)}
	}
	m.highestPeerID = id
	reject := func(reason tunnelv1.AbortReason, text string) {
		m.queuePeerDrivenLocked(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpened{SessionOpened: &tunnelv1.SessionOpened{
			SessionId: id, Reason: reason, EsidReason: DefaultESID(reason), Text: text,
		}}})
		m.mu.Unlock()
	}
	switch {
	case m.shutdown:
		reject(tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, "tunnel is shutting down")
		return nil
	case int(o.GetInitialWindow()) < m.cfg.MaxBufferSize:
		reject(tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR,
			fmt.Sprintf("initial window %d is smaller than the largest buffer (%d)", o.GetInitialWindow(), m.cfg.MaxBufferSize))
		return nil
	case m.cfg.Accept == nil:
		reject(tunnelv1.AbortReason_ABORT_REASON_REFUSED, "this side accepts no sessions")
		return nil
	}
	s := m.newSessionLocked(o, false)
	s.sendCredit = int(o.GetInitialWindow())
	m.mu.Unlock()
	s.log.Debug("session open requested by peer")
	m.cfg.Accept(s)
	return nil
}

// onOpened resolves a session this side is opening.
func (m *Mux) onOpened(o *tunnelv1.SessionOpened) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[o.GetSessionId()]
	if s == nil {
		return // aborted here meanwhile
	}
	if !s.local || s.state != stateOpening {
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR, "SessionOpened for a session not being opened by this side")
		return
	}
	if !o.GetAccepted() {
		reason := o.GetReason()
		if reason == tunnelv1.AbortReason_ABORT_REASON_UNSPECIFIED {
			reason = tunnelv1.AbortReason_ABORT_REASON_REFUSED
		}
		m.endLocked(s, closeError(reason, o.GetEsidReason(), o.GetText(), true))
		return
	}
	if int(o.GetInitialWindow()) < m.cfg.MaxBufferSize {
		m.peerErrorLocked(s, tunnelv1.AbortReason_ABORT_REASON_FRAME_ERROR,
			fmt.Sprintf("initial window %d is smaller than the largest buffer (%d)", o.GetInitialWindow(), m.cfg.MaxBufferSize))
		return
	}
	s.state = stateOpen
	s.opened = o
	s.sendCredit = int(o.GetInitialWindow())
	s.openedClosed = true
	close(s.openedCh)
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.SessionStarted(true)
	}
	s.log.Debug("session open")
}

// onSync reconciles the session lists: a session the peer should know but
// does not list has lost its close and ends here; a listed session unknown
// here is aborted at the peer.
func (m *Mux) onSync(y *tunnelv1.SessionSync) {
	ids := y.GetSessionIds()
	slices.Sort(ids)
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, s := range m.sessions {
		if _, found := slices.BinarySearch(ids, id); found {
			continue
		}
		if s.local && (!s.announced || id > y.GetHighestPeerSessionId()) {
			continue // our SessionOpen has not reached the peer yet
		}
		s.log.Warn("session unknown to the peer: its close was lost; ending it")
		m.endLocked(s, closeError(tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION, 0, "reconciliation: the peer does not know the session", false))
	}
	for i, id := range ids {
		if i > 0 && ids[i-1] == id {
			continue
		}
		if _, ok := m.sessions[id]; ok {
			continue
		}
		m.queuePeerDrivenLocked(&tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionAbort{SessionAbort: &tunnelv1.SessionAbort{
			SessionId: id, Reason: tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION,
			EsidReason: DefaultESID(tunnelv1.AbortReason_ABORT_REASON_UNKNOWN_SESSION),
			Text:       "reconciliation: session unknown to the peer",
		}}})
		if m.closed {
			return
		}
	}
}

// onPing answers with a Pong.
func (m *Mux) onPing(p *tunnelv1.Ping) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pongs >= maxPendingPongs {
		return
	}
	m.queueCtrlLocked(&ctrlItem{
		f:    &tunnelv1.Frame{Kind: &tunnelv1.Frame_Pong{Pong: &tunnelv1.Pong{Nonce: p.GetNonce(), PingSentAt: p.GetSentAt()}}},
		pong: true,
	})
}

// onPong completes a Ping.
func (m *Mux) onPong(p *tunnelv1.Pong) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.pings[p.GetNonce()]
	if w == nil {
		return
	}
	delete(m.pings, p.GetNonce())
	rtt := time.Since(w.sent)
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.RTT(rtt)
	}
	if w.ch != nil {
		w.ch <- rtt
	}
}
