package tunnel

import (
	"errors"
	"fmt"
	"strings"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Errors returned by the multiplexer. Callers compare with errors.Is.
var (
	// ErrClosed is returned by operations on a Mux that has stopped (its
	// stream failed, its context ended, or Shutdown was called) and by Run
	// when it is called a second time.
	ErrClosed = errors.New("tunnel: mux closed")
	// ErrWriteClosed is returned by Session.WriteBuffer after CloseWrite.
	ErrWriteClosed = errors.New("tunnel: session write side closed")
	// ErrNotPending is returned by Session.Accept and Session.Reject for a
	// session that is not waiting to be accepted (it was opened by this side,
	// or it was already accepted or rejected).
	ErrNotPending = errors.New("tunnel: session is not waiting to be accepted")
)

// CloseError is why a session ended other than by a half-close from both
// sides. Session.Err, Session.ReadBuffer and Session.WriteBuffer return it; a
// refused Mux.Open returns it too. Code that relays the session to an OFTP2
// peer sends an ESID with ESID as reason code where the protocol state allows.
type CloseError struct {
	// Reason is the tunnel-level reason.
	Reason tunnelv1.AbortReason
	// ESID is the RFC 5024 ESID reason code (section 5.3.11) for the OFTP2
	// peer: the one the aborting side chose, or DefaultESID(Reason).
	ESID uint32
	// Text explains the reason, for logs. It may be empty.
	Text string
	// Remote is true when the other end of the tunnel ended or refused the
	// session, false when this side did (including tunnel loss and
	// reconciliation).
	Remote bool
}

// Error returns a one-line description.
func (e *CloseError) Error() string {
	var b strings.Builder
	b.WriteString("tunnel: session ")
	if e.Remote {
		b.WriteString("ended by peer: ")
	} else {
		b.WriteString("ended: ")
	}
	b.WriteString(ReasonString(e.Reason))
	fmt.Fprintf(&b, " (ESID %02d)", e.ESID)
	if e.Text != "" {
		b.WriteString(": ")
		b.WriteString(e.Text)
	}
	return b.String()
}

// ReasonString returns the reason's name without the enum prefix, in lower
// case, e.g. "credit_exceeded". It is the value used in log fields.
func ReasonString(r tunnelv1.AbortReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ABORT_REASON_"))
}

// DefaultESID returns the ESID reason code (RFC 5024 section 5.3.11) that
// fits a tunnel reason when the aborting side did not choose one: 00 normal
// for NORMAL, 02 protocol violation for PROTOCOL_VIOLATION, 08 resources not
// available for REFUSED and CONNECT_FAILED, 09 timeout for IDLE_TIMEOUT, 99
// unspecified for INTERNAL and UNSPECIFIED, and 05 local emergency close down
// for every reason that is the proxy's own trouble (tunnel lost, shutdown,
// administrator, credit, frame errors, reconciliation, peer closed).
func DefaultESID(r tunnelv1.AbortReason) uint32 {
	switch r {
	case tunnelv1.AbortReason_ABORT_REASON_NORMAL:
		return 0
	case tunnelv1.AbortReason_ABORT_REASON_PROTOCOL_VIOLATION:
		return 2
	case tunnelv1.AbortReason_ABORT_REASON_REFUSED, tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED:
		return 8
	case tunnelv1.AbortReason_ABORT_REASON_IDLE_TIMEOUT:
		return 9
	case tunnelv1.AbortReason_ABORT_REASON_UNSPECIFIED, tunnelv1.AbortReason_ABORT_REASON_INTERNAL:
		return 99
	default:
		return 5
	}
}

// closeError builds a CloseError, filling in the default ESID for a
// non-normal reason without one.
func closeError(reason tunnelv1.AbortReason, esid uint32, text string, remote bool) *CloseError {
	if esid == 0 && reason != tunnelv1.AbortReason_ABORT_REASON_NORMAL {
		esid = DefaultESID(reason)
	}
	return &CloseError{Reason: reason, ESID: esid, Text: text, Remote: remote}
}

// ProtocolError is a frame that breaks the tunnel protocol as a whole (not
// just one session): Run returns it and stops reading.
type ProtocolError struct {
	// Text says what was wrong.
	Text string
}

// Error returns a one-line description.
func (e *ProtocolError) Error() string { return "tunnel: protocol error: " + e.Text }
