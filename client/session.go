package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// esidWriteTimeout bounds writing a final ESID to the internal server.
const esidWriteTimeout = 5 * time.Second

// accept is the multiplexer's Accept callback: it runs on the stream's reading goroutine and
// must not block, so the session is served by a goroutine of its own.
func (c *Client) accept(st *stream, ts *tunnel.Session) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.serveIncoming(st, ts)
	}()
}

// serveIncoming opens one session the server started and relays it until it ends.
func (c *Client) serveIncoming(st *stream, ts *tunnel.Session) {
	s, log := c.addSession(st, ts)
	defer c.removeSession(s)
	st.mu.Lock()
	st.sessions++
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.sessions--
		st.mu.Unlock()
	}()

	open := ts.Open()
	c.mu.Lock()
	shutdown := c.shutdown
	c.mu.Unlock()
	if shutdown {
		c.refuse(ts, log, &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, ESID: oftp2.ESIDLocalEmergency,
			Event: EventPartnerRefused, Text: "smartproxy-client is shutting down"})
		return
	}
	if open.GetDirection() != tunnelv1.Direction_DIRECTION_INCOMING {
		c.refuse(ts, log, &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, ESID: oftp2.ESIDResourcesNotAvailable,
			Event: EventPartnerRefused, Text: fmt.Sprintf("the server opened a session of direction %s; the client accepts only incoming sessions from it", open.GetDirection())})
		return
	}
	snap := c.Current()
	if _, oe := checkIncoming(snap, open); oe != nil {
		c.refuse(ts, log, oe)
		return
	}
	ic, err := connectInternal(st.ctx, snap.Internal, nil, open.GetSsid())
	if err != nil {
		var oe *OpenError
		if !errors.As(err, &oe) {
			oe = &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_INTERNAL, ESID: oftp2.ESIDResourcesNotAvailable, Event: EventInternalConnectFailed, Text: "opening the session", Err: err}
		}
		c.refuse(ts, log, oe)
		return
	}
	internalAddr := ic.conn.RemoteAddr().String()
	log = log.WithField("internal_addr", internalAddr)
	if err := ts.Accept(&tunnelv1.SessionOpened{RemoteAddr: internalAddr}); err != nil {
		// The server ended the session while the internal server was being connected.
		log.WithError(err).Info("session ended before it was accepted")
		c.endInternal(ic, err, log)
		ic.conn.Close()
		c.metrics.opens.WithLabelValues("ended_while_opening").Inc()
		return
	}
	c.metrics.opens.WithLabelValues("accepted").Inc()
	s.setState("open")
	log.WithFields(logrus.Fields{"event": EventSessionOpened, "tls_version": open.GetTls().GetVersion(),
		"peer_subject": open.GetTls().GetPeerSubject()}).Info("session opened to the internal OFTP2 server")

	err = c.relay(s, ic, log)
	s.setState("closed")
	fields := logrus.Fields{"event": EventSessionClosed, "bytes_from_partner": s.toInternal.Load(),
		"bytes_to_partner": s.fromInternal.Load(), "duration": time.Since(s.started).Round(time.Millisecond).String()}
	var ce *tunnel.CloseError
	switch {
	case err == nil:
		log.WithFields(fields).Info("session closed")
	case errors.As(err, &ce):
		fields["reason"] = tunnel.ReasonString(ce.Reason)
		fields["esid_reason"] = ce.ESID
		fields["by_server"] = ce.Remote
		if ce.Text != "" {
			fields["text"] = ce.Text
		}
		if ce.Reason == tunnelv1.AbortReason_ABORT_REASON_NORMAL {
			log.WithFields(fields).Info("session closed")
		} else {
			log.WithFields(fields).Warn("session aborted")
		}
	default:
		log.WithFields(fields).WithError(err).Warn("session aborted")
	}
}

// refuse answers a SessionOpen negatively and logs why.
func (c *Client) refuse(ts *tunnel.Session, log logrus.FieldLogger, oe *OpenError) {
	c.metrics.opens.WithLabelValues(oe.Event).Inc()
	fields := logrus.Fields{"event": oe.Event, "reason": tunnel.ReasonString(oe.Reason), "esid_reason": uint32(oe.ESID)}
	if oe.Err != nil {
		fields["error"] = oe.Err.Error()
	}
	log.WithFields(fields).Warn("session refused: " + oe.Text)
	if err := ts.Reject(oe.Reason, uint32(oe.ESID), oe.Text); err != nil && !errors.Is(err, tunnel.ErrNotPending) {
		var ce *tunnel.CloseError
		if !errors.As(err, &ce) {
			log.WithError(err).Warn("refusal not sent")
		}
	}
}

// relay carries the session until both sides have closed or one ends it. The internal server
// → tunnel direction runs on a goroutine of its own, the tunnel → internal server direction on
// the caller's. It returns nil after a clean end, else why the session ended.
func (c *Client) relay(s *session, ic *internalConn, log logrus.FieldLogger) error {
	ts := s.ts
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		internalESID atomic.Bool // the internal server sent an ESID: the session is over for it
		partnerESID  atomic.Bool // an ESID from the partner was passed on
		readerDone   = make(chan struct{})
		readerErr    error // written by the reader before readerDone closes
	)

	// Internal server → tunnel. The reader blocks in WriteBuffer while the session's credit
	// is used up, so it stops reading the socket and TCP slows the internal server.
	go func() {
		defer close(readerDone)
		for {
			buf, err := ic.r.ReadBuffer()
			if err != nil {
				readerErr = c.internalReadEnded(ts, err, log)
				return
			}
			if oftp2.CommandCode(buf[0]) == oftp2.CodeESID {
				internalESID.Store(true)
			}
			if err := ts.WriteBuffer(ctx, buf); err != nil {
				return // the session ended; the other direction reports why
			}
			s.fromInternal.Add(uint64(len(buf)))
			c.metrics.fromInternal.Add(float64(len(buf)))
		}
	}()

	// Once the session has ended abnormally, writes to the internal server get a deadline, so
	// that a write blocked on a server that stopped reading cannot hold the session.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-ts.Done():
			if ts.Err() != nil {
				ic.conn.SetWriteDeadline(time.Now().Add(esidWriteTimeout))
			}
		case <-ctx.Done():
		}
	}()

	// Tunnel → internal server.
	var result error
	for {
		buf, err := ts.ReadBuffer(ctx)
		if errors.Is(err, io.EOF) {
			// The server half-closed (the partner closed its connection): pass the half-close
			// on and give the internal server time to close its side.
			if hc, ok := ic.conn.(interface{ CloseWrite() error }); ok {
				hc.CloseWrite()
			}
			t := time.NewTimer(c.cfg.Linger)
			select {
			case <-readerDone:
				t.Stop()
				result = readerErr
			case <-t.C:
				ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, uint32(oftp2.ESIDNormal), "the internal OFTP2 server did not close its side of the session")
				result = ts.Err()
			}
			break
		}
		if err != nil {
			var ce *tunnel.CloseError
			if errors.As(err, &ce) && !internalESID.Load() && !partnerESID.Load() {
				c.endInternal(ic, ce, log)
			}
			result = err
			break
		}
		if oftp2.CommandCode(buf[0]) == oftp2.CodeESID {
			partnerESID.Store(true)
		}
		if err := ic.w.WriteBuffer(buf); err != nil {
			ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, 0, "writing to the internal OFTP2 server failed")
			log.WithError(err).Warn("writing to the internal OFTP2 server failed")
			result = ts.Err()
			break
		}
		s.toInternal.Add(uint64(len(buf)))
		c.metrics.toInternal.Add(float64(len(buf)))
		ts.ReleaseBuffer(buf) // written: the tunnel reuses it for the next frame
	}
	cancel()
	ic.conn.Close()
	<-readerDone
	<-watchDone
	if result == nil {
		// A clean end on the tunnel; the session may still have been aborted meanwhile.
		result = ts.Err()
	}
	return result
}

// internalReadEnded handles the end of the internal server's side and returns the error that
// ended it (nil at a clean end of stream).
func (c *Client) internalReadEnded(ts *tunnel.Session, err error, log logrus.FieldLogger) error {
	if errors.Is(err, io.EOF) {
		ts.CloseWrite()
		return nil
	}
	if ts.Err() != nil {
		return nil // the session had ended and the connection was closed
	}
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		log.WithFields(logrus.Fields{"event": EventProtocolViolation, "error": err.Error()}).
			Error("the internal OFTP2 server broke the stream framing")
		ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, uint32(pe.Reason), "the internal OFTP2 server broke the stream framing")
		return err
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return nil // closed by this side
	}
	log.WithError(err).Warn("connection to the internal OFTP2 server lost")
	ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, 0, "connection to the internal OFTP2 server lost")
	return err
}

// endInternal writes an ESID with the session's end reason to the internal server, so that it
// knows why its session ended (RFC 5024 §5.3.11: an ESID may be sent at any time after the
// SSID). A normal end passes no ESID of its own: the endpoints exchange theirs.
func (c *Client) endInternal(ic *internalConn, err error, log logrus.FieldLogger) {
	var ce *tunnel.CloseError
	if !errors.As(err, &ce) || ce.Reason == tunnelv1.AbortReason_ABORT_REASON_NORMAL {
		return
	}
	reason := oftp2.ESIDReason(ce.ESID)
	if ce.ESID > 99 || !reason.Valid() {
		reason = oftp2.ESIDUnspecified
	}
	text := ce.Text
	if text == "" {
		text = tunnel.ReasonString(ce.Reason)
	}
	esid := &oftp2.ESID{Reason: reason, Text: esidText("smartproxy: " + text)}
	ic.conn.SetWriteDeadline(time.Now().Add(esidWriteTimeout))
	if werr := ic.w.WriteCommand(esid); werr != nil {
		log.WithError(werr).Debug("ESID to the internal OFTP2 server not written")
		return
	}
	log.WithFields(logrus.Fields{"esid_reason": uint8(reason)}).Info("ESID sent to the internal OFTP2 server")
}

// esidText makes s fit ESIDREAST: valid UTF-8, at most 999 octets (RFC 5024 §5.3.11).
func esidText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	for len(s) > 999 {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}
