package endpoint

import (
	"errors"
	"fmt"

	"smartproxy/oftp2"
)

// ErrConnectionLost is wrapped by the error of a session whose connection
// failed or closed without an End Session command.
var ErrConnectionLost = errors.New("endpoint: connection lost")

// SessionError reports a session that ended with an ESID other than a
// normal end (RFC 5024 §5.3.11), sent by either side.
type SessionError struct {
	// Reason is the ESID reason code.
	Reason oftp2.ESIDReason
	// Text is the ESID reason text.
	Text string
	// Remote is true when the partner sent the ESID and false when this
	// endpoint ended the session.
	Remote bool
	// Err is the local cause when Remote is false (a *oftp2.ProtocolError,
	// a timeout, a context error, ...); nil otherwise.
	Err error
}

// Error implements the error interface.
func (e *SessionError) Error() string {
	who := "ended by this endpoint"
	if e.Remote {
		who = "ended by the partner"
	}
	s := fmt.Sprintf("endpoint: session %s with ESID %s", who, e.Reason)
	if e.Text != "" {
		s += ": " + e.Text
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the local cause.
func (e *SessionError) Unwrap() error { return e.Err }

// FileRefusedError reports a Start File Negative Answer (SFNA, RFC 5024
// §5.3.5): the partner did not accept the file.
type FileRefusedError struct {
	// Reason is SFNAREAS.
	Reason oftp2.SFNAReason
	// Retry is SFNARRTR: the partner suggests to retry later.
	Retry bool
	// Text is SFNAREAST.
	Text string
}

// Error implements the error interface.
func (e *FileRefusedError) Error() string {
	s := fmt.Sprintf("endpoint: file refused (SFNA %s, retry %t)", e.Reason, e.Retry)
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// FileRejectedError reports an End File Negative Answer (EFNA, RFC 5024
// §5.3.10): the partner received the file but did not accept it.
type FileRejectedError struct {
	// Reason is EFNAREAS.
	Reason oftp2.EFNAReason
	// Text is EFNAREAST.
	Text string
}

// Error implements the error interface.
func (e *FileRejectedError) Error() string {
	s := fmt.Sprintf("endpoint: file rejected at end of file (EFNA %s)", e.Reason)
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// NERPError is a Negative End Response (NERP, RFC 5024 §5.3.14). A
// Config.Process function returns it to choose the NERP reason; a sender
// finds it in Delivery.Err when the final destination refused the file
// after receiving it.
type NERPError struct {
	// Reason is NERPREAS.
	Reason oftp2.NERPReason
	// Creator is NERPCREA, the location that created the NERP (filled by
	// the endpoint when sending).
	Creator string
	// Text is NERPREAST.
	Text string
}

// Error implements the error interface.
func (e *NERPError) Error() string {
	s := fmt.Sprintf("endpoint: negative end response (NERP %s)", e.Reason)
	if e.Creator != "" {
		s += " from " + e.Creator
	}
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// ErrNotConfirmed is the Delivery.Err of a file the partner acknowledged
// with EFPA but for which no end-to-end response (EERP or NERP) arrived
// before the session ended; the response may come in a later session.
var ErrNotConfirmed = errors.New("endpoint: file stored by the partner, end-to-end response still outstanding")

// ErrNotSent is the Delivery.Err of a file that was not (completely) sent
// because the session ended first.
var ErrNotSent = errors.New("endpoint: file not sent")
