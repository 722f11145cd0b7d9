package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/bridge"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

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
		c.refuse(s, log, &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, ESID: oftp2.ESIDLocalEmergency,
			Event: EventPartnerRefused, Text: "smartproxy-client is shutting down"})
		return
	}
	if open.GetDirection() != tunnelv1.Direction_DIRECTION_INCOMING {
		c.refuse(s, log, &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, ESID: oftp2.ESIDResourcesNotAvailable,
			Event: EventPartnerRefused, Text: fmt.Sprintf("the server opened a session of direction %s; the client accepts only incoming sessions from it", open.GetDirection())})
		return
	}
	snap := c.Current()
	if _, oe := checkIncoming(snap, open); oe != nil {
		c.refuse(s, log, oe)
		return
	}
	ic, err := connectInternal(st.ctx, snap.Internal, nil, open.GetSsid())
	if err != nil {
		var oe *OpenError
		if !errors.As(err, &oe) {
			oe = &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_INTERNAL, ESID: oftp2.ESIDResourcesNotAvailable, Event: EventInternalConnectFailed, Text: "opening the session", Err: err}
		}
		c.refuse(s, log, oe)
		return
	}
	internalAddr := ic.conn.RemoteAddr().String()
	log = log.WithField("internal_addr", internalAddr)
	if err := ts.Accept(&tunnelv1.SessionOpened{RemoteAddr: internalAddr}); err != nil {
		// The server ended the session while the internal server was being connected: the
		// bridge gives the internal server the ESID of the session's end.
		log.WithError(err).Info("session ended before it was accepted")
		c.metrics.opens.WithLabelValues("ended_while_opening").Inc()
		c.bridge(s, ic.conn, log)
		return
	}
	c.metrics.opens.WithLabelValues("accepted").Inc()
	s.setState("open")
	log.WithFields(logrus.Fields{"event": EventSessionStarted, "tls_version": open.GetTls().GetVersion(),
		"peer_subject": open.GetTls().GetPeerSubject()}).Info("session opened to the internal OFTP2 server")

	c.bridge(s, ic.conn, log)
}

// bridge carries an open session between the internal OFTP2 server's connection and the
// tunnel until it ends, and logs the end. The DMZ server judges every command; the client only
// moves them, sends the ESID the session's end calls for, and notices the internal server
// vanishing.
func (c *Client) bridge(s *session, conn net.Conn, log *logrus.Entry) {
	res := bridge.Run(context.Background(), bridge.Config{
		Conn:        conn,
		Session:     s.ts,
		CloseWait:   c.cfg.Linger,
		ConnName:    "internal",
		SessionName: "server",
		Logger:      log,
		OnBuffer: func(fromInternal bool, n int) {
			if fromInternal {
				s.fromInternal.Add(uint64(n))
				c.metrics.fromInternal.Add(float64(n))
			} else {
				s.toInternal.Add(uint64(n))
				c.metrics.toInternal.Add(float64(n))
			}
		},
		OnViolation: func(v bridge.Violation) {
			c.events.Emit(log, s.event(EventProtocolViolation, "the internal OFTP2 server broke the stream framing").With("error", v.Err.Error()))
		},
	})
	s.setState("closed")
	e := s.event(EventSessionEnded, "session closed").With("esid_reason", fmt.Sprintf("%02d", uint8(res.ESID))).
		With("bytes_from_partner", strconv.FormatUint(s.toInternal.Load(), 10)).
		With("bytes_to_partner", strconv.FormatUint(s.fromInternal.Load(), 10)).
		With("duration", time.Since(s.started).Round(time.Millisecond).String()).With("text", res.Text)
	e.Reason = res.Cause
	switch {
	case res.Normal():
	case res.Cause == "internal_connection_lost":
		e.Severity, e.Message = tunnelv1.Severity_SEVERITY_WARNING, "connection to the internal OFTP2 server lost"
	default:
		e.Severity, e.Message = tunnelv1.Severity_SEVERITY_WARNING, "session aborted"
	}
	c.events.Emit(log, e)
}

// refuse answers a SessionOpen negatively and logs why.
func (c *Client) refuse(s *session, log logrus.FieldLogger, oe *OpenError) {
	c.metrics.opens.WithLabelValues(oe.Event).Inc()
	e := s.event(oe.Event, "session refused: "+oe.Text).With("esid_reason", fmt.Sprintf("%02d", uint8(oe.ESID)))
	e.Reason = tunnel.ReasonString(oe.Reason)
	if oe.Err != nil {
		e = e.With("error", oe.Err.Error())
	}
	c.events.Emit(log, e)
	if err := s.ts.Reject(oe.Reason, uint32(oe.ESID), oe.Text); err != nil && !errors.Is(err, tunnel.ErrNotPending) {
		var ce *tunnel.CloseError
		if !errors.As(err, &ce) {
			log.WithError(err).Warn("refusal not sent")
		}
	}
}
