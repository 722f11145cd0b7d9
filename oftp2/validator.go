package oftp2

import (
	"errors"
	"strconv"
	"sync"
)

// ErrSessionEnded is returned by Validator.Check for a buffer from one side
// after the other side ended the session with ESID: such a buffer was in
// flight when the ESID crossed it. It is not a protocol violation and does
// not kill the Validator; the buffer must not be forwarded.
var ErrSessionEnded = errors.New("oftp2: session already ended by the other side")

// Side is the end of a session that sent a command.
type Side uint8

const (
	// Initiator is the side that opened the network connection (§4.2.1). It
	// sends the first SSID and is the first Speaker.
	Initiator Side = iota
	// Responder is the side that accepted the connection. It sends SSRM.
	Responder
)

// String returns "initiator" or "responder".
func (s Side) String() string {
	switch s {
	case Initiator:
		return "initiator"
	case Responder:
		return "responder"
	}
	return "Side(" + strconv.Itoa(int(s)) + ")"
}

// Other returns the opposite side.
func (s Side) Other() Side { return 1 - s }

// State is the phase of a session as the Validator sees it. The names
// follow the Speaker's view of RFC 5024 §9.3.
type State uint8

// Session states.
const (
	// StateWaitSSRM: nothing seen yet; the Responder's SSRM is due (§4.2.2).
	StateWaitSSRM State = iota
	// StateWaitInitiatorSSID: the Initiator's SSID is due (I_WF_RM, A_NC_ONLY).
	StateWaitInitiatorSSID
	// StateWaitResponderSSID: the Responder's SSID is due (I_WF_SSID, A_WF_CONRS).
	StateWaitResponderSSID
	// StateAuth: secure authentication SECD, AUCH, AURP in both directions (§4.2.4).
	StateAuth
	// StateIdle: the Speaker may send SFID, EERP, NERP or CD (IDLESP,
	// IDLESPCD), or ESID after an unsolicited CD.
	StateIdle
	// StateOpening: SFID sent, SFPA or SFNA due (OPOP).
	StateOpening
	// StateData: data transfer (OPO, OPOWFC): DATA from the Speaker, CDT
	// from the Listener when the credit is used up, EFID from the Speaker.
	StateData
	// StateClosing: EFID sent, EFPA or EFNA due (CLOP).
	StateClosing
	// StateWaitCD: EFPA with change direction sent; the Speaker's CD is due (WF_CD).
	StateWaitCD
	// StateWaitRTR: EERP or NERP sent, RTR due (WF_RTR).
	StateWaitRTR
	// StateEnded: an ESID was seen.
	StateEnded
	// StateFailed: the Validator found a violation; see Err.
	StateFailed
)

var stateNames = [...]string{"wait-ssrm", "wait-initiator-ssid", "wait-responder-ssid", "authentication",
	"idle", "opening", "data", "closing", "wait-cd", "wait-rtr", "ended", "failed"}

// String returns a short lower-case name of the state.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// ValidatorConfig configures a Validator. The zero value validates with
// strict RFC 5024 rules and no limits beyond the negotiated ones.
type ValidatorConfig struct {
	// Parse holds the decoding options for every command (character set
	// policy, time counter). The zero value is strict.
	Parse ParseOptions
	// MaxBufferSize, if not zero, caps the DATA buffer size the Validator
	// accepts below the negotiated SSIDSDEB. The proxy that sets it must
	// lower SSIDSDEB in the SSIDs it forwards (see LimitSSID), or endpoints
	// will legitimately send larger buffers and the session ends with ESID 07.
	MaxBufferSize int
	// MaxCredit, if not zero, caps the credit window below the negotiated
	// SSIDCRED, with the same duty to rewrite the SSIDs (see LimitSSID).
	MaxCredit int
	// IgnoreEndFileCounts, if true, skips comparing the EFID record and unit
	// counts with the data seen (for partners whose counting is known to
	// differ). If false, a mismatch ends the session with ESID 06.
	IgnoreEndFileCounts bool
}

// Params are the session parameters negotiated by the two SSIDs (§5.3.2).
type Params struct {
	// Level is the protocol release level (5).
	Level int
	// InitiatorID and ResponderID are the SSIDCODEs of both sides.
	InitiatorID, ResponderID string
	// InitiatorMode and ResponderMode are the SSIDSR values of both sides.
	InitiatorMode, ResponderMode Mode
	// BufferSize is the negotiated data exchange buffer size: the smaller
	// SSIDSDEB.
	BufferSize int
	// Credit is the negotiated credit window: the Responder's SSIDCRED.
	Credit int
	// Compression, Restart and SecureAuth are set when both sides set
	// SSIDCMPR, SSIDREST, and (both, as they must match) SSIDAUTH.
	Compression, Restart, SecureAuth bool
	// MaxData and Window are the limits the Validator enforces: BufferSize
	// and Credit lowered by ValidatorConfig.MaxBufferSize and MaxCredit.
	MaxData, Window int
	// InitiatorSends and ResponderSends report whether each side may send
	// files given both modes (§3.2.1).
	InitiatorSends, ResponderSends bool
}

// authSequence is the secure authentication exchange of RFC 5024 §4.2.4.
var authSequence = [...]struct {
	from Side
	code CommandCode
}{
	{Initiator, CodeSECD}, {Responder, CodeAUCH}, {Initiator, CodeAURP},
	{Responder, CodeSECD}, {Initiator, CodeAUCH}, {Responder, CodeAURP},
}

// fileState tracks the file being transferred.
type fileState struct {
	sfid      SFID
	structure bool  // records visible in the data (F or V, not secured)
	lrecl     int64 // SFIDLRECL
	restart   int64 // accepted restart position (SFPAACNT)
	units     int64 // octets seen since the restart point
	records   int64 // End of Record flags seen since the restart point
	recLen    int64 // octets of the current record
	buffers   int64 // DATA buffers seen
}

// Validator checks one OFTP2 session as a proxy between the two endpoints
// sees it: every exchange buffer from either side, in the order the proxy
// forwards them. It decodes each buffer, checks every field, and checks
// that the command is legal in the session's state and for the side that
// sent it (RFC 5024 §4, §9). It does no I/O.
//
// The first violation kills the Validator: Check returns that error from
// then on. The error is a *ProtocolError whose Reason is the ESID reason to
// send to both endpoints.
//
// A Validator is safe for concurrent use; the proxy's two reading
// goroutines may share it. For the checks of credit and turn to be exact,
// a buffer must pass Check before it is forwarded.
type Validator struct {
	cfg ValidatorConfig // immutable

	mu         sync.Mutex // guards everything below
	state      State
	authStep   int
	speaker    Side
	cdReceived bool // the Speaker got an unsolicited CD (IDLESPCD)
	ssid       [2]SSID
	params     Params
	credit     int
	file       fileState
	inFile     bool
	err        error
	ended      bool // an ESID was accepted
	endReason  ESIDReason
	endSide    Side
}

// NewValidator returns a Validator for a new session, waiting for the
// Responder's SSRM.
func NewValidator(cfg ValidatorConfig) *Validator {
	return &Validator{cfg: cfg}
}

// Check validates one exchange buffer (without its stream transmission
// header) sent by from, and advances the session state. It returns the
// buffer's command code (zero for an empty buffer). DATA and CDT buffers are
// checked without allocating.
//
// After an ESID, a buffer from the side that sent it is a violation, and a
// buffer from the other side gives ErrSessionEnded (it crossed the ESID),
// except a crossing ESID, which is accepted.
func (v *Validator) Check(from Side, buf []byte) (CommandCode, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var code CommandCode
	if len(buf) > 0 {
		code = CommandCode(buf[0])
	}
	if v.err != nil {
		return code, v.err
	}
	if from != Initiator && from != Responder {
		return code, v.fail(errorf(ESIDUnspecified, code, "", "invalid side %d", from))
	}
	if v.ended && from != v.endSide && code != CodeESID {
		return code, ErrSessionEnded
	}
	if code == CodeDATA {
		return code, v.checkData(from, buf)
	}
	if len(buf) == 0 {
		return code, v.fail(errorf(ESIDBufferSizeError, 0, "", "empty exchange buffer"))
	}
	if code == CodeCDT {
		// CDT is part of the data transfer's steady state: decoded without
		// allocating.
		var c CDT
		if err := c.Decode(buf, &v.cfg.Parse); err != nil {
			return code, v.fail(err)
		}
		if err := v.setCredit(from); err != nil {
			return code, v.fail(err)
		}
		return code, nil
	}
	cmd, err := Parse(buf, &v.cfg.Parse)
	if err != nil {
		return code, v.fail(err)
	}
	if err := v.step(from, cmd); err != nil {
		return code, v.fail(err)
	}
	return code, nil
}

func (v *Validator) fail(err error) error {
	v.err = err
	v.state = StateFailed
	return err
}

func violation(from Side, code CommandCode, format string, args ...any) *ProtocolError {
	pe := errorf(ESIDProtocolViolation, code, "", format, args...)
	pe.Msg = from.String() + " sent " + code.String() + " " + pe.Msg
	return pe
}

// checkData validates a DATA buffer: the Speaker sends it in the data
// transfer phase, within the negotiated size and the credit window, with
// well-formed subrecords (§4.4, §7, §9.12 transition I).
func (v *Validator) checkData(from Side, buf []byte) error {
	if v.state != StateData || from != v.speaker {
		return v.fail(violation(from, CodeDATA, "in state %s (speaker %s)", v.state, v.speaker))
	}
	// §5.3.2 SSIDSDEB: the negotiated size bounds every data exchange buffer.
	if len(buf) > v.params.MaxData {
		return v.fail(errorf(ESIDBufferSizeError, CodeDATA, "", "buffer of %d octets exceeds the negotiated %d", len(buf), v.params.MaxData))
	}
	// §4.4.1, §9.12 predicate P6: the Speaker exceeded its credit.
	if v.credit == 0 {
		return v.fail(violation(from, CodeDATA, "beyond the credit window of %d buffers", v.params.Window))
	}
	f := &v.file
	p := buf[1:]
	for i := 0; i < len(p); {
		h := p[i]
		n := int64(h & SubrecordCountMask)
		if h&SubrecordCompressed != 0 {
			// §5.3.2 SSIDCMPR: compression only if both locations support it.
			if !v.params.Compression {
				return v.fail(errorf(ESIDInvalidData, CodeDATA, "DATABUF", "compressed subrecord at offset %d, but buffer compression was not negotiated", i+1))
			}
			i += 2
		} else {
			i += 1 + int(n)
		}
		if i > len(p) {
			// §7.3: a subrecord is never split between exchange buffers.
			return v.fail(errorf(ESIDBufferSizeError, CodeDATA, "DATABUF", "last subrecord overruns the buffer by %d octets", i-len(p)))
		}
		f.units += n
		f.recLen += n
		// §5.3.3 SFIDLRECL: the longest logical record of an F or V file.
		if f.structure && f.lrecl > 0 && f.recLen > f.lrecl {
			return v.fail(errorf(ESIDInvalidData, CodeDATA, "DATABUF", "record of more than %d octets exceeds SFIDLRECL %d", f.recLen-1, f.lrecl))
		}
		if h&SubrecordEndOfRecord != 0 {
			f.records++
			f.recLen = 0
		}
	}
	f.buffers++
	v.credit--
	return nil
}

// step advances the state machine with a decoded command other than DATA.
func (v *Validator) step(from Side, cmd Command) error {
	code := cmd.Code()
	if code == CodeESID {
		return v.endSession(from, cmd.(*ESID))
	}
	switch v.state {
	case StateWaitSSRM:
		// §4.2.2: the first message must be sent by the Responder.
		if from != Responder || code != CodeSSRM {
			return violation(from, code, "before the responder's SSRM")
		}
		v.state = StateWaitInitiatorSSID
		return nil
	case StateWaitInitiatorSSID:
		// §4.2.2, §9.8 (A_NC_ONLY): the Initiator's SSID follows SSRM.
		if from != Initiator || code != CodeSSID {
			return violation(from, code, "while the initiator's SSID is due")
		}
		s := cmd.(*SSID)
		if err := checkLevel(s); err != nil {
			return err
		}
		v.ssid[Initiator] = *s
		v.state = StateWaitResponderSSID
		return nil
	case StateWaitResponderSSID:
		// §4.2.2, §9.8 (I_WF_SSID): the Responder answers with its SSID.
		if from != Responder || code != CodeSSID {
			return violation(from, code, "while the responder's SSID is due")
		}
		return v.negotiate(cmd.(*SSID))
	case StateAuth:
		// §4.2.4, §9.8 (WF_SECD, WF_AUCH, WF_AURP): SECD, AUCH, AURP from
		// the Initiator's side first, then the same from the Responder's.
		want := authSequence[v.authStep]
		if from != want.from || code != want.code {
			return violation(from, code, "during secure authentication, %s from the %s is due", want.code, want.from)
		}
		v.authStep++
		if v.authStep == len(authSequence) {
			v.enterIdle(Initiator)
		}
		return nil
	}
	if from == v.speaker {
		return v.speakerCommand(from, cmd)
	}
	return v.listenerCommand(from, cmd)
}

// checkLevel requires SSIDLEV 5 (OFTP 2.0): the layout of every command
// checked here is that of level 5 (§5.3.2 SSIDLEV).
func checkLevel(s *SSID) error {
	if s.Level != 5 {
		return errorf(ESIDModeIncompatible, CodeSSID, "SSIDLEV", "protocol release level %d, only 5 (OFTP 2.0) is supported", s.Level)
	}
	return nil
}

// negotiate checks the Responder's SSID against the Initiator's (§5.3.2,
// §9.8 transitions D and G).
func (v *Validator) negotiate(r *SSID) error {
	if err := checkLevel(r); err != nil {
		return err
	}
	i := &v.ssid[Initiator]
	// §5.3.2 SSIDAUTH: "p != q -> abort"; §9.8 transition D: ESID(R=12).
	if i.SecureAuth != r.SecureAuth {
		return errorf(ESIDSecureAuthIncompatible, CodeSSID, "SSIDAUTH", "initiator requires %s, responder %s", yn(i.SecureAuth), yn(r.SecureAuth))
	}
	// §5.3.2 SSIDSR: "An error occurs if adjacent locations both specify the
	// send or receive capability"; §9.8 transition D: ESID(R=10).
	if i.Mode == r.Mode && i.Mode != ModeBoth {
		return errorf(ESIDModeIncompatible, CodeSSID, "SSIDSR", "both sides are %s", i.Mode)
	}
	// §5.3.2 SSIDCRED: the Responder must answer with the smaller credit,
	// "otherwise a protocol error will abort the session".
	if r.Credit > i.Credit {
		return errorf(ESIDModeIncompatible, CodeSSID, "SSIDCRED", "responder credit %d exceeds the initiator's %d", r.Credit, i.Credit)
	}
	// §5.3.2 SSIDSPEC: special logic is for X.25 and not supported over TCP.
	if i.SpecialLogic && r.SpecialLogic {
		return errorf(ESIDModeIncompatible, CodeSSID, "SSIDSPEC", "special logic is not supported over TCP")
	}
	v.ssid[Responder] = *r
	p := Params{
		Level:          5,
		InitiatorID:    i.ID,
		ResponderID:    r.ID,
		InitiatorMode:  i.Mode,
		ResponderMode:  r.Mode,
		BufferSize:     min(i.BufferSize, r.BufferSize), // §5.3.2 SSIDSDEB: the smallest size
		Credit:         r.Credit,                        // §5.3.2 SSIDCRED: the Responder's answer
		Compression:    i.Compression && r.Compression,  // §5.3.2 SSIDCMPR: only if both
		Restart:        i.Restart && r.Restart,          // §3.2.1 restart negotiation
		SecureAuth:     r.SecureAuth,
		InitiatorSends: i.Mode != ModeReceiver && r.Mode != ModeSender, // §3.2.1 mode
		ResponderSends: r.Mode != ModeReceiver && i.Mode != ModeSender,
	}
	p.MaxData, p.Window = p.BufferSize, p.Credit
	if c := v.cfg.MaxBufferSize; c > 0 && c < p.MaxData {
		p.MaxData = c
	}
	if c := v.cfg.MaxCredit; c > 0 && c < p.Window {
		p.Window = c
	}
	v.params = p
	if p.SecureAuth {
		v.state = StateAuth
		return nil
	}
	// §4.3.1, §3.3.4.1: the Initiator is the first Speaker.
	v.enterIdle(Initiator)
	return nil
}

func yn(b bool) string {
	if b {
		return "Y"
	}
	return "N"
}

func (v *Validator) enterIdle(speaker Side) {
	v.state = StateIdle
	v.speaker = speaker
	v.inFile = false
}

// speakerCommand handles a command from the current Speaker (§9.10, §9.11).
func (v *Validator) speakerCommand(from Side, cmd Command) error {
	code := cmd.Code()
	switch v.state {
	case StateIdle:
		switch code {
		case CodeSFID:
			return v.startFile(from, cmd.(*SFID))
		case CodeEERP, CodeNERP:
			// §4.3.8, §9.10 transitions A and Y: the Speaker waits for RTR.
			v.cdReceived = false
			v.state = StateWaitRTR
			return nil
		case CodeCD:
			// §3.3.4.2 rule 4, §9.12 (CD in IDLELICD gives ESID 02): no CD
			// right after an unsolicited CD.
			if v.cdReceived {
				return violation(from, code, "right after receiving an unsolicited CD")
			}
			// §9.10 transition D, §9.12 transition C: the turn passes; the new
			// Speaker is in IDLESPCD.
			v.enterIdle(from.Other())
			v.cdReceived = true
			return nil
		}
	case StateData:
		if code == CodeEFID {
			return v.endFile(from, cmd.(*EFID))
		}
	case StateWaitCD:
		if code == CodeCD {
			// §9.11 transition C, §9.10 transition H: the solicited CD makes
			// the Listener the Speaker in IDLESP.
			v.enterIdle(from.Other())
			v.cdReceived = false
			return nil
		}
	}
	return violation(from, code, "as speaker in state %s", v.state)
}

// listenerCommand handles a command from the current Listener (§9.10, §9.12).
func (v *Validator) listenerCommand(from Side, cmd Command) error {
	code := cmd.Code()
	switch v.state {
	case StateOpening:
		switch code {
		case CodeSFPA:
			// §5.3.4, §9.10 transition K predicate P2: the answer count must
			// not exceed the SFID's restart position.
			n := cmd.(*SFPA).AnswerCount
			if n > v.file.sfid.RestartPosition {
				return violation(from, code, "with restart position %d above the SFID's %d", n, v.file.sfid.RestartPosition)
			}
			v.file.restart = n
			v.credit = v.params.Window // §4.4.1: SFPA acts as an implicit CDT.
			v.state = StateData
			return nil
		case CodeSFNA:
			v.enterIdle(v.speaker) // §9.10 transition L
			return nil
		}
	case StateClosing:
		switch code {
		case CodeEFPA:
			// §5.3.9, §9.11 transition C: EFPACD = Y obliges the Speaker to CD.
			if cmd.(*EFPA).ChangeDirection {
				v.state = StateWaitCD
				v.inFile = false
			} else {
				v.enterIdle(v.speaker)
			}
			return nil
		case CodeEFNA:
			v.enterIdle(v.speaker) // §9.11 transition D
			return nil
		}
	case StateWaitRTR:
		if code == CodeRTR {
			v.enterIdle(v.speaker) // §9.10 transition N
			return nil
		}
	}
	return violation(from, code, "as listener in state %s", v.state)
}

// setCredit handles CDT: only the Listener sends it, in the data transfer
// phase, and only while the Speaker waits for credit (§9.10 transitions O
// and P: CDT in OPO is a protocol error; §9.12 predicate P7).
func (v *Validator) setCredit(from Side) error {
	if v.state != StateData || from == v.speaker {
		return violation(from, CodeCDT, "in state %s (speaker %s)", v.state, v.speaker)
	}
	if v.credit != 0 {
		return violation(from, CodeCDT, "with %d credit left", v.credit)
	}
	v.credit = v.params.Window // §9.12 action 8, §9.10 action 12
	return nil
}

// startFile checks an SFID from the Speaker in IDLESP (§9.10 transition B,
// §9.12 transition A).
func (v *Validator) startFile(from Side, s *SFID) error {
	// §9.12 predicate P1: a Sender-only listener cannot receive; §9.10 P1: a
	// Receiver-only speaker cannot send.
	sends := v.params.InitiatorSends
	if from == Responder {
		sends = v.params.ResponderSends
	}
	if !sends {
		return violation(from, CodeSFID, "although the negotiated modes (%s initiator, %s responder) do not let it send files",
			v.params.InitiatorMode, v.params.ResponderMode)
	}
	// §3.3.1 note 3, §9.12 predicate P1: a restart position other than 0 is
	// valid only if restart was agreed.
	if s.RestartPosition > 0 && !v.params.Restart {
		return &ProtocolError{Reason: ESIDProtocolViolation, Command: CodeSFID, Field: "SFIDREST",
			Msg: "restart position " + strconv.FormatInt(s.RestartPosition, 10) + " but restart was not negotiated"}
	}
	v.cdReceived = false
	v.file = fileState{sfid: *s, structure: !s.Unstructured(), lrecl: int64(s.MaxRecordSize)}
	v.inFile = true
	v.state = StateOpening
	return nil
}

// endFile checks an EFID (§9.11 transition A and note 1, §5.3.8).
func (v *Validator) endFile(from Side, e *EFID) error {
	// §9.11 note 1: EFID may not be sent while waiting for credit (OPOWFC).
	if v.credit == 0 {
		return violation(from, CodeEFID, "while waiting for credit (RFC 5024 §9.11 note 1)")
	}
	if !v.cfg.IgnoreEndFileCounts {
		if err := v.checkCounts(e); err != nil {
			return err
		}
	}
	v.credit = 0 // §5.3.2 SSIDCRED: zeroed by EFID.
	v.state = StateClosing
	return nil
}

// checkCounts compares the EFID counts with the data seen since the
// restart point (§5.3.8, §5.3.3 SFIDREST, §1.5.4).
func (v *Validator) checkCounts(e *EFID) error {
	f := &v.file
	mismatch := func(field string, got int64, format string, args ...any) error {
		pe := errorf(ESIDInvalidData, CodeEFID, field, format, args...)
		pe.Msg = field + " " + strconv.FormatInt(got, 10) + " does not match the data: " + pe.Msg
		return pe
	}
	if !f.structure {
		// §5.3.8 EFIDRCNT: zeros for U and T files. A secured F or V file is
		// transmitted as U (§5.3.3 SFIDFMT): its record count is not visible.
		if (f.sfid.Format == FormatUnstructured || f.sfid.Format == FormatText) && e.RecordCount != 0 {
			return mismatch("EFIDRCNT", e.RecordCount, "must be zero for format %s", f.sfid.Format)
		}
		// §1.5.4, §5.3.3 SFIDREST: U files restart at a 1K block offset;
		// §5.3.8: the unit count is the total.
		const maxCount = 99999999999999999
		if f.restart > (maxCount-f.units)/1024 {
			return mismatch("EFIDUCNT", e.UnitCount, "restart at block %d plus %d octets exceeds the field", f.restart, f.units)
		}
		if want := f.restart*1024 + f.units; e.UnitCount != want {
			return mismatch("EFIDUCNT", e.UnitCount, "%d octets seen after restart block %d, total %d", f.units, f.restart, want)
		}
		return nil
	}
	// §5.3.8 EFIDRCNT: the exact record count, the total even after a restart
	// at record f.restart (§4.3.3: the sender starts with record restart+1).
	if f.recLen > 0 {
		return mismatch("EFIDRCNT", e.RecordCount, "the last record has %d octets but no End of Record flag", f.recLen)
	}
	if want := f.restart + f.records; e.RecordCount != want {
		return mismatch("EFIDRCNT", e.RecordCount, "%d records seen after restart record %d, total %d", f.records, f.restart, want)
	}
	if f.restart == 0 {
		if e.UnitCount != f.units {
			return mismatch("EFIDUCNT", e.UnitCount, "%d octets seen", f.units)
		}
		return nil
	}
	// After a restart the octets of the records before it are not seen:
	// at least the octets seen, at most SFIDLRECL per skipped record.
	if e.UnitCount < f.units || (f.lrecl > 0 && e.UnitCount-f.units > f.restart*f.lrecl) {
		return mismatch("EFIDUCNT", e.UnitCount, "%d octets seen after restart record %d of at most %d octets", f.units, f.restart, f.lrecl)
	}
	return nil
}

// endSession handles ESID (§4.6, §9.9, §9.12 transitions D and F).
func (v *Validator) endSession(from Side, e *ESID) error {
	if v.ended {
		// The two sides may end the session at the same time; the second
		// ESID crosses the first.
		if from != v.endSide {
			return nil
		}
		return violation(from, CodeESID, "after its own ESID")
	}
	// §3.4.1, §9.10 (F_REL_RQ(Ok) only in IDLESPCD): a normal end is sent by
	// the Speaker just after an unsolicited CD. An error ESID is valid at any
	// time from either side (§3.4.2).
	if e.Reason == ESIDNormal && !(v.state == StateIdle && from == v.speaker && v.cdReceived) {
		return violation(from, CodeESID, "with reason 00 (normal) in state %s; only the speaker that has just received an unsolicited CD may end normally", v.state)
	}
	v.state = StateEnded
	v.ended = true
	v.endReason = e.Reason
	v.endSide = from
	return nil
}

// State returns the session's current state.
func (v *Validator) State() State {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.state
}

// Speaker returns the current Speaker. Before the SSIDs are exchanged it is
// the Initiator.
func (v *Validator) Speaker() Side {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.speaker
}

// Params returns the negotiated parameters and true once both SSIDs have
// been accepted.
func (v *Validator) Params() (Params, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.params, v.params.Level != 0
}

// SSID returns the SSID that side sent (as passed to Check) and whether it
// has been accepted.
func (v *Validator) SSID(side Side) (SSID, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if side > Responder {
		return SSID{}, false
	}
	s := v.ssid[side]
	return s, s.Level != 0
}

// CurrentFile returns the SFID of the file being transferred and true
// between an accepted SFID and its end (SFNA, EFPA, EFNA).
func (v *Validator) CurrentFile() (SFID, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.file.sfid, v.inFile
}

// Ended reports whether an ESID has been accepted, and if so its reason
// and the side that sent it. It stays true if a violation follows the ESID.
func (v *Validator) Ended() (reason ESIDReason, by Side, ended bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.endReason, v.endSide, v.ended
}

// NormalEnd reports whether the session ended with ESID reason 00 in a
// state where RFC 5024 allows it.
func (v *Validator) NormalEnd() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ended && v.endReason == ESIDNormal
}

// Err returns the violation that killed the Validator, or nil.
func (v *Validator) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// LimitSSID lowers SSIDSDEB to at most maxBufferSize and SSIDCRED to at
// most maxCredit in the SSID buffer buf, in place, and reports whether it
// changed anything. A zero limit leaves its field alone; maxBufferSize must
// otherwise be at least 128 and maxCredit at least 1. buf must be a valid SSID
// (checked with the lenient character set).
//
// A proxy that bounds memory per session uses it on both SSIDs before
// forwarding them and before passing them to Validator.Check:
//
//   - on the Initiator's SSID with its own caps;
//   - on the Responder's SSID with maxBufferSize = the SSIDSDEB it
//     forwarded to the Responder (so that both endpoints compute the same
//     minimum) and maxCredit = the SSIDCRED it forwarded.
func LimitSSID(buf []byte, maxBufferSize, maxCredit int) (changed bool, err error) {
	var s SSID
	if err := s.Decode(buf, &lenientOptions); err != nil {
		return false, err
	}
	if maxBufferSize != 0 && (maxBufferSize < MinExchangeBuffer || maxBufferSize > MaxExchangeBuffer) {
		return false, errorf(ESIDInvalidData, CodeSSID, "SSIDSDEB", "limit %d outside %d..%d", maxBufferSize, MinExchangeBuffer, MaxExchangeBuffer)
	}
	if maxCredit != 0 && (maxCredit < 1 || maxCredit > MaxCredit) {
		return false, errorf(ESIDInvalidData, CodeSSID, "SSIDCRED", "limit %d outside 1..%d", maxCredit, MaxCredit)
	}
	if maxBufferSize != 0 && s.BufferSize > maxBufferSize {
		putDigits(buf[35:40], maxBufferSize) // §5.3.2 SSIDSDEB at position 35
		changed = true
	}
	if maxCredit != 0 && s.Credit > maxCredit {
		putDigits(buf[44:47], maxCredit) // §5.3.2 SSIDCRED at position 44
		changed = true
	}
	return changed, nil
}

func putDigits(b []byte, v int) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}
