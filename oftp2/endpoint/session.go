package endpoint

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
)

// errNormalEnd is returned internally when the session ended with ESID 00.
var errNormalEnd = errors.New("normal end of session")

// session is one OFTP2 session. All fields are owned by the goroutine that
// runs it (Endpoint.Run), except interrupted, which the context callback
// closes.
type session struct {
	e    *Endpoint
	cfg  *Config
	ctx  context.Context
	conn net.Conn
	rd   *oftp2.Reader
	wr   *oftp2.Writer
	opts oftp2.ParseOptions
	log  *logrus.Entry
	res  *Result

	// v judges every exchange buffer in both directions as the SmartProxy
	// does; nil when Config.Lenient. own and peer are the validator's sides
	// of this endpoint and of its partner.
	v         *oftp2.Validator
	own, peer oftp2.Side

	interrupted chan struct{}

	// Negotiated in the Start Session phase (RFC 5024 §4.2, §5.3.2).
	partner    string
	bufSize    int
	window     int
	compress   bool
	restart    bool
	canSend    bool
	canReceive bool

	queue    []*delivery // files still to offer, in order
	awaiting []*delivery // files stored by the partner, waiting for EERP/NERP
	all      []*delivery
	cur      *incoming // the file being received, if any
	ended    bool      // an ESID was sent or received: linger before closing
	out      []byte    // encoding buffer of own commands checked by v
}

// delivery is a Delivery under way.
type delivery struct {
	Delivery
	p *preparedFile
}

func (s *session) addDelivery(p *preparedFile) *delivery {
	d := &delivery{Delivery: Delivery{File: p.src, Status: StatusNotSent, Err: ErrNotSent}, p: p}
	s.all = append(s.all, d)
	return d
}

// interrupt unblocks a read the session waits in when its context is
// cancelled. Writes are left alone: every write checks the context first and
// is bounded by the inactivity timer, and a TLS write cut off by a deadline
// leaves a partial record behind that corrupts everything sent after it, the
// ESID 05 of cancelled and the close_notify of finish included.
func (s *session) interrupt() {
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
	close(s.interrupted)
}

// finish fills the Result, keeps or removes a partial file, logs the end of
// the session and closes the connection.
func (s *session) finish(err error) {
	if s.e.inbox != nil {
		s.e.inbox.release(s)
	}
	if s.cur != nil {
		if aerr := s.cur.abort(); aerr != nil {
			s.log.WithError(aerr).Warn("could not save the restart state of the file being received")
		} else if s.restart {
			s.log.WithFields(logrus.Fields{"dataset": s.cur.sfid.DatasetName, "records": s.cur.st.Records, "units": s.cur.st.Units}).Info("transfer interrupted; partial file kept for restart")
		}
		s.cur = nil
	}
	for _, d := range s.all {
		s.res.Sent = append(s.res.Sent, d.Delivery)
	}
	if s.ended {
		// WF_NDISC (§9.3): after an ESID wait briefly for the partner to
		// disconnect, so that the ESID is not lost to a reset.
		if cw, ok := s.conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(min(s.cfg.Timeout, 2*time.Second)))
		_, _ = io.Copy(io.Discard, io.LimitReader(s.conn, 1<<20))
	}
	_ = s.conn.Close()
	l := s.log
	if s.partner != "" {
		l = l.WithField("partner", s.partner)
	}
	switch {
	case err == nil:
		l.WithFields(logrus.Fields{"sent": len(s.res.Sent), "received": len(s.res.Received)}).Info("session ended normally")
	default:
		// The caller gets err and decides how to report it.
		l.WithError(err).Debug("session ended abnormally")
	}
}

// run drives the session: Start Session, then the Speaker and Listener
// turns until an ESID (RFC 5024 §3.3.4, §9.10–§9.12).
func (s *session) run() error {
	var err error
	if s.cfg.Role == Responder {
		err = s.startResponder()
	} else {
		err = s.startInitiator()
	}
	if err != nil {
		return s.result(err)
	}
	s.log = s.log.WithField("partner", s.partner)
	s.log.WithFields(logrus.Fields{"buffer_size": s.bufSize, "credit": s.window, "compression": s.compress, "restart": s.restart}).Info("session started")
	if err := s.loadOutbox(); err != nil {
		return s.result(err)
	}
	// The Initiator is the first Speaker (§3.3.4.1).
	speaker := s.cfg.Role == Initiator
	cdReceived := false // Speaker in IDLESPCD: the turn was just handed over
	cdSent := false     // Listener in IDLELICD: the turn was just given away
	for {
		if speaker {
			var next turn
			next, err = s.speak(cdReceived)
			if err != nil {
				return s.result(err)
			}
			cdSent = next == turnListenerAfterCD
		} else {
			var next turn
			next, err = s.listen(cdSent)
			if err != nil {
				return s.result(err)
			}
			cdReceived = next == turnSpeakerAfterCD
		}
		speaker = !speaker
	}
}

// result turns the internal normal-end marker into a nil error and fills
// the final state of the deliveries.
func (s *session) result(err error) error {
	for _, d := range s.awaiting {
		d.Err = ErrNotConfirmed
	}
	if errors.Is(err, errNormalEnd) {
		return nil
	}
	return err
}

func (s *session) loadOutbox() error {
	if s.cfg.Outbox == nil {
		return nil
	}
	files, err := s.cfg.Outbox(s.partner)
	if err != nil {
		s.log.WithError(err).Warn("outbox")
		return nil
	}
	var extra []*delivery
	for _, f := range files {
		p, err := prepare(f, s.cfg.ID, s.partner)
		if err != nil {
			d := &delivery{Delivery: Delivery{File: f, Status: StatusNotSent, Err: err}}
			s.all = append(s.all, d)
			s.log.WithError(err).Warn("outbox file cannot be sent")
			continue
		}
		extra = append(extra, s.addDelivery(p))
	}
	s.queue = append(extra, s.queue...)
	return nil
}

type turn uint8

const (
	turnListener        turn = iota // IDLELI
	turnListenerAfterCD             // IDLELICD: we sent CD on our own
	turnSpeaker                     // IDLESP: CD received after our EFPA asked for it
	turnSpeakerAfterCD              // IDLESPCD: unsolicited CD received
)

// ---- Start Session phase (§4.2, §9.8) ----

func (s *session) ownSSID() *oftp2.SSID {
	return &oftp2.SSID{
		Level:       5,
		ID:          s.cfg.ID,
		Password:    s.cfg.Password,
		BufferSize:  s.cfg.BufferSize,
		Mode:        s.cfg.Mode,
		Compression: !s.cfg.DisableCompression,
		Restart:     !s.cfg.DisableRestart,
		Credit:      s.cfg.Credit,
	}
}

// checkPartner checks the partner's identification code and password
// (ESID 03, 04).
func (s *session) checkPartner(id *oftp2.SSID) error {
	var want oftp2.Password
	switch {
	case s.cfg.Partners != nil:
		pw, ok := s.cfg.Partners[id.ID]
		if !ok {
			return s.abort(oftp2.ESIDUserCodeNotKnown, "", fmt.Errorf("partner %q is not configured", id.ID))
		}
		want = pw
	case s.cfg.PartnerID != "":
		if id.ID != s.cfg.PartnerID {
			return s.abort(oftp2.ESIDUserCodeNotKnown, "", fmt.Errorf("partner presented %q, want %q", id.ID, s.cfg.PartnerID))
		}
		want = s.cfg.PartnerPassword
	default:
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(id.Password), []byte(want)) != 1 {
		return s.abort(oftp2.ESIDInvalidPassword, "", fmt.Errorf("partner %q presented a wrong password", id.ID))
	}
	return nil
}

// modes computes what each side may do from the two SSIDSR values;
// S with S or R with R is incompatible (§5.3.2).
func (s *session) modes(own, peer oftp2.Mode) bool {
	s.canSend = own != oftp2.ModeReceiver && peer != oftp2.ModeSender
	s.canReceive = own != oftp2.ModeSender && peer != oftp2.ModeReceiver
	return s.canSend || s.canReceive
}

func (s *session) startResponder() error {
	if err := s.send(&oftp2.SSRM{}); err != nil {
		return err
	}
	cmd, err := s.recv()
	if err != nil {
		return err
	}
	id, ok := cmd.(*oftp2.SSID)
	if !ok {
		return s.violation(cmd, "want SSID")
	}
	s.partner = id.ID
	s.log = s.log.WithField("partner", id.ID)
	if err := s.checkPartner(id); err != nil {
		return err
	}
	own := s.ownSSID()
	switch {
	case id.Level < 5:
		return s.abort(oftp2.ESIDModeIncompatible, "OFTP 2.0 (level 5) required", fmt.Errorf("partner offers protocol level %d", id.Level))
	case id.SecureAuth:
		// §5.3.2 SSIDAUTH is not negotiable; this endpoint does not
		// implement secure authentication (§9.8.2 G: ESID 12).
		return s.abort(oftp2.ESIDSecureAuthIncompatible, "secure authentication not supported", errors.New("partner requires secure authentication"))
	}
	// The answer mode (§3.2.1): the complement of a one-way partner, our
	// own capability otherwise.
	switch id.Mode {
	case oftp2.ModeSender:
		if own.Mode == oftp2.ModeSender {
			return s.abort(oftp2.ESIDModeIncompatible, "both sides sender-only", errors.New("partner is sender-only, so is this endpoint"))
		}
		own.Mode = oftp2.ModeReceiver
	case oftp2.ModeReceiver:
		if own.Mode == oftp2.ModeReceiver {
			return s.abort(oftp2.ESIDModeIncompatible, "both sides receiver-only", errors.New("partner is receiver-only, so is this endpoint"))
		}
		own.Mode = oftp2.ModeSender
	}
	s.modes(own.Mode, id.Mode)
	own.BufferSize = min(own.BufferSize, id.BufferSize)
	own.Credit = min(own.Credit, id.Credit)
	own.Compression = own.Compression && id.Compression
	own.Restart = own.Restart && id.Restart
	s.bufSize, s.window, s.compress, s.restart = own.BufferSize, own.Credit, own.Compression, own.Restart
	if err := s.send(own); err != nil {
		return err
	}
	s.res.Partner = id.ID
	return nil
}

func (s *session) startInitiator() error {
	cmd, err := s.recv()
	if err != nil {
		return err
	}
	if _, ok := cmd.(*oftp2.SSRM); !ok {
		return s.violation(cmd, "want SSRM")
	}
	own := s.ownSSID()
	if err := s.send(own); err != nil {
		return err
	}
	if cmd, err = s.recv(); err != nil {
		return err
	}
	id, ok := cmd.(*oftp2.SSID)
	if !ok {
		return s.violation(cmd, "want SSID")
	}
	s.partner = id.ID
	if err := s.checkPartner(id); err != nil {
		return err
	}
	// §9.8.2 D: the Responder's answer must fit our offer.
	var bad string
	switch {
	case id.SecureAuth != own.SecureAuth:
		return s.abort(oftp2.ESIDSecureAuthIncompatible, "", errors.New("secure authentication requirements differ"))
	case id.Level < 5:
		bad = fmt.Sprintf("protocol level %d", id.Level)
	case id.Credit > own.Credit:
		bad = fmt.Sprintf("credit %d above the offered %d", id.Credit, own.Credit)
	case id.Compression && !own.Compression:
		bad = "compression not offered"
	case id.Restart && !own.Restart:
		bad = "restart not offered"
	case !s.modes(own.Mode, id.Mode):
		bad = fmt.Sprintf("mode %v against %v", id.Mode, own.Mode)
	}
	if bad != "" {
		return s.abort(oftp2.ESIDModeIncompatible, bad, fmt.Errorf("responder's SSID: %s", bad))
	}
	s.bufSize = min(own.BufferSize, id.BufferSize)
	s.window = id.Credit
	s.compress = id.Compression
	s.restart = id.Restart
	s.res.Partner = id.ID
	for _, d := range s.all {
		if d.p != nil && d.File.Destination == "" {
			d.File.Destination = id.ID
			d.p.src.Destination = id.ID
			d.p.sfid.Destination = id.ID
		}
	}
	return nil
}

// ---- Speaker (§9.10, §9.11) ----

// speak sends the pending end-to-end responses, then the queued files, and
// hands the turn over with CD, or ends the session with ESID when the turn
// was just handed to us and there is nothing to do (§4.6: the Speaker may
// end the session only when the Listener has just given up the turn).
func (s *session) speak(cdReceived bool) (turn, error) {
	did := false
	if s.e.inbox != nil {
		responses, err := s.e.inbox.responses(s.partner, s)
		if err != nil {
			s.log.WithError(err).Warn("pending end-to-end responses")
		}
		for _, r := range responses {
			if err := s.sendResponse(r); err != nil {
				return 0, err
			}
			did = true
		}
	}
	for s.canSend && len(s.queue) > 0 {
		d := s.queue[0]
		s.queue = s.queue[1:]
		sent, handOver, err := s.sendFile(d)
		if err != nil {
			return 0, err
		}
		did = did || sent
		if handOver {
			// §9.11.2 C: EFPA with CD requested: send CD, become Listener.
			if err := s.send(&oftp2.CD{}); err != nil {
				return 0, err
			}
			return turnListener, nil
		}
	}
	if !did && cdReceived {
		s.log.Debug("nothing to send: ending the session")
		if err := s.send(&oftp2.ESID{Reason: oftp2.ESIDNormal}); err != nil {
			return 0, err
		}
		s.ended = true
		return 0, errNormalEnd
	}
	if err := s.send(&oftp2.CD{}); err != nil {
		return 0, err
	}
	return turnListenerAfterCD, nil
}

// sendResponse sends one EERP or NERP and waits for RTR (§4.3.8).
func (s *session) sendResponse(r *response) error {
	stamp, err := parseStamp(r.Date, r.Time)
	if err != nil {
		s.log.WithError(err).Warn("dropping a malformed pending response")
		return s.e.inbox.responseDone(r.Key)
	}
	var cmd oftp2.Command
	if r.Negative {
		cmd = &oftp2.NERP{DatasetName: r.DatasetName, Stamp: stamp, Destination: r.Destination, Originator: r.Originator, Creator: s.cfg.ID, Reason: r.Reason, Text: r.Text}
	} else {
		cmd = &oftp2.EERP{DatasetName: r.DatasetName, Stamp: stamp, UserData: r.UserData, Destination: r.Destination, Originator: r.Originator}
	}
	if err := s.send(cmd); err != nil {
		return err
	}
	reply, err := s.recv()
	if err != nil {
		return err
	}
	if _, ok := reply.(*oftp2.RTR); !ok {
		return s.violation(reply, "want RTR")
	}
	s.log.WithFields(logrus.Fields{"dataset": r.DatasetName, "command": cmd.Code().String()}).Info("end-to-end response delivered")
	return s.e.inbox.responseDone(r.Key)
}

// sendFile offers one file (SFID), sends its data and ends it (EFID). sent
// reports whether an SFID went out; handOver whether the Listener asked for
// the turn in EFPA.
func (s *session) sendFile(d *delivery) (sent, handOver bool, err error) {
	p := d.p
	sfid := p.sfid
	if s.restart {
		sfid.RestartPosition = p.restartLimit()
	}
	if err := oftp2.Validate(&sfid, &s.opts); err != nil {
		d.Err = fmt.Errorf("endpoint: %s: %w", p.src.Path, err)
		s.log.WithError(err).Warn("file cannot be offered")
		return false, false, nil
	}
	log := s.log.WithFields(logrus.Fields{"dataset": sfid.DatasetName, "format": string(rune(sfid.Format)), "path": p.src.Path})
	if err := s.send(&sfid); err != nil {
		return true, false, err
	}
	reply, err := s.recv()
	if err != nil {
		return true, false, err
	}
	var pos int64
	switch c := reply.(type) {
	case *oftp2.SFNA:
		d.Status = StatusRefused
		d.Err = &FileRefusedError{Reason: c.Reason, Retry: c.Retry, Text: c.Text}
		log.WithError(d.Err).Warn("file refused")
		return true, false, nil
	case *oftp2.SFPA:
		// §9.10.3 P2: an answer count above the SFID's is a protocol error.
		if c.AnswerCount > sfid.RestartPosition {
			return true, false, s.abort(oftp2.ESIDProtocolViolation, "SFPA answer count above SFID restart position",
				fmt.Errorf("SFPA answer count %d above the offered %d", c.AnswerCount, sfid.RestartPosition))
		}
		pos = c.AnswerCount
	default:
		return true, false, s.violation(reply, "want SFPA or SFNA")
	}
	d.RestartPosition = pos
	credit := s.window // §4.4.1: SFPA sets the credit to the window
	waitCredit := func() error {
		if credit > 0 {
			return nil
		}
		// §9.10 OPOWFC: wait for CDT.
		cmd, err := s.recv()
		if err != nil {
			return err
		}
		if _, ok := cmd.(*oftp2.CDT); !ok {
			return s.violation(cmd, "want CDT")
		}
		credit = s.window
		return nil
	}
	packer := oftp2.NewPacker(s.bufSize, s.compress, func(buf []byte) error {
		if err := waitCredit(); err != nil {
			return err
		}
		credit--
		return s.sendBuffer(buf)
	})
	if err := p.sendFile(pos, packerWriter{packer}); err != nil {
		return true, false, s.localFailure(err)
	}
	if err := packer.Flush(); err != nil {
		return true, false, err
	}
	// §9.11 Note 1: EFID may not be sent while waiting for credit.
	if err := waitCredit(); err != nil {
		return true, false, err
	}
	efid := &oftp2.EFID{RecordCount: p.records, UnitCount: p.units}
	if err := s.send(efid); err != nil {
		return true, false, err
	}
	if reply, err = s.recv(); err != nil {
		return true, false, err
	}
	d.Records, d.Units = p.records, p.units
	switch c := reply.(type) {
	case *oftp2.EFNA:
		d.Status = StatusRefused
		d.Err = &FileRejectedError{Reason: c.Reason, Text: c.Text}
		log.WithError(d.Err).Warn("file rejected at end of file")
		return true, false, nil
	case *oftp2.EFPA:
		d.Status = StatusStored
		d.Err = ErrNotConfirmed
		s.awaiting = append(s.awaiting, d)
		log.WithFields(logrus.Fields{"records": p.records, "units": p.units, "restart_position": pos}).Info("file sent and stored by the partner")
		return true, c.ChangeDirection, nil
	default:
		return true, false, s.violation(reply, "want EFPA or EFNA")
	}
}

// packerWriter adapts an oftp2.Packer to recordWriter.
type packerWriter struct{ p *oftp2.Packer }

func (w packerWriter) data(b []byte) error {
	_, err := w.p.Write(b)
	return err
}

func (w packerWriter) endRecord() error { return w.p.EndRecord() }

// ---- Listener (§9.12) ----

// listen serves the Speaker until it hands over the turn (CD) or ends the
// session (ESID).
func (s *session) listen(cdSent bool) (turn, error) {
	for {
		cmd, err := s.recvListening(cdSent)
		if err != nil {
			return 0, err
		}
		switch c := cmd.(type) {
		case *oftp2.SFID:
			handOver, err := s.receiveFile(c)
			if err != nil {
				return 0, err
			}
			if handOver {
				return turnSpeaker, nil
			}
		case *oftp2.EERP:
			s.endToEnd(c.DatasetName, c.Stamp, c.Destination, c.Originator, nil)
			if err := s.send(&oftp2.RTR{}); err != nil {
				return 0, err
			}
		case *oftp2.NERP:
			s.endToEnd(c.DatasetName, c.Stamp, c.Destination, c.Originator, &NERPError{Reason: c.Reason, Creator: c.Creator, Text: c.Text})
			if err := s.send(&oftp2.RTR{}); err != nil {
				return 0, err
			}
		case *oftp2.CD:
			return turnSpeakerAfterCD, nil
		default:
			return 0, s.violation(cmd, "not valid for a Listener")
		}
		cdSent = false
	}
}

// recvListening is recv for the idle Listener: an ESID 00 is a normal end
// in IDLELICD; elsewhere it is accepted too, with a note in the log
// (§9.12.2 D treats it as an abort indication).
func (s *session) recvListening(cdSent bool) (oftp2.Command, error) {
	cmd, err := s.recv()
	if errors.Is(err, errNormalEnd) && !cdSent {
		s.log.Info("partner ended the session with ESID 00 without being handed the turn")
	}
	return cmd, err
}

// endToEnd matches an EERP or NERP to a file sent in this session.
func (s *session) endToEnd(dsn string, stamp oftp2.Timestamp, dest, orig string, neg *NERPError) {
	log := s.log.WithFields(logrus.Fields{"dataset": dsn, "originator": orig})
	for i, d := range s.awaiting {
		sf := &d.p.sfid
		if sf.DatasetName == dsn && sf.Stamp.Equal(stamp) && sf.Originator == dest {
			s.awaiting = append(s.awaiting[:i], s.awaiting[i+1:]...)
			if neg != nil {
				d.Status, d.Err = StatusNegative, neg
				log.WithError(neg).Warn("negative end response")
			} else {
				d.Status, d.Err = StatusDelivered, nil
				log.Info("end-to-end response: file delivered")
			}
			return
		}
	}
	s.res.Responses = append(s.res.Responses, Response{DatasetName: dsn, Stamp: stamp, Destination: dest, Originator: orig, Negative: neg})
	log.Info("end-to-end response for a file of an earlier session")
}

// receiveFile answers an SFID and receives the file (§4.3–§4.5). handOver
// reports that the session continues with this endpoint as Speaker.
func (s *session) receiveFile(sfid *oftp2.SFID) (bool, error) {
	// §9.12.3 P1: SFID is invalid for a sender-only location or with a
	// restart position when restart was not agreed.
	switch {
	case !s.canReceive:
		return false, s.violation(sfid, "this endpoint does not receive files in this session")
	case sfid.RestartPosition > 0 && !s.restart:
		return false, s.abort(oftp2.ESIDProtocolViolation, "SFID restart position without restart agreed",
			fmt.Errorf("SFID restart position %d, restart not agreed", sfid.RestartPosition))
	}
	log := s.log.WithFields(logrus.Fields{"dataset": sfid.DatasetName, "originator": sfid.Originator, "format": string(rune(sfid.Format))})
	var ref *refusal
	switch {
	case sfid.Destination != s.cfg.ID:
		ref = &refusal{reason: oftp2.SFNAInvalidDestination, text: "destination " + sfid.Destination + " is not " + s.cfg.ID}
	case sfid.Security != oftp2.SecurityNone || sfid.Compression != oftp2.FileCompressionNone || sfid.Envelope != oftp2.EnvelopeNone:
		ref = &refusal{reason: oftp2.SFNAUnspecified, text: "signed, encrypted, compressed or enveloped files are not supported"}
	case sfid.SignedEERP:
		ref = &refusal{reason: oftp2.SFNAUnspecified, text: "signed EERP not supported"}
	}
	var x *incoming
	var pos int64
	if ref == nil {
		var err error
		x, pos, ref, err = s.e.inbox.begin(sfid, s.partner, s.restart, s.compress)
		if err != nil {
			log.WithError(err).Error("cannot store the file")
			ref = &refusal{reason: oftp2.SFNAAccessMethodFailure, retry: true, text: "cannot store the file"}
		}
	}
	if ref != nil {
		log.WithFields(logrus.Fields{"reason": ref.reason.String(), "text": ref.text}).Warn("file refused")
		return false, s.send(&oftp2.SFNA{Reason: ref.reason, Retry: ref.retry, Text: ref.text})
	}
	s.cur = x
	if err := s.send(&oftp2.SFPA{AnswerCount: pos}); err != nil {
		return false, err
	}
	if pos > 0 {
		log.WithField("restart_position", pos).Info("resuming a partial file")
	}
	credit := s.window
	for {
		cmd, err := s.recv()
		if err != nil {
			return false, err
		}
		switch c := cmd.(type) {
		case *oftp2.Data:
			// §9.12.3 P6: a DATA beyond the credit is a protocol error.
			if credit == 0 {
				return false, s.abort(oftp2.ESIDProtocolViolation, "DATA beyond the credit window", errors.New("partner exceeded its credit"))
			}
			if len(c.Payload)+1 > s.bufSize {
				return false, s.abort(oftp2.ESIDBufferSizeError, "DATA buffer larger than negotiated",
					fmt.Errorf("DATA buffer of %d octets, negotiated %d", len(c.Payload)+1, s.bufSize))
			}
			if err := x.data(c.Payload); err != nil {
				var pe *oftp2.ProtocolError
				if errors.As(err, &pe) {
					return false, s.abort(pe.Reason, pe.ESID().Text, err)
				}
				x.fail(oftp2.EFNAAccessMethodFailure, "cannot store the data")
				log.WithError(err).Error("cannot store received data")
			}
			credit--
			if credit == 0 {
				// §9.12.2 I (P7): send new credit when it is used up.
				if err := s.send(&oftp2.CDT{}); err != nil {
					return false, err
				}
				credit = s.window
			}
		case *oftp2.EFID:
			return s.endFile(x, c, log)
		default:
			return false, s.violation(cmd, "want DATA or EFID")
		}
	}
}

// endFile answers the EFID: EFNA, or EFPA asking for the turn to send the
// end-to-end response (§4.5.1 case 2), then the CD.
func (s *session) endFile(x *incoming, efid *oftp2.EFID, log *logrus.Entry) (bool, error) {
	s.cur = nil
	rf, efna, err := x.finish(efid)
	switch {
	case err != nil && rf != nil:
		log.WithError(err).Warn("file stored without its metadata")
	case err != nil:
		log.WithError(err).Error("cannot store the file")
		efna = &oftp2.EFNA{Reason: oftp2.EFNAAccessMethodFailure, Text: "cannot store the file"}
	}
	if efna != nil {
		log.WithFields(logrus.Fields{"reason": efna.Reason.String(), "text": efna.Text}).Warn("file rejected at end of file")
		return false, s.send(efna)
	}
	s.res.Received = append(s.res.Received, *rf)
	log.WithFields(logrus.Fields{"path": rf.Path, "records": rf.Records, "units": rf.Units, "sha256": rf.SHA256}).Info("file received and stored")
	if err := s.send(&oftp2.EFPA{ChangeDirection: true}); err != nil {
		return false, err
	}
	r := &response{
		Key: x.key, Partner: s.partner, DatasetName: rf.DatasetName, Date: rf.Date, Time: rf.Time,
		Destination: rf.Originator, Originator: s.cfg.ID, UserData: x.sfid.UserData, Created: s.cfg.Now(),
	}
	if s.cfg.Process != nil {
		if perr := s.cfg.Process(*rf); perr != nil {
			r.Negative = true
			r.Reason = oftp2.NERPProcessingFailed
			r.Text = truncate(perr.Error(), 999)
			var ne *NERPError
			if errors.As(perr, &ne) {
				r.Reason, r.Text = ne.Reason, truncate(ne.Text, 999)
			}
			log.WithError(perr).Warn("file processing failed: answering with NERP")
		}
	}
	if err := s.e.inbox.addResponse(r, s); err != nil {
		log.WithError(err).Error("cannot persist the end-to-end response")
	}
	// §9.12 WF_CD: after EFPA(CD=Y) only CD may follow.
	cmd, err := s.recv()
	if err != nil {
		return false, err
	}
	if _, ok := cmd.(*oftp2.CD); !ok {
		return false, s.violation(cmd, "want CD after EFPA with change direction")
	}
	return true, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ---- I/O and ending ----

// recv reads and decodes the next command under the inactivity timer. An
// ESID ends the session: errNormalEnd for reason 00, a *SessionError
// otherwise.
func (s *session) recv() (oftp2.Command, error) {
	if err := s.conn.SetReadDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		return nil, s.ioError(err)
	}
	if s.ctx.Err() != nil {
		return nil, s.cancelled()
	}
	buf, err := s.rd.ReadBuffer()
	if err != nil {
		var pe *oftp2.ProtocolError
		if errors.As(err, &pe) {
			return nil, s.abort(pe.Reason, pe.ESID().Text, err)
		}
		return nil, s.ioError(err)
	}
	if s.v != nil {
		if _, err := s.v.Check(s.peer, buf); err != nil {
			// The partner broke RFC 5024 where the proxy would see it: the
			// same ESID reason as the proxy's, even for an ESID the partner
			// sent at the wrong time (it did not end the session normally).
			return nil, s.abort(oftp2.ReasonOf(err), validatorText(err), fmt.Errorf("partner: %w", err))
		}
	}
	cmd, err := oftp2.Parse(buf, &s.opts)
	if err != nil {
		var pe *oftp2.ProtocolError
		if errors.As(err, &pe) {
			return nil, s.abort(pe.Reason, pe.ESID().Text, err)
		}
		return nil, s.abort(oftp2.ESIDUnspecified, "", err)
	}
	if esid, ok := cmd.(*oftp2.ESID); ok {
		s.ended = true
		if esid.Reason == oftp2.ESIDNormal {
			return nil, errNormalEnd
		}
		return nil, &SessionError{Reason: esid.Reason, Text: esid.Text, Remote: true}
	}
	if s.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		s.log.WithField("command", cmd.Code().String()).Trace("received")
	}
	return cmd, nil
}

// send encodes and writes one command. Commands other than DATA are first
// checked against the session's character-set policy, so that the partner
// never receives a command its decoder would reject.
func (s *session) send(cmd oftp2.Command) error {
	if err := oftp2.Validate(cmd, &s.opts); err != nil {
		return s.localFailure(fmt.Errorf("own %s: %w", cmd.Code(), err))
	}
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		return s.ioError(err)
	}
	if s.ctx.Err() != nil {
		return s.cancelled()
	}
	if s.v != nil {
		buf, err := cmd.Append(s.out[:0])
		if err != nil {
			return s.localFailure(fmt.Errorf("own %s: %w", cmd.Code(), err))
		}
		s.out = buf
		if err := s.checkOwn(buf); err != nil {
			return err
		}
		if err := s.wr.WriteBuffer(buf); err != nil {
			return s.ioError(err)
		}
	} else if err := s.wr.WriteCommand(cmd); err != nil {
		return s.ioError(err)
	}
	if s.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		s.log.WithField("command", cmd.Code().String()).Trace("sent")
	}
	return nil
}

// sendBuffer writes one DATA exchange buffer built by the Packer.
func (s *session) sendBuffer(buf []byte) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
		return s.ioError(err)
	}
	if s.ctx.Err() != nil {
		return s.cancelled()
	}
	if err := s.checkOwn(buf); err != nil {
		return err
	}
	if err := s.wr.WriteBuffer(buf); err != nil {
		return s.ioError(err)
	}
	return nil
}

// checkOwn passes one of the endpoint's own exchange buffers through the
// validator before it is written, so that the validator follows the whole
// session. A refusal is a fault of this endpoint, not of the partner: the
// session ends with the validator's ESID reason instead of sending a
// command the proxy would refuse.
func (s *session) checkOwn(buf []byte) error {
	if s.v == nil {
		return nil
	}
	if _, err := s.v.Check(s.own, buf); err != nil {
		return s.abort(oftp2.ReasonOf(err), validatorText(err), fmt.Errorf("own command refused by the validator: %w", err))
	}
	return nil
}

// validatorText is the ESID reason text for a validator's refusal.
func validatorText(err error) string {
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		return pe.ESID().Text
	}
	return ""
}

// ioError classifies a failed read or write: cancellation (ESID 05), the
// inactivity timer (ESID 09), or a lost connection.
func (s *session) ioError(err error) error {
	if s.ctx.Err() != nil {
		return s.cancelled()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return s.abort(oftp2.ESIDTimeout, "no response within "+s.cfg.Timeout.String(), fmt.Errorf("inactivity timer: %w", err))
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, err)
}

// cancelled ends the session because its context was cancelled: ESID 05,
// local site emergency close down (§5.3.11).
func (s *session) cancelled() error {
	return s.abort(oftp2.ESIDLocalEmergency, "shutting down", s.ctx.Err())
}

// localFailure ends the session for a local error that is no fault of the
// partner.
func (s *session) localFailure(err error) error {
	var se *SessionError
	if errors.As(err, &se) || errors.Is(err, ErrConnectionLost) || errors.Is(err, errNormalEnd) {
		return err
	}
	return s.abort(oftp2.ESIDUnspecified, "local error", err)
}

// violation ends the session because cmd is not valid in the current state
// (ESID 02, §9.2).
func (s *session) violation(cmd oftp2.Command, want string) error {
	return s.abort(oftp2.ESIDProtocolViolation, cmd.Code().String()+" unexpected",
		&oftp2.ProtocolError{Reason: oftp2.ESIDProtocolViolation, Command: cmd.Code(), Msg: cmd.Code().String() + " received: " + want})
}

// abort sends ESID with reason and text (best effort, under a short write
// deadline) and returns the *SessionError for the caller.
func (s *session) abort(reason oftp2.ESIDReason, text string, cause error) error {
	if s.ended {
		return &SessionError{Reason: reason, Text: text, Err: cause}
	}
	s.ended = true
	_ = s.conn.SetWriteDeadline(time.Now().Add(min(s.cfg.Timeout, 5*time.Second)))
	esid := &oftp2.ESID{Reason: reason, Text: truncate(text, 999)}
	if err := oftp2.Validate(esid, &s.opts); err != nil {
		esid.Text = ""
	}
	if err := s.wr.WriteCommand(esid); err != nil {
		s.log.WithError(err).Debug("could not send ESID")
	}
	return &SessionError{Reason: reason, Text: text, Err: cause}
}
