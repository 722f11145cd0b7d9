package oftp2

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

const (
	I = Initiator
	R = Responder
)

// step is one exchange buffer of a transcript.
type step struct {
	from Side
	buf  []byte
}

func enc(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := c.Append(nil)
	if err != nil {
		t.Fatalf("Append(%T) error = %v", c, err)
	}
	return b
}

// Builders for transcripts; each returns an encoded buffer.
type tb struct{ t testing.TB }

func (b tb) ssrm() []byte { return enc(b.t, &SSRM{}) }
func (b tb) ssid(id string, mods ...func(*SSID)) []byte {
	s := &SSID{Level: 5, ID: id, Password: "PW", BufferSize: 4096, Mode: ModeBoth, Credit: 3}
	for _, m := range mods {
		m(s)
	}
	return enc(b.t, s)
}
func (b tb) sfid(mods ...func(*SFID)) []byte {
	s := &SFID{DatasetName: "FILE", Stamp: stamp("2024-01-02 03:04:05", 1), Destination: "O0013000000DEST",
		Originator: "O0013000000ORIG", Format: FormatUnstructured}
	for _, m := range mods {
		m(s)
	}
	return enc(b.t, s)
}
func (b tb) sfpa(n int64) []byte { return enc(b.t, &SFPA{AnswerCount: n}) }
func (b tb) sfna() []byte        { return enc(b.t, &SFNA{Reason: SFNADuplicateFile}) }
func (b tb) cdt() []byte         { return enc(b.t, &CDT{}) }
func (b tb) efid(records, units int64) []byte {
	return enc(b.t, &EFID{RecordCount: records, UnitCount: units})
}
func (b tb) efpa(cd bool) []byte      { return enc(b.t, &EFPA{ChangeDirection: cd}) }
func (b tb) efna() []byte             { return enc(b.t, &EFNA{Reason: EFNAInvalidByteCount}) }
func (b tb) esid(r ESIDReason) []byte { return enc(b.t, &ESID{Reason: r}) }
func (b tb) cd() []byte               { return []byte("R") }
func (b tb) rtr() []byte              { return []byte("P") }
func (b tb) secd() []byte             { return []byte("J") }
func (b tb) auch() []byte             { return enc(b.t, &AUCH{Challenge: cmsBlob}) }
func (b tb) aurp() []byte             { return enc(b.t, &AURP{}) }
func (b tb) eerp() []byte {
	return enc(b.t, &EERP{DatasetName: "FILE", Stamp: stamp("2024-01-02 03:04:05", 1), Destination: "O0013000000ORIG", Originator: "O0013000000DEST"})
}
func (b tb) nerp() []byte {
	return enc(b.t, &NERP{DatasetName: "FILE", Stamp: stamp("2024-01-02 03:04:05", 1), Destination: "O0013000000ORIG",
		Originator: "O0013000000DEST", Creator: "O0013000000DEST", Reason: NERPProcessingFailed})
}

// data returns a DATA buffer with one uncompressed subrecord per string;
// a string ending in "|" carries the End of Record flag (the "|" is not data).
func (b tb) data(subs ...string) []byte {
	out := []byte{'D'}
	for _, s := range subs {
		h := byte(0)
		if len(s) > 0 && s[len(s)-1] == '|' {
			h = SubrecordEndOfRecord
			s = s[:len(s)-1]
		}
		if len(s) > MaxSubrecord {
			b.t.Fatalf("subrecord of %d octets", len(s))
		}
		out = append(out, h|byte(len(s)))
		out = append(out, s...)
	}
	return out
}

// dataN returns a DATA buffer of exactly n octets (n >= 2) of uncompressed
// subrecords and the number of units it carries.
func dataN(n int) ([]byte, int64) {
	out := make([]byte, 1, n)
	out[0] = 'D'
	var units int64
	for len(out) < n {
		c := min(MaxSubrecord, n-len(out)-1)
		out = append(out, byte(c))
		out = append(out, bytes.Repeat([]byte{'x'}, c)...)
		units += int64(c)
	}
	return out, units
}

func withAuth(s *SSID)          { s.SecureAuth = true }
func withRestart(s *SSID)       { s.Restart = true }
func withCompression(s *SSID)   { s.Compression = true }
func mode(m Mode) func(*SSID)   { return func(s *SSID) { s.Mode = m } }
func credit(n int) func(*SSID)  { return func(s *SSID) { s.Credit = n } }
func bufSize(n int) func(*SSID) { return func(s *SSID) { s.BufferSize = n } }
func fixed(lrecl int) func(*SFID) {
	return func(s *SFID) { s.Format = FormatFixed; s.MaxRecordSize = lrecl }
}
func variable(lrecl int) func(*SFID) {
	return func(s *SFID) { s.Format = FormatVariable; s.MaxRecordSize = lrecl }
}
func text(s *SFID)                  { s.Format = FormatText }
func restartAt(n int64) func(*SFID) { return func(s *SFID) { s.RestartPosition = n } }

// setup returns SSRM and both SSIDs.
func (b tb) setup(imods, rmods []func(*SSID)) []step {
	return []step{
		{R, b.ssrm()},
		{I, b.ssid("O0013000000INIT", imods...)},
		{R, b.ssid("O0013000000RESP", rmods...)},
	}
}

func join(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func run(t *testing.T, v *Validator, steps []step) (int, error) {
	t.Helper()
	for i, s := range steps {
		code, err := v.Check(s.from, s.buf)
		if len(s.buf) > 0 && code != CommandCode(s.buf[0]) {
			t.Errorf("step %d: Check() code = %v, want %v", i, code, CommandCode(s.buf[0]))
		}
		if err != nil {
			return i, err
		}
	}
	return len(steps), nil
}

func TestValidatorLegalTranscripts(t *testing.T) {
	b := tb{t}
	d1, u1 := dataN(4096)
	d2, u2 := dataN(100)
	d3, u3 := dataN(1024)
	tests := []struct {
		name   string
		cfg    ValidatorConfig
		steps  []step
		state  State
		normal bool
		check  func(t *testing.T, v *Validator)
	}{
		{
			name:   "nothing to send",
			steps:  join(b.setup(nil, nil), []step{{I, b.cd()}, {R, b.esid(ESIDNormal)}}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "full session both directions",
			steps: join(b.setup([]func(*SSID){credit(2)}, []func(*SSID){credit(2)}), []step{
				{I, b.sfid()}, {R, b.sfpa(0)},
				{I, d1}, {I, d1}, {R, b.cdt()}, {I, d2}, {I, b.data("end|")}, {R, b.cdt()},
				{I, b.efid(0, 2*u1+u2+3)}, {R, b.efpa(true)}, {I, b.cd()},
				{R, b.eerp()}, {I, b.rtr()}, {R, b.nerp()}, {I, b.rtr()},
				{R, b.sfid(text)}, {I, b.sfpa(0)}, {R, b.data("line\r\n|")}, {R, b.efid(0, 6)}, {I, b.efpa(false)},
				{R, b.eerp()}, {I, b.rtr()},
				{R, b.cd()}, {I, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "credit boundary: CDT then EFID",
			steps: join(b.setup([]func(*SSID){credit(1)}, []func(*SSID){credit(1)}), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("ab|")}, {R, b.cdt()}, {I, b.efid(0, 2)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
		},
		{
			name: "F file with records across buffers",
			steps: join(b.setup(nil, nil), []step{
				{I, b.sfid(fixed(5))}, {R, b.sfpa(0)},
				{I, b.data("abc", "de|", "fgh")}, {I, b.data("ij|", "", "|")},
				{I, b.efid(3, 10)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
		},
		{
			name: "V file, SFNA then retry and EFNA",
			steps: join(b.setup(nil, nil), []step{
				{I, b.sfid(variable(100))}, {R, b.sfna()},
				{I, b.sfid(variable(100))}, {R, b.sfpa(0)}, {I, b.data("x|", "yy|")}, {I, b.efid(2, 3)}, {R, b.efna()},
				{I, b.cd()}, {R, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "restart of an F file",
			steps: join(b.setup([]func(*SSID){withRestart}, []func(*SSID){withRestart}), []step{
				{I, b.sfid(fixed(80), restartAt(10))}, {R, b.sfpa(5)},
				{I, b.data(string(bytes.Repeat([]byte("r"), 40)), string(bytes.Repeat([]byte("r"), 40))+"|")},
				{I, b.efid(6, 480)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
			check: func(t *testing.T, v *Validator) {
				if p, _ := v.Params(); !p.Restart {
					t.Errorf("Params().Restart = false, want true")
				}
			},
		},
		{
			name: "restart of a U file in 1K blocks",
			steps: join(b.setup([]func(*SSID){withRestart}, []func(*SSID){withRestart}), []step{
				{I, b.sfid(restartAt(3))}, {R, b.sfpa(2)}, {I, d2}, {I, b.data("|")},
				{I, b.efid(0, 2*1024+u2)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
		},
		{
			name: "restart offered but refused with count 0",
			steps: join(b.setup([]func(*SSID){withRestart}, []func(*SSID){withRestart}), []step{
				{I, b.sfid(restartAt(7))}, {R, b.sfpa(0)}, {I, b.data("abc|")}, {I, b.efid(0, 3)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
		},
		{
			name: "buffer compression",
			steps: join(b.setup([]func(*SSID){withCompression}, []func(*SSID){withCompression}), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, []byte{'D', 0x03, 'a', 'b', 'c', 0x40 | 63, ' ', 0xc0 | 2, '!'}},
				{I, b.efid(0, 68)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
			check: func(t *testing.T, v *Validator) {
				if p, _ := v.Params(); !p.Compression {
					t.Errorf("Params().Compression = false, want true")
				}
			},
		},
		{
			name: "secured F file is checked as unstructured",
			steps: join(b.setup(nil, nil), []step{
				{I, b.sfid(fixed(80), func(s *SFID) { s.Security = SecurityEncryptedSigned; s.Cipher = 1; s.Envelope = EnvelopeCMS })},
				{R, b.sfpa(0)}, {I, b.data("cms-envelope", "-bytes|")}, {I, b.efid(17, 18)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
		},
		{
			name: "secure authentication",
			steps: join(b.setup([]func(*SSID){withAuth}, []func(*SSID){withAuth}), []step{
				{I, b.secd()}, {R, b.auch()}, {I, b.aurp()}, {R, b.secd()}, {I, b.auch()}, {R, b.aurp()},
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("|")}, {I, b.efid(0, 0)}, {R, b.efpa(true)}, {I, b.cd()},
				{R, b.cd()}, {I, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
			check: func(t *testing.T, v *Validator) {
				if p, _ := v.Params(); !p.SecureAuth {
					t.Errorf("Params().SecureAuth = false, want true")
				}
			},
		},
		{
			name: "mode S initiator, R responder",
			steps: join(b.setup([]func(*SSID){mode(ModeSender)}, []func(*SSID){mode(ModeReceiver)}), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("|")}, {I, b.efid(0, 0)}, {R, b.efpa(false)},
				{I, b.cd()}, {R, b.eerp()}, {I, b.rtr()}, {R, b.cd()}, {I, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "mode R initiator, S responder",
			steps: join(b.setup([]func(*SSID){mode(ModeReceiver)}, []func(*SSID){mode(ModeSender)}), []step{
				{I, b.cd()}, {R, b.sfid()}, {I, b.sfpa(0)}, {R, b.data("|")}, {R, b.efid(0, 0)}, {I, b.efpa(false)},
				{R, b.cd()}, {I, b.eerp()}, {R, b.rtr()}, {I, b.cd()}, {R, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "mode B initiator, R responder",
			steps: join(b.setup(nil, []func(*SSID){mode(ModeReceiver)}), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("|")}, {I, b.efid(0, 0)}, {R, b.efpa(true)}, {I, b.cd()},
				{R, b.cd()}, {I, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "abort from the listener during data",
			steps: join(b.setup(nil, nil), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("abc")}, {R, b.esid(ESIDResourcesNotAvailable)}, {I, b.esid(ESIDUnspecified)},
			}),
			state: StateEnded,
			check: func(t *testing.T, v *Validator) {
				if r, by, ok := v.Ended(); !ok || r != ESIDResourcesNotAvailable || by != R {
					t.Errorf("Ended() = %v, %v, %v, want 08 by responder", r, by, ok)
				}
			},
		},
		{
			name:  "responder refuses the initiator",
			steps: []step{{R, b.ssrm()}, {I, b.ssid("O0013000000INIT")}, {R, b.esid(ESIDUserCodeNotKnown)}},
			state: StateEnded,
		},
		{
			name: "proxy caps with rewritten SSIDs",
			cfg:  ValidatorConfig{MaxBufferSize: 1024, MaxCredit: 2},
			steps: join(b.setup([]func(*SSID){bufSize(1024), credit(2)}, []func(*SSID){bufSize(1024), credit(2)}), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, d3}, {I, b.data("|")}, {R, b.cdt()},
				{I, b.efid(0, u3)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
			check: func(t *testing.T, v *Validator) {
				p, ok := v.Params()
				if !ok || p.MaxData != 1024 || p.Window != 2 {
					t.Errorf("Params() = %+v, %v, want MaxData 1024, Window 2", p, ok)
				}
			},
		},
		{
			name: "lenient charset",
			cfg:  ValidatorConfig{Parse: ParseOptions{Charset: CharsetLenient}},
			steps: join([]step{{R, b.ssrm()}, {I, b.ssid("o0013000000init_1")}, {R, b.ssid("O0013000000RESP")}}, []step{
				{I, b.sfid(func(s *SFID) { s.DatasetName = "invoice_1.xml" })}, {R, b.sfpa(0)}, {I, b.data("|")},
				{I, b.efid(0, 0)}, {R, b.efpa(false)}, {I, b.cd()}, {R, b.esid(ESIDNormal)},
			}),
			state:  StateEnded,
			normal: true,
		},
		{
			name: "count check disabled",
			cfg:  ValidatorConfig{IgnoreEndFileCounts: true},
			steps: join(b.setup(nil, nil), []step{
				{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("abc|")}, {I, b.efid(9, 9999)}, {R, b.efpa(false)},
			}),
			state: StateIdle,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewValidator(tc.cfg)
			if i, err := run(t, v, tc.steps); err != nil {
				t.Fatalf("step %d (%s from %v): Check() = %v, want nil", i, CommandCode(tc.steps[i].buf[0]), tc.steps[i].from, err)
			}
			if got := v.State(); got != tc.state {
				t.Errorf("State() = %v, want %v", got, tc.state)
			}
			if got := v.NormalEnd(); got != tc.normal {
				t.Errorf("NormalEnd() = %v, want %v", got, tc.normal)
			}
			if v.Err() != nil {
				t.Errorf("Err() = %v, want nil", v.Err())
			}
			if tc.check != nil {
				tc.check(t, v)
			}
		})
	}
}

func TestValidatorIllegalTranscripts(t *testing.T) {
	b := tb{t}
	base := b.setup(nil, nil)
	inFile := join(base, []step{{I, b.sfid()}, {R, b.sfpa(0)}})
	credit1 := join(b.setup([]func(*SSID){credit(1)}, []func(*SSID){credit(1)}), []step{{I, b.sfid()}, {R, b.sfpa(0)}})
	big, _ := dataN(4097)
	tests := []struct {
		name   string
		cfg    ValidatorConfig
		steps  []step
		reason ESIDReason
	}{
		// Session setup (§4.2, §9.8).
		{"SSID before SSRM", nil2, []step{{I, b.ssid("O0013000000INIT")}}, ESIDProtocolViolation},
		{"responder SSID before SSRM", nil2, []step{{R, b.ssid("O0013000000RESP")}}, ESIDProtocolViolation},
		{"SSRM from the initiator", nil2, []step{{I, b.ssrm()}}, ESIDProtocolViolation},
		{"second SSRM", nil2, []step{{R, b.ssrm()}, {R, b.ssrm()}}, ESIDProtocolViolation},
		{"responder SSID first", nil2, []step{{R, b.ssrm()}, {R, b.ssid("O0013000000RESP")}}, ESIDProtocolViolation},
		{"SFID before the responder SSID", nil2, []step{{R, b.ssrm()}, {I, b.ssid("O0013000000INIT")}, {I, b.sfid()}}, ESIDProtocolViolation},
		{"initiator SSID twice", nil2, []step{{R, b.ssrm()}, {I, b.ssid("O0013000000INIT")}, {I, b.ssid("O0013000000INIT")}}, ESIDProtocolViolation},
		{"initiator level 4", nil2, []step{{R, b.ssrm()}, {I, b.ssid("O0013000000INIT", func(s *SSID) { s.Level = 4 })}}, ESIDModeIncompatible},
		{"responder level 6", nil2, b.setup(nil, []func(*SSID){func(s *SSID) { s.Level = 6 }}), ESIDModeIncompatible},
		{"both sender-only", nil2, b.setup([]func(*SSID){mode(ModeSender)}, []func(*SSID){mode(ModeSender)}), ESIDModeIncompatible},
		{"both receiver-only", nil2, b.setup([]func(*SSID){mode(ModeReceiver)}, []func(*SSID){mode(ModeReceiver)}), ESIDModeIncompatible},
		{"responder credit above initiator's", nil2, b.setup([]func(*SSID){credit(5)}, []func(*SSID){credit(6)}), ESIDModeIncompatible},
		{"special logic on both sides", nil2, b.setup([]func(*SSID){func(s *SSID) { s.SpecialLogic = true }}, []func(*SSID){func(s *SSID) { s.SpecialLogic = true }}), ESIDModeIncompatible},
		{"auth required by initiator only", nil2, b.setup([]func(*SSID){withAuth}, nil), ESIDSecureAuthIncompatible},
		{"auth required by responder only", nil2, b.setup(nil, []func(*SSID){withAuth}), ESIDSecureAuthIncompatible},
		{"SSID with a bad CR", nil2, []step{{R, b.ssrm()}, {I, append(b.ssid("O0013000000INIT")[:60], '\n')}}, ESIDInvalidData},
		// Secure authentication (§4.2.4).
		{"AUCH before SECD", nil2, join(b.setup([]func(*SSID){withAuth}, []func(*SSID){withAuth}), []step{{R, b.auch()}}), ESIDProtocolViolation},
		{"SFID before authentication", nil2, join(b.setup([]func(*SSID){withAuth}, []func(*SSID){withAuth}), []step{{I, b.sfid()}}), ESIDProtocolViolation},
		{"SECD without negotiated authentication", nil2, join(base, []step{{I, b.secd()}}), ESIDProtocolViolation},
		{"SECD repeated instead of AURP", nil2, join(b.setup([]func(*SSID){withAuth}, []func(*SSID){withAuth}), []step{{I, b.secd()}, {R, b.auch()}, {I, b.secd()}}), ESIDProtocolViolation},
		{"responder AURP before its SECD", nil2, join(b.setup([]func(*SSID){withAuth}, []func(*SSID){withAuth}), []step{{I, b.secd()}, {R, b.auch()}, {I, b.aurp()}, {R, b.aurp()}}), ESIDProtocolViolation},
		// Start file (§4.3, §9.10, §9.12).
		{"SFID from the listener", nil2, join(base, []step{{R, b.sfid()}}), ESIDProtocolViolation},
		{"SFID from a receiver-only speaker", nil2, join(b.setup([]func(*SSID){mode(ModeReceiver)}, nil), []step{{I, b.sfid()}}), ESIDProtocolViolation},
		{"SFID to a sender-only listener", nil2, join(b.setup(nil, []func(*SSID){mode(ModeSender)}), []step{{I, b.sfid()}}), ESIDProtocolViolation},
		{"restart without negotiation", nil2, join(base, []step{{I, b.sfid(restartAt(1))}}), ESIDProtocolViolation},
		{"SFPA above the requested restart", nil2, join(b.setup([]func(*SSID){withRestart}, []func(*SSID){withRestart}), []step{{I, b.sfid(restartAt(4))}, {R, b.sfpa(5)}}), ESIDProtocolViolation},
		{"SFPA from the speaker", nil2, join(base, []step{{I, b.sfid()}, {I, b.sfpa(0)}}), ESIDProtocolViolation},
		{"SFPA without SFID", nil2, join(base, []step{{R, b.sfpa(0)}}), ESIDProtocolViolation},
		{"SFID while a file is open", nil2, join(inFile, []step{{I, b.sfid()}}), ESIDProtocolViolation},
		{"bad field in SFID", nil2, join(base, []step{{I, mutateBuf(b.sfid(), 30, "20230229")}}), ESIDInvalidData},
		// Data transfer (§4.4, §7, §9.12).
		{"DATA before SFPA", nil2, join(base, []step{{I, b.sfid()}, {I, b.data("|")}}), ESIDProtocolViolation},
		{"DATA from the listener", nil2, join(inFile, []step{{R, b.data("|")}}), ESIDProtocolViolation},
		{"DATA in idle", nil2, join(base, []step{{I, b.data("|")}}), ESIDProtocolViolation},
		{"DATA above the negotiated size", nil2, join(inFile, []step{{I, big}}), ESIDBufferSizeError},
		{"DATA above the configured cap", ValidatorConfig{MaxBufferSize: 200}, join(inFile, []step{{I, b.data(string(make([]byte, 63)), string(make([]byte, 63)), string(make([]byte, 63)), string(make([]byte, 10)))}}), ESIDBufferSizeError},
		{"DATA beyond credit", nil2, join(credit1, []step{{I, b.data("a")}, {I, b.data("b")}}), ESIDProtocolViolation},
		{"DATA beyond the configured credit cap", ValidatorConfig{MaxCredit: 1}, join(inFile, []step{{I, b.data("a")}, {I, b.data("b")}}), ESIDProtocolViolation},
		{"compressed subrecord not negotiated", nil2, join(inFile, []step{{I, []byte{'D', 0x45, ' '}}}), ESIDInvalidData},
		{"compression offered by one side only", nil2, join(b.setup([]func(*SSID){withCompression}, nil), []step{{I, b.sfid()}, {R, b.sfpa(0)}, {I, []byte{'D', 0x45, ' '}}}), ESIDInvalidData},
		{"subrecord overruns the buffer", nil2, join(inFile, []step{{I, []byte{'D', 0x05, 'a', 'b'}}}), ESIDBufferSizeError},
		{"record longer than SFIDLRECL", nil2, join(base, []step{{I, b.sfid(fixed(4))}, {R, b.sfpa(0)}, {I, b.data("abc", "de|")}}), ESIDInvalidData},
		{"CDT with credit left", nil2, join(inFile, []step{{I, b.data("a")}, {R, b.cdt()}}), ESIDProtocolViolation},
		{"CDT from the speaker", nil2, join(credit1, []step{{I, b.data("a")}, {I, b.cdt()}}), ESIDProtocolViolation},
		{"CDT during opening", nil2, join(base, []step{{I, b.sfid()}, {R, b.cdt()}}), ESIDProtocolViolation},
		{"CD during data transfer", nil2, join(inFile, []step{{I, b.cd()}}), ESIDProtocolViolation},
		// End file (§4.5, §5.3.8, §9.11).
		{"EFID while waiting for credit", nil2, join(credit1, []step{{I, b.data("a|")}, {I, b.efid(0, 1)}}), ESIDProtocolViolation},
		{"EFID from the listener", nil2, join(inFile, []step{{R, b.efid(0, 0)}}), ESIDProtocolViolation},
		{"EFID unit count of a U file", nil2, join(inFile, []step{{I, b.data("abc|")}, {I, b.efid(0, 4)}}), ESIDInvalidData},
		{"EFID record count of a U file", nil2, join(inFile, []step{{I, b.data("abc|")}, {I, b.efid(1, 3)}}), ESIDInvalidData},
		{"EFID record count of an F file", nil2, join(base, []step{{I, b.sfid(fixed(3))}, {R, b.sfpa(0)}, {I, b.data("abc|", "abc|")}, {I, b.efid(3, 6)}}), ESIDInvalidData},
		{"EFID unit count of a V file", nil2, join(base, []step{{I, b.sfid(variable(9))}, {R, b.sfpa(0)}, {I, b.data("abc|", "a|")}, {I, b.efid(2, 6)}}), ESIDInvalidData},
		{"F file ends inside a record", nil2, join(base, []step{{I, b.sfid(fixed(3))}, {R, b.sfpa(0)}, {I, b.data("abc|", "ab")}, {I, b.efid(1, 5)}}), ESIDInvalidData},
		{"F restart: fewer units than seen", nil2, join(b.setup([]func(*SSID){withRestart}, []func(*SSID){withRestart}), []step{{I, b.sfid(fixed(3), restartAt(2))}, {R, b.sfpa(2)}, {I, b.data("abc|")}, {I, b.efid(3, 2)}}), ESIDInvalidData},
		{"U restart: offset ignored", nil2, join(b.setup([]func(*SSID){withRestart}, []func(*SSID){withRestart}), []step{{I, b.sfid(restartAt(2))}, {R, b.sfpa(2)}, {I, b.data("abc|")}, {I, b.efid(0, 3)}}), ESIDInvalidData},
		{"EFPA before EFID", nil2, join(inFile, []step{{R, b.efpa(false)}}), ESIDProtocolViolation},
		{"EFPA from the speaker", nil2, join(inFile, []step{{I, b.data("|")}, {I, b.efid(0, 0)}, {I, b.efpa(false)}}), ESIDProtocolViolation},
		{"SFID instead of the requested CD", nil2, join(inFile, []step{{I, b.data("|")}, {I, b.efid(0, 0)}, {R, b.efpa(true)}, {I, b.sfid()}}), ESIDProtocolViolation},
		{"listener CD after EFPA Y", nil2, join(inFile, []step{{I, b.data("|")}, {I, b.efid(0, 0)}, {R, b.efpa(true)}, {R, b.cd()}}), ESIDProtocolViolation},
		// End-to-end responses (§4.3.8).
		{"EERP from the listener", nil2, join(base, []step{{R, b.eerp()}}), ESIDProtocolViolation},
		{"SFID before RTR", nil2, join(base, []step{{I, b.eerp()}, {I, b.sfid()}}), ESIDProtocolViolation},
		{"CD before RTR", nil2, join(base, []step{{I, b.nerp()}, {I, b.cd()}}), ESIDProtocolViolation},
		{"RTR without EERP", nil2, join(base, []step{{R, b.rtr()}}), ESIDProtocolViolation},
		{"RTR from the speaker", nil2, join(base, []step{{I, b.eerp()}, {I, b.rtr()}}), ESIDProtocolViolation},
		{"EERP during data transfer", nil2, join(inFile, []step{{I, b.eerp()}}), ESIDProtocolViolation},
		// Change direction and end of session (§3.3.4, §3.4, §9.10, §9.12).
		{"CD right after an unsolicited CD", nil2, join(base, []step{{I, b.cd()}, {R, b.cd()}}), ESIDProtocolViolation},
		{"CD from the listener", nil2, join(base, []step{{R, b.cd()}}), ESIDProtocolViolation},
		{"normal ESID from the first speaker", nil2, join(base, []step{{I, b.esid(ESIDNormal)}}), ESIDProtocolViolation},
		{"normal ESID from the side that sent CD", nil2, join(base, []step{{I, b.cd()}, {I, b.esid(ESIDNormal)}}), ESIDProtocolViolation},
		{"normal ESID during setup", nil2, []step{{R, b.ssrm()}, {I, b.ssid("O0013000000INIT")}, {R, b.esid(ESIDNormal)}}, ESIDProtocolViolation},
		{"normal ESID after EERP", nil2, join(base, []step{{I, b.cd()}, {R, b.eerp()}, {I, b.rtr()}, {R, b.esid(ESIDNormal)}}), ESIDProtocolViolation},
		{"normal ESID during data", nil2, join(inFile, []step{{I, b.esid(ESIDNormal)}}), ESIDProtocolViolation},
		{"command after its own normal ESID", nil2, join(base, []step{{I, b.cd()}, {R, b.esid(ESIDNormal)}, {R, b.sfid()}}), ESIDProtocolViolation},
		{"DATA after its own abort", nil2, join(inFile, []step{{I, b.esid(ESIDTimeout)}, {I, b.data("|")}}), ESIDProtocolViolation},
		{"ESID twice from one side", nil2, join(base, []step{{I, b.esid(ESIDTimeout)}, {I, b.esid(ESIDTimeout)}}), ESIDProtocolViolation},
		// Malformed buffers.
		{"unknown command", nil2, join(base, []step{{I, []byte("Q")}}), ESIDCommandNotRecognised},
		{"empty buffer", nil2, join(base, []step{{I, nil}}), ESIDBufferSizeError},
		{"invalid side", nil2, []step{{Side(7), b.ssrm()}}, ESIDUnspecified},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d illegal transcripts", len(tests))
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("duplicate test name")
			}
			seen[tc.name] = true
			v := NewValidator(tc.cfg)
			i, err := run(t, v, tc.steps)
			if i != len(tc.steps)-1 {
				t.Fatalf("transcript failed at step %d of %d: %v, want the last step to fail", i, len(tc.steps), err)
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Check(last step) = %v, want *ProtocolError", err)
			}
			if pe.Reason != tc.reason {
				t.Errorf("Check(last step) reason = %v, want %v (%v)", pe.Reason, tc.reason, err)
			}
			if v.State() != StateFailed || v.Err() != err {
				t.Errorf("after the violation State() = %v, Err() = %v, want failed with the same error", v.State(), v.Err())
			}
			// Dead from now on, whatever comes.
			for _, s := range []step{{R, b.ssrm()}, {I, b.cd()}, {I, b.data("|")}, {R, b.esid(ESIDTimeout)}} {
				if _, err2 := v.Check(s.from, s.buf); err2 != err {
					t.Errorf("Check(%s) after the violation = %v, want the first error %v", CommandCode(s.buf[0]), err2, err)
				}
			}
		})
	}
}

// nil2 is the zero ValidatorConfig, named for table alignment.
var nil2 = ValidatorConfig{}

func mutateBuf(b []byte, off int, s string) []byte {
	b = bytes.Clone(b)
	copy(b[off:], s)
	return b
}

func TestValidatorAccessors(t *testing.T) {
	b := tb{t}
	v := NewValidator(ValidatorConfig{})
	if _, ok := v.Params(); ok {
		t.Errorf("Params() before SSIDs ok = true, want false")
	}
	steps := join(b.setup([]func(*SSID){bufSize(8192), credit(10), withCompression, withRestart},
		[]func(*SSID){bufSize(2048), credit(7), withRestart, mode(ModeReceiver)}), []step{{I, b.sfid()}})
	if _, err := run(t, v, steps); err != nil {
		t.Fatal(err)
	}
	p, ok := v.Params()
	want := Params{Level: 5, InitiatorID: "O0013000000INIT", ResponderID: "O0013000000RESP",
		InitiatorMode: ModeBoth, ResponderMode: ModeReceiver, BufferSize: 2048, Credit: 7,
		Restart: true, MaxData: 2048, Window: 7, InitiatorSends: true}
	if !ok || p != want {
		t.Errorf("Params() = %+v, %v, want %+v", p, ok, want)
	}
	if s, ok := v.SSID(Initiator); !ok || s.BufferSize != 8192 || s.ID != "O0013000000INIT" {
		t.Errorf("SSID(Initiator) = %+v, %v", s, ok)
	}
	if f, ok := v.CurrentFile(); !ok || f.DatasetName != "FILE" {
		t.Errorf("CurrentFile() = %+v, %v, want FILE", f.DatasetName, ok)
	}
	if v.Speaker() != Initiator || v.State() != StateOpening {
		t.Errorf("Speaker(), State() = %v, %v, want initiator, opening", v.Speaker(), v.State())
	}
	if _, _, ended := v.Ended(); ended {
		t.Errorf("Ended() = true, want false")
	}
	if got := fmt.Sprint(Initiator, Responder, StateWaitRTR, Side(3)); got != "initiator responder wait-rtr Side(3)" {
		t.Errorf("String() = %q", got)
	}
}

func TestLimitSSID(t *testing.T) {
	b := tb{t}
	buf := b.ssid("O0013000000INIT", bufSize(99999), credit(999))
	changed, err := LimitSSID(buf, 16384, 64)
	if err != nil || !changed {
		t.Fatalf("LimitSSID() = %v, %v, want true, nil", changed, err)
	}
	c, err := Parse(buf, nil)
	if err != nil {
		t.Fatalf("Parse(limited) error = %v", err)
	}
	if s := c.(*SSID); s.BufferSize != 16384 || s.Credit != 64 || s.ID != "O0013000000INIT" {
		t.Errorf("limited SSID = %+v, want 16384 / 64", s)
	}
	changed, err = LimitSSID(buf, 32768, 0)
	if err != nil || changed {
		t.Errorf("LimitSSID(higher) = %v, %v, want false, nil", changed, err)
	}
	for _, tc := range []struct {
		buf        []byte
		maxBuf, cr int
	}{
		{[]byte("X5"), 1024, 0},
		{bytes.Clone(buf), 127, 0},
		{bytes.Clone(buf), 0, 1000},
		{b.sfid(), 1024, 1},
	} {
		if _, err := LimitSSID(tc.buf, tc.maxBuf, tc.cr); err == nil {
			t.Errorf("LimitSSID(%q, %d, %d) = nil error, want an error", tc.buf, tc.maxBuf, tc.cr)
		}
	}
}

// TestValidatorProxyRewrite runs the documented proxy procedure: both SSIDs
// are limited before Check and before forwarding, so that both endpoints
// and the Validator agree on the limits.
func TestValidatorProxyRewrite(t *testing.T) {
	b := tb{t}
	v := NewValidator(ValidatorConfig{MaxBufferSize: 4096, MaxCredit: 8})
	if _, err := v.Check(R, b.ssrm()); err != nil {
		t.Fatal(err)
	}
	init := b.ssid("O0013000000INIT", bufSize(99999), credit(999))
	if _, err := LimitSSID(init, 4096, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(I, init); err != nil {
		t.Fatal(err)
	}
	fwd, _ := v.SSID(Initiator)
	resp := b.ssid("O0013000000RESP", bufSize(65536), credit(8))
	if _, err := LimitSSID(resp, fwd.BufferSize, fwd.Credit); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(R, resp); err != nil {
		t.Fatal(err)
	}
	p, _ := v.Params()
	if p.BufferSize != 4096 || p.MaxData != 4096 || p.Credit != 8 || p.Window != 8 {
		t.Errorf("Params() = %+v, want 4096 octets, credit 8", p)
	}
}

func TestValidatorDataDoesNotAllocate(t *testing.T) {
	b := tb{t}
	v := NewValidator(ValidatorConfig{})
	if _, err := run(t, v, join(b.setup([]func(*SSID){credit(999)}, []func(*SSID){credit(999)}), []step{{I, b.sfid()}, {R, b.sfpa(0)}})); err != nil {
		t.Fatal(err)
	}
	d, _ := dataN(4096)
	if allocs := testing.AllocsPerRun(500, func() {
		if _, err := v.Check(I, d); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Check(DATA) allocates %v times, want 0", allocs)
	}
}

func TestValidatorCreditRefillDoesNotAllocate(t *testing.T) {
	b := tb{t}
	v := NewValidator(ValidatorConfig{})
	if _, err := run(t, v, join(b.setup([]func(*SSID){credit(1)}, []func(*SSID){credit(1)}), []step{{I, b.sfid()}, {R, b.sfpa(0)}})); err != nil {
		t.Fatal(err)
	}
	d, _ := dataN(512)
	cdt := b.cdt()
	if allocs := testing.AllocsPerRun(200, func() {
		if _, err := v.Check(I, d); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Check(R, cdt); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Check(DATA), Check(CDT) allocate %v times, want 0", allocs)
	}
}

func TestValidatorCrossingESID(t *testing.T) {
	b := tb{t}
	v := NewValidator(ValidatorConfig{})
	steps := join(b.setup(nil, nil), []step{{I, b.sfid()}, {R, b.sfpa(0)}, {I, b.data("abc")}, {R, b.esid(ESIDResourcesNotAvailable)}})
	if _, err := run(t, v, steps); err != nil {
		t.Fatal(err)
	}
	// The initiator's buffers were in flight when the ESID crossed them.
	for _, buf := range [][]byte{b.data("def"), b.efid(0, 6), b.cdt()} {
		if _, err := v.Check(I, buf); err != ErrSessionEnded {
			t.Errorf("Check(%s) after the other side's ESID = %v, want ErrSessionEnded", CommandCode(buf[0]), err)
		}
	}
	if _, err := v.Check(I, b.esid(ESIDUnspecified)); err != nil {
		t.Errorf("Check(crossing ESID) = %v, want nil", err)
	}
	if v.Err() != nil || v.State() != StateEnded {
		t.Errorf("State(), Err() = %v, %v, want ended, nil", v.State(), v.Err())
	}
	// The side that ended may not go on; the end stays recorded.
	if _, err := v.Check(R, b.cdt()); ReasonOf(err) != ESIDProtocolViolation {
		t.Errorf("Check(CDT) from the side that ended = %v, want a protocol violation", err)
	}
	if r, by, ended := v.Ended(); !ended || r != ESIDResourcesNotAvailable || by != R || v.NormalEnd() {
		t.Errorf("Ended() = %v, %v, %v, NormalEnd() = %v, want 08 by responder, not normal", r, by, ended, v.NormalEnd())
	}
}

// TestValidatorConcurrentUse runs Check from two goroutines, one per side as
// a proxy does, while a third reads the accessors; run with -race.
func TestValidatorConcurrentUse(t *testing.T) {
	b := tb{t}
	v := NewValidator(ValidatorConfig{})
	if _, err := run(t, v, join(b.setup([]func(*SSID){credit(1)}, []func(*SSID){credit(1)}), []step{{I, b.sfid()}, {R, b.sfpa(0)}})); err != nil {
		t.Fatal(err)
	}
	const n = 200
	d, _ := dataN(256)
	dataSent := make(chan struct{})
	creditSent := make(chan struct{})
	errs := make(chan error, 2)
	done := make(chan struct{})
	go func() { // initiator: one DATA per credit
		for range n {
			if _, err := v.Check(I, d); err != nil {
				errs <- err
				close(dataSent)
				return
			}
			dataSent <- struct{}{}
			<-creditSent
		}
		close(dataSent)
		errs <- nil
	}()
	go func() { // responder: CDT after each DATA
		for range dataSent {
			if _, err := v.Check(R, b.cdt()); err != nil {
				errs <- err
				close(creditSent)
				return
			}
			creditSent <- struct{}{}
		}
		errs <- nil
	}()
	go func() {
		defer close(done)
		for range n {
			_ = v.State()
			_, _ = v.Params()
			_, _ = v.CurrentFile()
			_ = v.Speaker()
		}
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Check() = %v, want nil", err)
		}
	}
	<-done
	if v.State() != StateData || v.Err() != nil {
		t.Errorf("State(), Err() = %v, %v, want data, nil", v.State(), v.Err())
	}
}
