package tunnel

import (
	"context"
	"fmt"
	"slices"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel/bufpool"
)

// writer holds the frames the writer goroutine reuses for the frequent
// kinds. Owned by the writer goroutine.
type writer struct {
	data      *tunnelv1.SessionData
	dataFrame *tunnelv1.Frame
	win       *tunnelv1.SessionWindow
	winFrame  *tunnelv1.Frame
	hc        *tunnelv1.SessionHalfClose
	hcFrame   *tunnelv1.Frame
}

func newWriter() *writer {
	w := &writer{
		data: &tunnelv1.SessionData{},
		win:  &tunnelv1.SessionWindow{},
		hc:   &tunnelv1.SessionHalfClose{},
	}
	w.dataFrame = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionData{SessionData: w.data}}
	w.winFrame = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionWindow{SessionWindow: w.win}}
	w.hcFrame = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionHalfClose{SessionHalfClose: w.hc}}
	return w
}

// pick is what the writer sends next.
type pick struct {
	f    *tunnelv1.Frame
	bufs []*[]byte // pooled data buffers of f, in order, to return after the send
	item *ctrlItem // control item whose caller waits
}

// maxBatchBytes bounds the exchange buffers of one session that the writer
// sends in one SessionData to a peer that takes batches: well below the
// transport's smallest message size limit, and above the default window, so
// that a session's whole queue usually goes at once.
const maxBatchBytes = 512 << 10

// writeLoop is the only caller of Stream.Send. It sends window grants and
// control frames first, then one buffer of each session with data in turn.
// It also sends the periodic SessionSync and Ping. It returns when stop is
// closed, the Mux stops, ctx ends (stopping the Mux with
// ABORT_REASON_SHUTDOWN) or a Send fails (stopping it with
// ABORT_REASON_TUNNEL_LOST).
func (m *Mux) writeLoop(ctx context.Context, stop <-chan struct{}) {
	w := newWriter()
	owning := m.owningSender()
	var bufs []*[]byte // reused by next for the buffers of one pick
	var syncC, pingC <-chan time.Time
	if d := m.cfg.ReconcileInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		syncC = t.C
	}
	if d := m.cfg.PingInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		pingC = t.C
	}
	for {
		p, ok := m.next(w, bufs[:0])
		if !ok {
			select {
			case <-m.wake:
			case <-syncC:
				m.mu.Lock()
				m.queueCtrlLocked(&ctrlItem{sync: true})
				m.mu.Unlock()
			case <-pingC:
				m.mu.Lock()
				m.queuePingLocked(nil)
				m.mu.Unlock()
			case <-ctx.Done():
				m.fail(context.Cause(ctx))
				return
			case <-m.done:
				return
			case <-stop:
				return
			}
			continue
		}
		var err error
		switch {
		case len(p.bufs) > 0 && owning != nil:
			// The stream returns p.bufs to the pool once written: no copy here.
			err = owning.SendOwned(p.f, p.bufs)
		case p.f != nil:
			err = m.stream.Send(p.f)
		}
		w.data.Buffer = nil
		clear(w.data.MoreBuffers)
		w.data.MoreBuffers = w.data.MoreBuffers[:0]
		if owning == nil {
			for _, b := range p.bufs {
				m.pool.Put(b)
			}
		}
		clear(p.bufs)
		bufs = p.bufs
		if p.item != nil && p.item.done != nil {
			p.item.done <- err
		}
		if err != nil {
			if ctx.Err() != nil {
				m.fail(context.Cause(ctx))
			} else {
				m.fail(fmt.Errorf("tunnel: send: %w", err))
			}
			return
		}
		// Give ctx and stop a chance between frames of a long backlog.
		select {
		case <-ctx.Done():
			m.fail(context.Cause(ctx))
			return
		case <-stop:
			return
		default:
		}
	}
}

// next picks the next frame under the lock: window grants, then control
// items in order, then data round-robin: one buffer of each session with
// data in turn, or, when the peer takes batches, the session's queued
// buffers up to maxBatchBytes. The data buffers are appended to bufs. ok is
// false when there is nothing to send or the Mux has stopped.
func (m *Mux) next(w *writer, bufs []*[]byte) (p pick, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return p, false
	}
	for {
		s, ok := m.grants.pop()
		if !ok {
			break
		}
		s.inGrantQ = false
		if s.ended || s.pendingGrant == 0 {
			continue
		}
		w.win.SessionId = s.id
		w.win.Credit = uint32(s.pendingGrant)
		s.pendingGrant = 0
		return pick{f: w.winFrame}, true
	}
	for {
		it, ok := m.ctrl.pop()
		if !ok {
			break
		}
		if it.peerDriven {
			m.peerDrivenCtrl--
		}
		if it.pong {
			m.pongs--
		}
		if it.canceled {
			continue
		}
		switch {
		case it.sync:
			it.f = m.syncFrameLocked()
		case it.open != nil:
			it.open.announced = true
		}
		return pick{f: it.f, item: it}, true
	}
	for {
		s, ok := m.ready.pop()
		if !ok {
			return p, false
		}
		s.inReady = false
		if s.ended {
			continue
		}
		if b, ok := s.outq.pop(); ok {
			w.data.SessionId = s.id
			w.data.Buffer = *b
			bufs = append(bufs, b)
			n := len(*b)
			for m.batches && s.outq.len() > 0 {
				b, _ := s.outq.peek()
				if n+len(*b) > maxBatchBytes {
					break
				}
				s.outq.pop()
				w.data.MoreBuffers = append(w.data.MoreBuffers, *b)
				bufs = append(bufs, b)
				n += len(*b)
			}
			s.outBytes -= n
			if s.outq.len() > 0 || (s.writeClosed && !s.hcSent) {
				s.inReady = true
				m.ready.push(s)
			}
			if m.cfg.Metrics != nil {
				for _, b := range bufs {
					m.cfg.Metrics.DataSent(len(*b))
				}
			}
			return pick{f: w.dataFrame, bufs: bufs}, true
		}
		if s.writeClosed && !s.hcSent {
			s.hcSent = true
			w.hc.SessionId = s.id
			if s.peerHalfClosed {
				m.endLocked(s, nil)
			}
			return pick{f: w.hcFrame}, true
		}
	}
}

// syncFrameLocked builds a SessionSync from the current sessions: every
// session the peer may know (ours once announced, all of the peer's).
func (m *Mux) syncFrameLocked() *tunnelv1.Frame {
	ids := make([]uint64, 0, len(m.sessions))
	for id, s := range m.sessions {
		if s.local && !s.announced {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionSync{SessionSync: &tunnelv1.SessionSync{
		SessionIds: ids, HighestPeerSessionId: m.highestPeerID,
	}}}
}

// owningSender returns the stream as an OwningSender when it is one and the
// Mux's data buffers come from the stream's pool (New), else nil.
func (m *Mux) owningSender() OwningSender {
	o, ok := m.stream.(OwningSender)
	if !ok {
		return nil
	}
	if p, ok := m.stream.(interface{ BufferPool() *bufpool.Pool }); !ok || p.BufferPool() != m.pool {
		return nil
	}
	return o
}
