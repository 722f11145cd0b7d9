// Package bridge moves OFTP2 exchange buffers between one connection and one tunnel session,
// in both directions, for every kind of session the proxy carries: the DMZ server's partner
// connections (incoming and outgoing), the client's connections to and from the internal OFTP2
// server, and the test harnesses that play either daemon.
//
// One bridge per session, shaped like a relay of its own frames:
//
//	              Run (caller's goroutine)             writer goroutine
//	conn ──► reader ── Check(conn side) ──► Session.WriteBuffer
//	conn ◄── connWriter ◄── Check(other side) ◄── Session.ReadBuffer
//	         ▲ final ESID (violation, idle, stop, loss of the other side)
//
// Every buffer passes the validator (when there is one) before it is forwarded, so the
// validator's view of credit and turn is the one both endpoints see. The session ends in one
// of these ways, each with an ESID to every endpoint that has not seen one yet:
//
//   - normally: an ESID passes, its receiver closes, both half-closes follow;
//   - by a violation: ESID with the validator's reason to the connection, abort with
//     PROTOCOL_VIOLATION (and the same reason) on the session;
//   - by the idle timeout: a read deadline on the connection, driven by the injected clock;
//   - by a stop from outside (administrator, shutdown): the cause of the context given to Run;
//   - by loss: the connection ends (EOF, reset, a failed write) before any ESID passed, or the
//     session is aborted by the other daemon. A side that vanishes without ESID is always an
//     abnormal end, and the other side receives an ESID.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// Defaults for the zero values of Config.
const (
	// DefaultLinger is Config.Linger when zero.
	DefaultLinger = 2 * time.Second
	// DefaultCloseWait is Config.CloseWait when zero.
	DefaultCloseWait = 30 * time.Second
	// DefaultESIDWriteTimeout is Config.ESIDWriteTimeout when zero.
	DefaultESIDWriteTimeout = 5 * time.Second
)

// Config describes one bridge. Conn and Session are required; every other field has a
// default.
type Config struct {
	// Conn is the OFTP2 connection (partner TLS or internal TCP). Run closes it before it
	// returns.
	Conn net.Conn
	// Session is the accepted (or opened) tunnel session.
	Session *tunnel.Session
	// Validator judges every buffer of both directions before it is forwarded. If nil,
	// buffers are forwarded unjudged (the DMZ server judges them).
	Validator *oftp2.Validator
	// ConnSide is the OFTP2 role of Conn's peer: Initiator for a partner that called in,
	// Responder for a partner the server called. Only used with Validator.
	ConnSide oftp2.Side
	// SSIDBufferSize and SSIDCredit, when not zero, lower SSIDSDEB and SSIDCRED of every SSID
	// that crosses the bridge (oftp2.LimitSSID), so that both endpoints compute the buffer size
	// and credit the proxy passed on.
	SSIDBufferSize, SSIDCredit int
	// IdleTimeout ends a session without any buffer in either direction for this long
	// (ESID 09 to both sides). If zero, sessions never idle out.
	IdleTimeout time.Duration
	// Now is the clock the idle timeout is measured with. If nil, time.Now is used.
	Now func() time.Time
	// Linger is how long the bridge waits, after its own final ESID, for Conn's peer to
	// close. If zero, DefaultLinger.
	Linger time.Duration
	// CloseWait is how long the bridge waits, once an endpoint's ESID has passed, for the
	// closes that end the session normally (Conn's peer closing, the other side's half-close)
	// before it ends the session itself. If zero, DefaultCloseWait.
	CloseWait time.Duration
	// ESIDWriteTimeout bounds writing a final ESID to a peer that does not read. If zero,
	// DefaultESIDWriteTimeout.
	ESIDWriteTimeout time.Duration
	// ConnName and SessionName name the two sides in Result.Cause, e.g. "partner" and
	// "inside". If empty, "conn" and "session".
	ConnName, SessionName string
	// OnBuffer, if not nil, is called after every forwarded buffer with its size and whether
	// it came from Conn. It runs on the bridge's goroutines and must not block.
	OnBuffer func(fromConn bool, n int)
	// OnViolation, if not nil, is called once when a buffer breaks RFC 5024 (the validator's
	// verdict, or broken stream framing from Conn), before the ESIDs are sent.
	OnViolation func(Violation)
	// Inspect, if not nil, sees every buffer the validator accepted before it is forwarded.
	// A non-nil error (an *oftp2.ProtocolError carrying the ESID reason) refuses the session:
	// ESID to Conn's peer, abort with ABORT_REASON_REFUSED and the same reason on the
	// session. The DMZ server uses it to check that a called partner's SSID carries the route's
	// Odette ID.
	Inspect func(fromConn bool, buf []byte) error
	// Logger receives debug lines. If nil, nothing is logged.
	Logger logrus.FieldLogger
}

// Violation is a command that broke RFC 5024.
type Violation struct {
	// FromConn is true when Conn's peer sent it.
	FromConn bool
	// Command is the offending command's code, 0 when unknown (broken framing).
	Command oftp2.CommandCode
	// Err is the *oftp2.ProtocolError (or the validator's error).
	Err error
}

// Stop is the cause to give the context passed to Run (context.WithCancelCause) when a
// session is ended from outside: by an administrator or at shutdown.
type Stop struct {
	// Reason is the tunnel abort reason, e.g. ABORT_REASON_ADMIN_KILL.
	Reason tunnelv1.AbortReason
	// ESID is the reason both endpoints receive.
	ESID oftp2.ESIDReason
	// Text explains the stop, for logs.
	Text string
}

func (s *Stop) Error() string { return s.Text }

// Cause names the stop in Result.Cause: "admin_kill", "shutdown", ….
func (s *Stop) Cause() string { return tunnel.ReasonString(s.Reason) }

// Result is how a bridged session ended.
type Result struct {
	// Cause is "normal" after an exchange of ESID 00, and otherwise one of
	// "esid_from_<conn>", "esid_from_<session>" (an endpoint's ESID with another reason),
	// "protocol_violation", "refused" (Config.Inspect), "idle_timeout", a Stop's cause, "<conn>_connection_lost" (Conn
	// ended without ESID or failed) and "<session>_<reason>" (the other daemon aborted the
	// session, e.g. "inside_tunnel_lost"), with the names of Config.ConnName and SessionName.
	Cause string
	// Reason is the tunnel abort reason; ABORT_REASON_NORMAL after an end by ESID.
	Reason tunnelv1.AbortReason
	// ESID is the reason of the ESID that ended the session (sent by an endpoint or by the
	// bridge).
	ESID oftp2.ESIDReason
	// Text explains an abnormal end, for logs.
	Text string
	// FromConn and ToConn count the bytes of forwarded buffers.
	FromConn, ToConn uint64
}

// Normal reports whether the session ended by an exchange of ESID 00.
func (r Result) Normal() bool { return r.Cause == "normal" }

// errIdle is returned by the connection's reader when the idle timeout has passed.
var errIdle = errors.New("bridge: idle timeout")

// outcome is a decision to end the session.
type outcome struct {
	cause        string
	reason       tunnelv1.AbortReason
	esid         oftp2.ESIDReason
	text         string // for logs and the tunnel abort
	connText     string // the ESID text for Conn's peer
	abortSession bool
}

type bridge struct {
	cfg  Config // immutable
	conn net.Conn
	sess *tunnel.Session
	w    connWriter
	r    *oftp2.Reader // owned by Run's goroutine

	last     atomic.Int64 // Now() in unix nanoseconds at the last forwarded buffer
	ending   atomic.Bool  // terminate ran, or a clean end is lingering: read deadlines are final
	fromConn atomic.Uint64
	toConn   atomic.Uint64

	mu      sync.Mutex
	end     *outcome         // the first fatal outcome
	esid    oftp2.ESIDReason // reason of the first ESID forwarded
	esidBy  bool             // that ESID came from Conn
	esidHit bool             // an ESID was forwarded
	sent    bool             // the bridge's own ESID reached the connection writer
	cancel  context.CancelFunc
}

// Run bridges cfg.Conn and cfg.Session until the session has ended on both sides, and closes
// the connection. It returns how the session ended. When ctx ends, the session is stopped with
// the context's cause (a *Stop; any other cause counts as a shutdown).
func Run(ctx context.Context, cfg Config) Result {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Linger <= 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.CloseWait <= 0 {
		cfg.CloseWait = DefaultCloseWait
	}
	if cfg.ESIDWriteTimeout <= 0 {
		cfg.ESIDWriteTimeout = DefaultESIDWriteTimeout
	}
	if cfg.ConnName == "" {
		cfg.ConnName = "conn"
	}
	if cfg.SessionName == "" {
		cfg.SessionName = "session"
	}
	b := &bridge{cfg: cfg, conn: cfg.Conn, sess: cfg.Session}
	b.w = connWriter{w: oftp2.NewWriter(cfg.Conn)}
	// An oftp2.Reader holds nothing beyond the buffer it returned, so the reader that read
	// the commands before the bridge (SSRM, SSID) can be replaced by this one.
	b.r = oftp2.NewReader(idleReader{b}, 0)
	defer cfg.Conn.Close()

	wctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	defer cancel()
	b.touch()
	b.armIdle()
	stopWatch := context.AfterFunc(ctx, func() { b.terminate(stopOutcome(ctx)) })
	defer stopWatch()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if o := b.fromSession(wctx); o != nil {
			b.terminate(*o)
		}
	}()
	// A session that ends while the writer is blocked on a peer that does not read is noticed
	// here: terminate's write deadline frees the writer.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-b.sess.Done():
			if err := b.sess.Err(); err != nil {
				if o := b.sessionEnded(err); o != nil {
					b.terminate(*o)
				}
			}
		case <-wctx.Done():
		}
	}()
	defer func() { cancel(); <-watchDone }()
	if o := b.fromConnLoop(); o != nil {
		b.terminate(*o)
	}
	select {
	case <-writerDone:
	case <-time.After(cfg.CloseWait):
		// Conn's side is over (its peer closed after the ESID); the other daemon did not
		// follow with its half-close in time.
		b.sess.Abort(tunnelv1.AbortReason_ABORT_REASON_NORMAL, 0, "the "+cfg.SessionName+" side did not close after the ESID")
		cancel()
		<-writerDone
	}
	if b.lingering() {
		// Whatever the peer still sends after the ESID is read and dropped until it
		// disconnects or Linger has passed (the read deadline was set by terminate).
		_, _ = io.Copy(io.Discard, io.LimitReader(cfg.Conn, 4<<20))
	}
	return b.result()
}

// stopOutcome is the outcome of a stop from outside.
func stopOutcome(ctx context.Context) outcome {
	var s *Stop
	if !errors.As(context.Cause(ctx), &s) {
		s = &Stop{Reason: tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN, ESID: oftp2.ESIDLocalEmergency, Text: "stopped"}
	}
	return outcome{cause: s.Cause(), reason: s.Reason, esid: s.ESID, text: s.Text, connText: "local site emergency close down", abortSession: true}
}

func (b *bridge) touch() { b.last.Store(b.cfg.Now().UnixNano()) }

// armIdle sets the read deadline at which the idle timeout expires, measured with the
// injected clock from the last buffer in either direction.
func (b *bridge) armIdle() {
	if b.cfg.IdleTimeout <= 0 {
		return
	}
	left := time.Duration(b.last.Load()+int64(b.cfg.IdleTimeout)) - time.Duration(b.cfg.Now().UnixNano())
	_ = b.conn.SetReadDeadline(time.Now().Add(left))
}

// idleReader reads Conn for the bridge's oftp2.Reader. A read deadline that expires while
// buffers still flow the other way is moved on; one that expires after IdleTimeout without any
// buffer is errIdle. Deadlines set while the session ends are final.
type idleReader struct{ b *bridge }

func (ir idleReader) Read(p []byte) (int, error) {
	b := ir.b
	for {
		n, err := b.conn.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || b.cfg.IdleTimeout <= 0 || b.ending.Load() {
			return n, err
		}
		if b.cfg.Now().Sub(time.Unix(0, b.last.Load())) >= b.cfg.IdleTimeout {
			return 0, errIdle
		}
		b.armIdle()
	}
}

// fromConnLoop relays Conn → session until Conn's side is over. It returns the outcome that
// ends the session, or nil when this direction ended cleanly.
func (b *bridge) fromConnLoop() *outcome {
	side := b.cfg.ConnSide
	for {
		// Each buffer is read into the session's memory and handed over with WriteOwned: it
		// reaches the tunnel without a copy.
		buf, err := b.r.ReadBufferInto(b.sess.NewBuffer)
		if err != nil {
			return b.connReadEnded(err)
		}
		if b.ending.Load() {
			b.sess.ReleaseBuffer(buf)
			continue // after the bridge's own ESID: dropped, never judged or forwarded
		}
		b.touch()
		if o := b.judge(side, buf, true); o != nil {
			b.sess.ReleaseBuffer(buf)
			if o == errSkip {
				continue
			}
			return o
		}
		b.noteESID(buf, true)
		b.trace(buf, true)
		n, code := len(buf), oftp2.CommandCode(buf[0])
		if err := b.sess.WriteOwned(context.Background(), buf); err != nil {
			return b.sessionEnded(err)
		}
		b.forwarded(n, true)
		if code == oftp2.CodeESID {
			// Conn's peer ended the session; the other side closes after the ESID.
			b.sess.CloseWrite()
			return nil
		}
	}
}

// errSkip is judge's answer for a buffer that crossed an ESID: dropped, not an error.
var errSkip = &outcome{}

// judge lowers an SSID to the limits and passes buf through the validator. It returns nil to
// forward buf, errSkip to drop it, or the violation's outcome.
func (b *bridge) judge(from oftp2.Side, buf []byte, fromConn bool) *outcome {
	if oftp2.CommandCode(buf[0]) == oftp2.CodeSSID && (b.cfg.SSIDBufferSize > 0 || b.cfg.SSIDCredit > 0) {
		// A malformed SSID is left to the validator.
		_, _ = oftp2.LimitSSID(buf, b.cfg.SSIDBufferSize, b.cfg.SSIDCredit)
	}
	if b.cfg.Validator == nil {
		return nil
	}
	_, err := b.cfg.Validator.Check(from, buf)
	if errors.Is(err, oftp2.ErrSessionEnded) {
		return errSkip // in flight when the other side's ESID crossed it
	}
	if err != nil {
		return b.violation(fromConn, oftp2.CommandCode(buf[0]), err)
	}
	if b.cfg.Inspect == nil {
		return nil
	}
	if err := b.cfg.Inspect(fromConn, buf); err != nil {
		text := err.Error()
		var pe *oftp2.ProtocolError
		if errors.As(err, &pe) {
			text = pe.ESID().Text
		}
		return &outcome{cause: "refused", reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, esid: oftp2.ReasonOf(err),
			text: err.Error(), connText: text, abortSession: true}
	}
	return nil
}

// connReadEnded turns the end of Conn's input into an outcome.
func (b *bridge) connReadEnded(err error) *outcome {
	b.mu.Lock()
	afterESID := b.esidHit && b.end == nil
	b.mu.Unlock()
	if afterESID {
		// The peer closed (or went away) after the ESID: the normal end of an OFTP2 session.
		b.sess.CloseWrite()
		return nil
	}
	if b.ending.Load() {
		return nil // the session is ending; the read was cut by the bridge
	}
	var pe *oftp2.ProtocolError
	switch {
	case errors.Is(err, errIdle):
		return &outcome{cause: "idle_timeout", reason: tunnelv1.AbortReason_ABORT_REASON_IDLE_TIMEOUT, esid: oftp2.ESIDTimeout,
			text: fmt.Sprintf("no command in either direction for %s", b.cfg.IdleTimeout), connText: "time out", abortSession: true}
	case errors.As(err, &pe):
		return b.violation(true, 0, err)
	}
	text := "connection to the " + b.cfg.ConnName + " side lost: " + err.Error()
	if errors.Is(err, io.EOF) {
		text = "the " + b.cfg.ConnName + " side closed the connection without ESID"
	}
	return b.connLost(text)
}

// connLost is the outcome of a connection that vanished or failed before the session ended.
func (b *bridge) connLost(text string) *outcome {
	return &outcome{cause: b.cfg.ConnName + "_connection_lost", reason: tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED,
		esid: oftp2.ESIDReason(tunnel.DefaultESID(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED)), text: text,
		connText: "connection lost", abortSession: true}
}

// fromSession relays session → Conn until the session's side is over. It returns the outcome
// that ends the session, or nil when this direction ended cleanly.
func (b *bridge) fromSession(ctx context.Context) *outcome {
	side := b.cfg.ConnSide.Other()
	for {
		buf, err := b.sess.ReadBuffer(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return b.sessionEnded(err)
		}
		b.touch()
		if o := b.judge(side, buf, false); o != nil {
			if o == errSkip {
				continue
			}
			return o
		}
		b.noteESID(buf, false)
		if err := b.w.write(buf); err != nil {
			if b.ending.Load() {
				return nil
			}
			return b.connLost("writing to the " + b.cfg.ConnName + " side failed: " + err.Error())
		}
		b.trace(buf, false)
		b.forwarded(len(buf), false)
		if oftp2.CommandCode(buf[0]) == oftp2.CodeESID {
			// The other side ended the session; Conn's peer closes after the ESID.
			b.closeConnWrite()
			return nil
		}
		// Written and judged (the validator keeps no reference to it): the tunnel reuses the
		// buffer for a later frame, so a bulk transfer allocates no buffer per frame.
		b.sess.ReleaseBuffer(buf)
	}
}

// sessionEnded turns the end of the tunnel session into an outcome: after the other side's
// half-close that follows an ESID, this direction is done; otherwise Conn's peer receives an
// ESID with the session's reason.
func (b *bridge) sessionEnded(err error) *outcome {
	if b.ending.Load() {
		return nil
	}
	var ce *tunnel.CloseError
	switch {
	case errors.Is(err, io.EOF) && b.esidPassed():
		b.closeConnWrite()
		return nil
	case errors.As(err, &ce):
		if ce.Reason == tunnelv1.AbortReason_ABORT_REASON_NORMAL && b.esidPassed() {
			return nil
		}
		esid := oftp2.ESIDReason(ce.ESID)
		if ce.ESID > 99 || !esid.Valid() || esid == oftp2.ESIDNormal {
			esid = oftp2.ESIDReason(tunnel.DefaultESID(ce.Reason))
		}
		return &outcome{cause: b.cfg.SessionName + "_" + tunnel.ReasonString(ce.Reason), reason: ce.Reason, esid: esid,
			text: ce.Text, connText: connText(ce.Reason, ce.Text)}
	case errors.Is(err, io.EOF):
		return &outcome{cause: b.cfg.SessionName + "_connection_lost", reason: tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED,
			esid: oftp2.ESIDReason(tunnel.DefaultESID(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED)),
			text: "the " + b.cfg.SessionName + " side closed without ESID", connText: "connection lost", abortSession: true}
	}
	return &outcome{cause: b.cfg.SessionName + "_failed", reason: tunnelv1.AbortReason_ABORT_REASON_INTERNAL, esid: oftp2.ESIDUnspecified,
		text: err.Error(), connText: "connection lost", abortSession: true}
}

// connText is the ESID text for Conn's peer when the other daemon ended the session. A
// partner sees a reason code and a few words; the details are in the operator's log.
func connText(r tunnelv1.AbortReason, text string) string {
	switch r {
	case tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION:
		return truncate(text, 80)
	case tunnelv1.AbortReason_ABORT_REASON_IDLE_TIMEOUT:
		return "time out"
	case tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, tunnelv1.AbortReason_ABORT_REASON_SHUTDOWN:
		return "local site emergency close down"
	case tunnelv1.AbortReason_ABORT_REASON_REFUSED, tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED:
		return truncate(text, 80)
	}
	return "connection lost"
}

// truncate shortens s to at most n octets of valid UTF-8 (ESIDREAST is UTF-8 text).
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// violation is the outcome of a command that broke RFC 5024: ESID with the validator's reason
// to Conn's peer, abort with PROTOCOL_VIOLATION and the same reason on the session (the other
// daemon sends that ESID to its endpoint).
func (b *bridge) violation(fromConn bool, code oftp2.CommandCode, err error) *outcome {
	if b.cfg.OnViolation != nil {
		b.cfg.OnViolation(Violation{FromConn: fromConn, Command: code, Err: err})
	}
	text := err.Error()
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		text = pe.ESID().Text
	}
	return &outcome{cause: "protocol_violation", reason: tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION, esid: oftp2.ReasonOf(err),
		text: text, connText: text, abortSession: true}
}

// forwarded counts a buffer of n bytes.
func (b *bridge) forwarded(n int, fromConn bool) {
	if fromConn {
		b.fromConn.Add(uint64(n))
	} else {
		b.toConn.Add(uint64(n))
	}
	if b.cfg.OnBuffer != nil {
		b.cfg.OnBuffer(fromConn, n)
	}
}

// trace describes a buffer that passes in a trace line.
func (b *bridge) trace(buf []byte, fromConn bool) {
	if traceEnabled(b.cfg.Logger) {
		from, to := b.cfg.ConnName, b.cfg.SessionName
		if !fromConn {
			from, to = to, from
		}
		b.cfg.Logger.WithFields(logrus.Fields{"from": from, "to": to}).Trace(oftp2.Summary(buf, traceParse))
	}
}

// traceParse reads buffers for trace lines leniently: a line describes what passed, it judges
// nothing (the validator did).
var traceParse = &oftp2.ParseOptions{Charset: oftp2.CharsetLenient}

// traceEnabled reports whether l writes trace lines: the per-session level an operator sets
// through the admin service (or the process level) decides, and the check is one atomic load,
// so that sessions without trace pay nothing for the description of each buffer.
func traceEnabled(l logrus.FieldLogger) bool {
	switch l := l.(type) {
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled(logrus.TraceLevel)
	case *logrus.Logger:
		return l.IsLevelEnabled(logrus.TraceLevel)
	}
	return false
}

// noteESID remembers the first ESID that passes. It runs before the ESID is forwarded: its
// receiver may close at once, and that close must find the ESID noted.
func (b *bridge) noteESID(buf []byte, fromConn bool) {
	if oftp2.CommandCode(buf[0]) != oftp2.CodeESID {
		return
	}
	reason := oftp2.ESIDUnspecified
	if cmd, err := oftp2.Parse(buf, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient}); err == nil {
		reason = cmd.(*oftp2.ESID).Reason
	}
	b.mu.Lock()
	if !b.esidHit {
		b.esidHit, b.esid, b.esidBy = true, reason, fromConn
	}
	b.mu.Unlock()
}

func (b *bridge) esidPassed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.esidHit
}

func (b *bridge) lingering() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent
}

// closeConnWrite ends the connection's write side after the last buffer: Conn's peer reads
// the end of stream, and the read side lingers for its close.
func (b *bridge) closeConnWrite() {
	b.w.shut()
	if hc, ok := b.conn.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	}
	b.ending.Store(true)
	_ = b.conn.SetReadDeadline(time.Now().Add(b.cfg.CloseWait))
}

// terminate ends the session for good with o: the ESID to Conn's peer where the protocol
// allows one (no ESID passed yet), the abort to the other side, and the connection's input
// cut so that the reader returns. Only the first call acts.
func (b *bridge) terminate(o outcome) {
	b.mu.Lock()
	if b.end != nil {
		b.mu.Unlock()
		return
	}
	b.end = &o
	esidPassed := b.esidHit
	b.mu.Unlock()
	b.ending.Store(true)
	if b.cfg.Logger != nil {
		b.cfg.Logger.WithFields(logrus.Fields{"cause": o.cause, "esid_reason": fmt.Sprintf("%02d", uint8(o.esid))}).Debug("bridge: session ending: " + o.text)
	}

	sent := false
	if !esidPassed {
		// A write to a peer that stopped reading may be blocked holding the writer; the
		// deadline frees it (that write fails, and so does the ESID: a TLS stream is broken
		// after a timed-out write).
		_ = b.conn.SetWriteDeadline(time.Now().Add(b.cfg.ESIDWriteTimeout))
		sent = b.w.esid(o.esid, o.connText)
	} else {
		b.w.shut()
	}
	if o.abortSession {
		b.sess.Abort(o.reason, uint32(o.esid), o.text)
	}
	b.cancel()
	if sent {
		// Let the peer read the ESID: close the write side, then drain until it hangs up. A
		// connection closed with unread input sends a TCP reset, and the reset can destroy the
		// ESID before the peer has read it (RFC 5024 §9.3, WF_NDISC).
		b.mu.Lock()
		b.sent = true
		b.mu.Unlock()
		if hc, ok := b.conn.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
		}
		_ = b.conn.SetReadDeadline(time.Now().Add(b.cfg.Linger))
		return
	}
	_ = b.conn.SetReadDeadline(time.Unix(1, 0))
}

// result is the session's end as seen when Run returns.
func (b *bridge) result() Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := Result{FromConn: b.fromConn.Load(), ToConn: b.toConn.Load(), Reason: tunnelv1.AbortReason_ABORT_REASON_NORMAL}
	switch {
	case b.end != nil:
		r.Cause, r.Reason, r.ESID, r.Text = b.end.cause, b.end.reason, b.end.esid, b.end.text
	case b.esidHit:
		r.ESID, r.Cause = b.esid, "normal"
		if b.esid != oftp2.ESIDNormal {
			by := b.cfg.SessionName
			if b.esidBy {
				by = b.cfg.ConnName
			}
			r.Cause = "esid_from_" + by
		}
	default:
		// Both directions ended without ESID and without a fatal outcome: cannot happen with
		// the rules above, but is never reported as normal.
		r.Cause, r.Reason, r.ESID = b.cfg.ConnName+"_connection_lost", tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, oftp2.ESIDUnspecified
	}
	return r
}

// connWriter serialises writes to the connection: relayed buffers come from the writer
// goroutine, a final ESID from whichever goroutine ends the session.
type connWriter struct {
	mu     sync.Mutex
	w      *oftp2.Writer
	closed bool // an ESID was sent or the write side is closed; nothing more is written
}

func (cw *connWriter) write(buf []byte) error {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.closed {
		return net.ErrClosed
	}
	return cw.w.WriteBuffer(buf)
}

// esid writes a final ESID and closes the writer. It reports whether the ESID was written.
func (cw *connWriter) esid(reason oftp2.ESIDReason, text string) bool {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.closed {
		return false
	}
	cw.closed = true
	return cw.w.WriteCommand(&oftp2.ESID{Reason: reason, Text: text}) == nil
}

// shut closes the writer without writing.
func (cw *connWriter) shut() {
	cw.mu.Lock()
	cw.closed = true
	cw.mu.Unlock()
}

// Refuse ends a connection whose session never reached the tunnel: an ESID with reason and
// text (shortened to 80 octets), the write side closed, and the input drained for DefaultLinger
// so that the ESID is not destroyed by a reset. It does not close conn.
func Refuse(conn net.Conn, reason oftp2.ESIDReason, text string) error {
	_ = conn.SetWriteDeadline(time.Now().Add(DefaultESIDWriteTimeout))
	if err := oftp2.NewWriter(conn).WriteCommand(&oftp2.ESID{Reason: reason, Text: truncate(text, 80)}); err != nil {
		return err
	}
	if hc, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(DefaultLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 4<<20))
	return nil
}
