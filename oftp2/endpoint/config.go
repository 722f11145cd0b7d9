package endpoint

import (
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
)

// Role says which side of the network connection an endpoint is
// (RFC 5024 §4.2.1).
type Role uint8

const (
	// Initiator is the calling side: it waits for SSRM, sends the first SSID
	// and is the first Speaker (§3.3.4.1).
	Initiator Role = iota
	// Responder is the called side: it sends SSRM first and answers the
	// Initiator's SSID with its own.
	Responder
)

// String returns "initiator" or "responder".
func (r Role) String() string {
	switch r {
	case Initiator:
		return "initiator"
	case Responder:
		return "responder"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Defaults for the zero values of Config. The buffer size and credit were
// chosen by measurement over TLS on loopback (docs/benchmarks.md): larger
// buffers cut the per-command cost; beyond a window of a few hundred
// kilobytes the credit stops mattering on a fast link, and a larger window
// only helps links with a long round trip. The memory a peer may have in
// flight is credit × buffer size.
const (
	// DefaultBufferSize is SSIDSDEB when Config.BufferSize is zero.
	DefaultBufferSize = 65535
	// DefaultCredit is SSIDCRED when Config.Credit is zero.
	DefaultCredit = 64
	// DefaultTimeout is the inactivity timer when Config.Timeout is zero.
	DefaultTimeout = 2 * time.Minute
)

// Config configures an Endpoint. The zero value of every field is a usable
// default, except ID, which is required, and ReceiveDir, which is required
// for receiving files.
type Config struct {
	// Role is the side of the connection. The zero value is Initiator.
	Role Role
	// Mode is the send/receive capability offered in SSIDSR (RFC 5024
	// §5.3.2). If zero, ModeBoth is used when ReceiveDir is set and
	// ModeSender otherwise.
	Mode oftp2.Mode
	// ID is the endpoint's own Odette ID (SSIDCODE). Required.
	ID string
	// Password is the endpoint's own password (SSIDPSWD), which the partner
	// checks. It may be empty.
	Password oftp2.Password
	// PartnerID is the Odette ID the partner must present in its SSID. If
	// empty (and Partners is nil), any ID is accepted.
	PartnerID string
	// PartnerPassword is the password the partner must present. It is
	// checked when PartnerID is set.
	PartnerPassword oftp2.Password
	// Partners is a Responder's table of partners: Odette ID → the password
	// that partner must present. If not nil it replaces PartnerID and
	// PartnerPassword: an ID not in the table is refused with ESID 03, a
	// wrong password with ESID 04.
	Partners map[string]oftp2.Password
	// BufferSize is the largest data exchange buffer offered in SSIDSDEB,
	// 128–99999 octets; the smaller offer of the two sides is used. If
	// zero, DefaultBufferSize.
	BufferSize int
	// Credit is the credit window offered in SSIDCRED, 1–999; the
	// Responder answers with at most the Initiator's value. If zero,
	// DefaultCredit.
	Credit int
	// DisableCompression stops the endpoint from offering buffer compression
	// (SSIDCMPR). The zero value offers it; it is used when both sides offer it.
	DisableCompression bool
	// DisableRestart stops the endpoint from offering restart (SSIDREST).
	// The zero value offers it; it is used when both sides offer it.
	DisableRestart bool
	// Timeout is the inactivity timer (RFC 5024 §4.7.2): how long the
	// endpoint waits for the next command before it ends the session with
	// ESID 09, and how long a write may block. If zero, DefaultTimeout.
	Timeout time.Duration
	// Charset is the character-set policy for X(n) fields, applied to the
	// commands received and to those sent. The zero value is
	// oftp2.CharsetStrict.
	Charset oftp2.Charset
	// ReceiveDir is where received files are stored. A file appears there
	// under its final name (the dataset name made safe for a file system,
	// with the date and time appended when the name is taken) only when it
	// is complete and its counts are verified. The hidden directory
	// ReceiveDir/.oftp2 holds the files being received and their restart
	// state (partial/), the metadata of each received file
	// (received/NAME.json, see ReceivedFile and ReadMetadata) and the
	// end-to-end responses not yet delivered (responses/). If empty, the
	// endpoint cannot receive files and Mode must be ModeSender.
	ReceiveDir string
	// CheckpointInterval is the amount of received data after which the
	// restart state of a file being received is made durable. If zero,
	// DefaultCheckpointInterval. The state is also saved when a session
	// breaks off.
	CheckpointInterval int64
	// Outbox, if not nil, is asked once per session, after the partner is
	// identified, for files to send to it in addition to those passed to
	// Run.
	Outbox func(partner string) ([]OutgoingFile, error)
	// Process, if not nil, is called for each file after it has been stored
	// and acknowledged with EFPA. A nil result sends an EERP to the
	// originator; an error sends a NERP instead, with the reason of a
	// *NERPError or NERP reason 34 (file processing failed). It runs inside
	// the session while the partner's inactivity timer runs: keep it short.
	// Concurrent sessions may call it concurrently.
	Process func(ReceivedFile) error
	// Lenient, if true, judges the partner by the endpoint's own state
	// machine only, as before the endpoint used oftp2.Validator; for interop
	// experiments with partners the proxy would refuse. If false, every
	// exchange buffer in both directions passes an oftp2.Validator, the
	// checks the SmartProxy applies, so that a partner the proxy refuses
	// (an ESID 00 before the EFPA, DATA beyond the credit, a field out of
	// its range) is refused here too, with the validator's ESID reason.
	Lenient bool
	// Logger receives the endpoint's log. If nil, logging is discarded.
	Logger logrus.FieldLogger
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// withDefaults checks c and fills the zero values.
func (c Config) withDefaults() (Config, error) {
	if c.ID == "" {
		return c, errors.New("endpoint: Config.ID is required")
	}
	if c.Role != Initiator && c.Role != Responder {
		return c, fmt.Errorf("endpoint: unknown %v", c.Role)
	}
	if c.Mode == 0 {
		c.Mode = oftp2.ModeSender
		if c.ReceiveDir != "" {
			c.Mode = oftp2.ModeBoth
		}
	}
	if !c.Mode.Valid() {
		return c, fmt.Errorf("endpoint: unknown mode %v", c.Mode)
	}
	if c.Mode != oftp2.ModeSender && c.ReceiveDir == "" {
		return c, fmt.Errorf("endpoint: mode %v needs a ReceiveDir", c.Mode)
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.BufferSize < oftp2.MinExchangeBuffer || c.BufferSize > oftp2.MaxExchangeBuffer {
		return c, fmt.Errorf("endpoint: buffer size %d outside %d..%d", c.BufferSize, oftp2.MinExchangeBuffer, oftp2.MaxExchangeBuffer)
	}
	if c.Credit == 0 {
		c.Credit = DefaultCredit
	}
	if c.Credit < 1 || c.Credit > oftp2.MaxCredit {
		return c, fmt.Errorf("endpoint: credit %d outside 1..%d", c.Credit, oftp2.MaxCredit)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 {
		return c, fmt.Errorf("endpoint: negative timeout %v", c.Timeout)
	}
	if c.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		c.Logger = l
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	// The own identity must survive the partner's decoder.
	id := oftp2.SSID{ID: c.ID, Password: c.Password, BufferSize: c.BufferSize, Mode: c.Mode, Credit: c.Credit}
	if err := oftp2.Validate(&id, &oftp2.ParseOptions{Charset: c.Charset}); err != nil {
		return c, fmt.Errorf("endpoint: own identity: %w", err)
	}
	return c, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
