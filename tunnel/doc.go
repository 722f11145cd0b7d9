// Package tunnel multiplexes OFTP2 sessions over the one bidirectional
// Connect stream between smartproxy-client and smartproxy-server
// (smartproxy.tunnel.v1). A [Mux] runs on each end of a [Stream] of frames;
// it carries any number of [Session]s and passes every other frame (Hello,
// Welcome, configuration, license, events, Drain) to a control handler.
//
// The package knows frames, not gRPC: tunnel/transport adapts the gRPC
// Connect stream (codec, buffer pool, mutual TLS, reconnects) and hands the
// adapted stream to [New]; tests run the Mux over in-memory pipes.
//
// # Frame flow
//
// Every frame, from the first, goes through the Mux: it starts with Run,
// then the client sends Hello with [Mux.SendControl], the server's control
// handler receives it and answers Welcome the same way, and only then does
// the client use the tunnel. After that, either end may open a session:
//
//	client                                    server
//	Mux.Run                                   Mux.Run
//	SendControl ── Hello{protocol_version} ──► Config.Control
//	Config.Control ◄── Welcome ──              SendControl
//
//	opener                                   accepter
//	Mux.Open ── SessionOpen{id, initial_window=W} ──►  Config.Accept(s)
//	                                                   (connects its side, then)
//	         ◄── SessionOpened{accepted, initial_window=W} ── s.Accept
//	WriteBuffer ── SessionData{id, buffer} ──►         ReadBuffer
//	ReadBuffer  ◄── SessionWindow{id, credit} ──       (after W/4 bytes read)
//	CloseWrite  ── SessionHalfClose{id} ──►            ReadBuffer → io.EOF
//	            ◄── SessionHalfClose{id} ──            CloseWrite   (session ends, Err nil)
//	Abort       ── SessionAbort{id, reason, esid} ──►  Err → *CloseError{Remote: true}
//
// Session ids are chosen by the opener: odd on the client side, even on the
// server side ([Side]), increasing, never reused. Every buffer of a
// SessionData is exactly one OFTP2 exchange buffer (one command, at most
// 99,999 bytes), so the relay on each side reads and writes whole commands.
// A SessionData carries one buffer, or, to a peer that announced
// [CapabilityDataBatches] in Hello or Welcome ([Mux.UsePeerCapabilities]),
// all the buffers a session has queued up to 512 KiB (more_buffers): the
// writer then sends, and the peer receives and dispatches, one message for
// several buffers, which halves the messages per byte of a bulk transfer.
//
// # Windows and backpressure
//
// Every session has a receive window W on each side ([Config.Window],
// 256 KiB by default). SessionOpen and SessionOpened each carry the
// sender's W as the initial credit of the other side. A sender may have at
// most the credit it was granted in flight: [Session.WriteBuffer] takes
// credit and blocks while there is not enough, so the code that reads the
// partner's or the internal server's socket stops reading and TCP pushes
// back to that one peer only. The receiving Mux queues each arriving buffer
// for its session without blocking; the bytes queued are bounded by W,
// which bounds memory per session. When the user has read a quarter of W,
// the receiver grants that much back with SessionWindow. A peer that sends
// beyond its credit gets that one session aborted with
// ABORT_REASON_CREDIT_EXCEEDED; the tunnel and every other session go on.
//
// # One writer, fair
//
// Only the Mux's writer goroutine calls [Stream.Send]. Frames the stream's
// owner sends of its own (the transport server's Drain) come through
// [Mux.SendControl] too ([ControlAttacher]). The writer sends, in this
// order: pending window grants; control frames in the order queued (opens,
// answers, aborts, pongs, SessionSync, frames from [Mux.SendControl]); then
// one buffer (or one batch) from each session with data waiting,
// round-robin. A session with a long backlog therefore delays another
// session by at most one batch per other busy session, and a configuration
// push waits for at most one batch: both bounded by the session window. Half-close travels behind the session's data; abort overtakes
// it and drops what was not sent. The writer reuses its frames and returns
// data buffers to a pool, so steady-state sending allocates almost nothing.
//
// The reading goroutine (the caller of [Mux.Run]) never blocks on a session:
// it appends data to the session's queue, adds credit, records half-closes
// and aborts, and hands SessionOpen to [Config.Accept] and control frames to
// [Config.Control], which must not block either. The Mux starts no goroutine
// per session.
//
// # Close semantics
//
// Half-close ([Session.CloseWrite]) ends one direction after its data; the
// session ends cleanly when both directions are half-closed, and data
// already received can still be read. Abort ([Session.Abort]) ends both
// directions at once with an [tunnelv1.AbortReason], an ESID reason code
// for the OFTP2 peer and a text; [Session.Err] and the blocking methods then
// return a [*CloseError]. Both are idempotent. When the stream fails or
// Run's context ends, every session still open ends at once with
// ABORT_REASON_TUNNEL_LOST, on both sides, and every blocked call returns.
// For an orderly stop, [Mux.Shutdown] first aborts every session with
// ABORT_REASON_SHUTDOWN, tells the peer, and refuses new sessions.
//
// # Reconciliation
//
// Every [Config.ReconcileInterval] each side sends SessionSync: the ids of
// all sessions the peer can know of, and the highest session id of the
// peer's that it has seen. The receiver ends, with
// ABORT_REASON_UNKNOWN_SESSION, every session it has that the peer should
// know but does not list (its close was lost), and answers every listed id
// it does not know with SessionAbort. Sessions this side opened whose
// SessionOpen the peer has not seen yet (id above the peer's "highest seen")
// are left alone, so a session being opened is never killed; the stream is
// ordered, so this needs no timers.
//
// # Buffers
//
// [Session.WriteBuffer] copies the caller's buffer into one from a
// [bufpool.Pool], and the writer returns it to the pool once the frame has
// been sent. [Session.ReadBuffer] hands over the buffer the stream decoded;
// it belongs to the caller.
package tunnel
