package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
)

// relay carries one admitted session between the partner connection and its tunnel session.
// It owns two goroutines, one per direction, and waits for both. Every buffer passes the
// session validator before it is forwarded, so the validator's view of credit and turn is the
// one both endpoints see.
type relay struct {
	s         *Server
	ps        *partnerSession
	log       *logrus.Entry
	ctx       context.Context // ends when the session is stopped from outside
	conn      *tls.Conn
	raw       net.Conn
	reader    *oftp2.Reader // owned by the partner→inside goroutine
	pw        *partnerWriter
	inside    insideSession
	v         *oftp2.Validator
	tunnel    *tunnelConn
	tunnelSID uint64
	partner   *Partner
	idle      time.Duration
	fwdBuffer int // SSIDSDEB passed inside
	fwdCredit int // SSIDCRED passed inside

	lastActivity atomic.Int64 // unix nanoseconds of the last buffer in either direction
	endOnce      sync.Once
	end          *outcome // the first fatal outcome; written once under endOnce
	stopRelay    context.CancelFunc
	// lingering is set by terminate once an ESID of the proxy's own reached the partner: the
	// partner→inside goroutine then discards what still arrives, and run waits for the
	// partner to disconnect before the connection is closed.
	lingering atomic.Bool
}

// esidLinger bounds how long the proxy waits, after an ESID of its own, for the partner to
// disconnect (RFC 5024 §9.3, WF_NDISC). Closing a socket that still has unread data in its
// receive buffer sends a TCP reset, and the reset can destroy the ESID before the partner has
// read it; draining for a moment lets the ESID arrive.
const esidLinger = 2 * time.Second

// outcome is how one direction, or the whole session, ended.
type outcome struct {
	fatal bool // false: this direction ended cleanly (EOF after the peer's close)
	// For fatal outcomes:
	reason        tunnelv1.AbortReason
	esid          oftp2.ESIDReason
	text          string // explanation for logs and the tunnel abort
	esidToPartner bool   // send ESID(esid) to the partner
	abortInside   bool   // abort the tunnel session
	cause         string // short name for the session_ended event
}

func (r *relay) touch() { r.lastActivity.Store(time.Now().UnixNano()) }

func (r *relay) run() {
	ctx, cancel := context.WithCancel(context.Background())
	r.stopRelay = cancel
	defer cancel()
	r.touch()
	results := make(chan outcome, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); results <- r.fromPartner(ctx) }()
	go func() { defer wg.Done(); results <- r.toPartner(ctx) }()

	tick := r.idle / 8
	if tick < 10*time.Millisecond {
		tick = 10 * time.Millisecond
	}
	if tick > 5*time.Second {
		tick = 5 * time.Second
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	stopped := r.ctx.Done()
	for remaining := 2; remaining > 0; {
		select {
		case o := <-results:
			remaining--
			if o.fatal {
				r.terminate(o)
			}
		case <-ticker.C:
			if r.idle > 0 && time.Since(time.Unix(0, r.lastActivity.Load())) >= r.idle {
				r.terminate(outcome{fatal: true, reason: tunnelv1.AbortReason_ABORT_REASON_IDLE_TIMEOUT, esid: oftp2.ESIDTimeout,
					text: fmt.Sprintf("no command in either direction for %s", r.idle), esidToPartner: true, abortInside: true, cause: "idle_timeout"})
			}
		case <-stopped:
			stopped = nil
			c, _ := r.s.stopCauseOf(r.ps)
			if c == nil {
				c = &stopCause{reason: tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, esid: oftp2.ESIDLocalEmergency, text: "stopped"}
			}
			cause := "shutdown"
			if c.reason == tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL {
				cause = "admin_kill"
			}
			r.terminate(outcome{fatal: true, reason: c.reason, esid: c.esid, text: c.text, esidToPartner: true, abortInside: true, cause: cause})
		}
	}
	wg.Wait()
	if r.lingering.Load() {
		// Whatever the partner still sends after the ESID is read and dropped until it
		// disconnects or esidLinger has passed (the read deadline was set by terminate).
		_, _ = io.Copy(io.Discard, io.LimitReader(r.conn, 4<<20))
	}
	r.finish()
}

// terminate ends the session for good with o: the ESID to the partner where the protocol
// allows one (no ESID seen yet), the abort to the inside, and the partner connection closed so
// that both direction goroutines return. Only the first call acts.
func (r *relay) terminate(o outcome) {
	r.endOnce.Do(func() {
		r.end = &o
		sent := false
		if _, _, ended := r.v.Ended(); o.esidToPartner && !ended {
			// A write to a partner that stopped reading may be blocked holding the writer;
			// the deadline frees it (that write fails, and so does the ESID: the TLS stream
			// is broken after a timed-out write).
			_ = r.raw.SetWriteDeadline(time.Now().Add(esidWriteTimeout))
			sent = r.pw.esid(o.esid, esidTextFor(o))
		} else {
			r.pw.shut()
		}
		if o.abortInside {
			r.inside.Abort(o.reason, o.esid, o.text)
		}
		r.stopRelay()
		if sent {
			// Let the partner read the ESID: close_notify, then drain until it hangs up.
			r.lingering.Store(true)
			_ = r.conn.CloseWrite()
			_ = r.raw.SetReadDeadline(time.Now().Add(esidLinger))
			return
		}
		r.raw.Close()
	})
}

// esidTextFor is the ESID reason text for the partner.
func esidTextFor(o outcome) string {
	switch o.reason {
	case tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION:
		return truncate(o.text, 80)
	case tunnelv1.AbortReason_ABORT_REASON_IDLE_TIMEOUT:
		return "time out"
	case tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN:
		return "local site emergency close down"
	case tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST:
		return "connection to the destination lost"
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// fromPartner relays partner → inside until the partner closes or something fails.
func (r *relay) fromPartner(ctx context.Context) outcome {
	for {
		buf, err := r.reader.ReadBuffer()
		if err != nil {
			if ctx.Err() != nil {
				return outcome{}
			}
			if errors.Is(err, io.EOF) {
				r.inside.CloseWrite()
				return outcome{}
			}
			var pe *oftp2.ProtocolError
			if errors.As(err, &pe) {
				return r.violation(oftp2.Initiator, 0, err)
			}
			return outcome{fatal: true, reason: tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, esid: oftp2.ESIDUnspecified,
				text: "partner connection failed: " + err.Error(), abortInside: true, cause: "partner_connection_lost"}
		}
		if r.lingering.Load() {
			continue // after the proxy's own ESID: dropped, never judged or forwarded
		}
		r.touch()
		code, err := r.v.Check(oftp2.Initiator, buf)
		if errors.Is(err, oftp2.ErrSessionEnded) {
			continue // in flight when the inside's ESID crossed it: not forwarded
		}
		if err != nil {
			return r.violation(oftp2.Initiator, oftp2.CommandCode(buf[0]), err)
		}
		if err := r.inside.WriteBuffer(ctx, buf); err != nil {
			if ctx.Err() != nil {
				return outcome{}
			}
			return r.insideEnded(err)
		}
		n := uint64(len(buf))
		r.ps.fromPartner.Add(n)
		r.s.metrics.bytes.WithLabelValues("from_partner").Add(float64(n))
		r.s.metrics.buffers.WithLabelValues("from_partner").Inc()
		if code == oftp2.CodeESID {
			// The partner ended the session; the inside closes after the ESID.
			r.inside.CloseWrite()
			return outcome{}
		}
	}
}

// toPartner relays inside → partner until the inside closes or something fails.
func (r *relay) toPartner(ctx context.Context) outcome {
	first := true
	for {
		buf, err := r.inside.ReadBuffer(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return outcome{}
			}
			if errors.Is(err, io.EOF) {
				r.pw.shut()
				r.conn.CloseWrite()
				return outcome{}
			}
			return r.insideEnded(err)
		}
		r.touch()
		if first && len(buf) > 0 && buf[0] == byte(oftp2.CodeSSID) {
			// The Responder's SSID answer: lowered to what was passed inside, so that the
			// partner computes the same buffer size and credit as the internal server (see
			// oftp2.LimitSSID). A malformed SSID is left to the validator.
			oftp2.LimitSSID(buf, r.fwdBuffer, r.fwdCredit)
		}
		first = false
		code, err := r.v.Check(oftp2.Responder, buf)
		if errors.Is(err, oftp2.ErrSessionEnded) {
			continue // in flight when the partner's ESID crossed it: not forwarded
		}
		if err != nil {
			return r.violation(oftp2.Responder, oftp2.CommandCode(buf[0]), err)
		}
		if err := r.pw.write(buf); err != nil {
			if ctx.Err() != nil {
				return outcome{}
			}
			return outcome{fatal: true, reason: tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, esid: oftp2.ESIDUnspecified,
				text: "writing to the partner failed: " + err.Error(), abortInside: true, cause: "partner_connection_lost"}
		}
		n := uint64(len(buf))
		r.ps.toPartner.Add(n)
		r.s.metrics.bytes.WithLabelValues("to_partner").Add(float64(n))
		r.s.metrics.buffers.WithLabelValues("to_partner").Inc()
		if code == oftp2.CodeESID {
			// The internal server ended the session; the partner closes after the ESID.
			r.pw.shut()
			r.conn.CloseWrite()
			return outcome{}
		}
	}
}

// insideEnded turns the end of the tunnel session into an outcome for the partner.
func (r *relay) insideEnded(err error) outcome {
	o := outcome{fatal: true, esidToPartner: true, text: err.Error(), reason: tunnelv1.AbortReason_ABORT_REASON_INTERNAL, esid: oftp2.ESIDUnspecified, cause: "inside_closed"}
	var ic *insideClosed
	if errors.As(err, &ic) {
		o.reason, o.esid, o.text = ic.Reason, partnerESID(ic), ic.Text
		o.cause = "inside_" + abortName(ic.Reason)
	}
	return o
}

// partnerESID is the ESID reason the partner gets when the inside ends a session: the one the
// client gave, else one chosen by the abort reason (docs/operations.md has the table).
func partnerESID(ic *insideClosed) oftp2.ESIDReason {
	if ic.ESID != oftp2.ESIDNormal && ic.ESID.Valid() {
		return ic.ESID
	}
	switch ic.Reason {
	case tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST, tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN,
		tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED:
		return oftp2.ESIDLocalEmergency
	case tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, tunnelv1.AbortReason_ABORT_REASON_REFUSED:
		return oftp2.ESIDResourcesNotAvailable
	case tunnelv1.AbortReason_ABORT_REASON_IDLE_TIMEOUT:
		return oftp2.ESIDTimeout
	case tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION:
		return oftp2.ESIDProtocolViolation
	}
	return oftp2.ESIDUnspecified
}

// abortName is the lower-case name of an abort reason without its prefix.
func abortName(r tunnelv1.AbortReason) string {
	const prefix = "ABORT_REASON_"
	s := r.String()
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		s = s[len(prefix):]
	}
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// violation reports a command that broke RFC 5024: ESID with the validator's reason to the
// partner, abort with PROTOCOL_VIOLATION to the inside (the client sends the same ESID to the
// internal server), and a protocol_violation security event.
func (r *relay) violation(from oftp2.Side, code oftp2.CommandCode, err error) outcome {
	reason := oftp2.ReasonOf(err)
	side := "partner"
	if from == oftp2.Responder {
		side = "inside"
	}
	cmd := "unknown"
	if code != 0 {
		cmd = code.String()
	}
	field := ""
	text := err.Error()
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		field = pe.Field
		if pe.Command != 0 {
			cmd = pe.Command.String()
		}
		text = pe.ESID().Text
	}
	r.s.metrics.violations.WithLabelValues(side, cmd).Inc()
	ev := security(EventProtocolViolation, r.ps.remote, r.partner.OdetteID, "protocol_violation", err.Error()).
		with("side", side).with("command", cmd).with("field", field).
		with("esid_reason", fmt.Sprintf("%02d", uint8(reason))).
		with("local_session_id", strconv.FormatUint(r.ps.id, 10))
	ev.sessionID = r.tunnelSID
	r.s.emitOn(r.tunnel, ev)
	return outcome{fatal: true, reason: tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, esid: reason, text: text,
		esidToPartner: true, abortInside: true, cause: "protocol_violation"}
}

// finish logs the end of the session.
func (r *relay) finish() {
	cause, esid := "normal", ""
	if r.end != nil {
		cause = r.end.cause
		esid = fmt.Sprintf("%02d", uint8(r.end.esid))
	} else if reason, by, ended := r.v.Ended(); ended {
		if reason != oftp2.ESIDNormal {
			cause = "esid_from_" + map[oftp2.Side]string{oftp2.Initiator: "partner", oftp2.Responder: "inside"}[by]
		}
		esid = fmt.Sprintf("%02d", uint8(reason))
	}
	ev := event{name: EventSessionEnded, severity: infoSeverity, sessionID: r.tunnelSID, odetteID: r.partner.OdetteID, remoteAddr: r.ps.remote,
		reason: cause, msg: "partner session ended"}.
		with("esid_reason", esid).
		with("bytes_from_partner", strconv.FormatUint(r.ps.fromPartner.Load(), 10)).
		with("bytes_to_partner", strconv.FormatUint(r.ps.toPartner.Load(), 10)).
		with("duration", time.Since(r.ps.started).Round(time.Millisecond).String()).
		with("local_session_id", strconv.FormatUint(r.ps.id, 10))
	r.s.emitOn(r.tunnel, ev)
}
