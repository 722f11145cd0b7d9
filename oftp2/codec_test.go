package oftp2

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func stamp(s string, counter int) Timestamp {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return Timestamp{Time: t, Counter: counter}
}

var (
	sha1Hash = bytes.Repeat([]byte{0xa5, 0x5a}, 10)
	cmsBlob  = append([]byte{0x30, 0x82, 0x01, 0x00}, bytes.Repeat([]byte{0x01, 0x02, 0x03}, 40)...)
)

// goldenCase is one command with its exact encoding. literal is the expected
// buffer written by hand from the RFC 5024 §5.3 field tables, independent of
// the golden file and of the encoder; every case has one.
type goldenCase struct {
	name    string
	cmd     Command
	literal string
}

// field is one field of a command written by hand: pos is its position from
// the RFC 5024 §5.3 table, v its octets.
type field struct {
	pos int
	v   string
}

// layout joins hand-written fields into one command buffer. Each field must
// start at the position its RFC table gives, so an offset counted wrongly by
// hand stops the test binary before any comparison with the encoder.
func layout(fs ...field) string {
	var b strings.Builder
	for _, f := range fs {
		if b.Len() != f.pos {
			panic(fmt.Sprintf("layout: field %q at offset %d, the RFC table says %d", f.v, b.Len(), f.pos))
		}
		b.WriteString(f.v)
	}
	return b.String()
}

// The binary fields of the signed vectors, written out as octets: a 20-octet
// SHA-1 value and a 124-octet CMS-like blob (30 82 01 00, then 40 × 01 02 03).
var (
	sha1Literal = strings.Repeat("\xa5\x5a", 10)
	cmsLiteral  = "\x30\x82\x01\x00" + strings.Repeat("\x01\x02\x03", 40)
)

var goldenCases = []goldenCase{
	{name: "ssrm", cmd: &SSRM{}, literal: "IODETTE FTP READY \r"},
	{name: "ssrm_8d", cmd: &SSRM{HighBitCR: true}, literal: "IODETTE FTP READY \x8d"},
	{
		name: "ssid",
		cmd: &SSID{Level: 5, ID: "O0013000000SMARTPROXY", Password: "SECRET", BufferSize: 99999,
			Mode: ModeBoth, Compression: true, Restart: true, Credit: 999, UserData: "USER"},
		//        0 1 2                        27       35   40 44  47   52      60
		literal: "X5O0013000000SMARTPROXY    SECRET  99999BYYN999N    USER    \r",
	},
	{
		name: "ssid_auth",
		cmd: &SSID{Level: 5, ID: "O0013000000ACME     SUB1", Password: "PW", BufferSize: 128,
			Mode: ModeReceiver, Credit: 7, SecureAuth: true, HighBitCR: true},
		literal: "X5O0013000000ACME     SUB1 PW      00128RNNN007Y            \x8d",
	},
	{
		name: "sfid",
		cmd: &SFID{DatasetName: "INVOICES.2024", Stamp: stamp("2024-02-29 23:59:58", 1), UserData: "U1",
			Destination: "O0013000000PARTNER", Originator: "O0013000000SMARTPROXY", Format: FormatUnstructured,
			FileSize: 12345, OriginalFileSize: 12345, RestartPosition: 0, Description: "Rechnungen für März"},
		literal: layout( // RFC 5024 §5.3.3
			field{0, "H"},                                   // SFIDCMD
			field{1, "INVOICES.2024             "},          // SFIDDSN X(26): 13 + 13 spaces
			field{27, "   "},                                // SFIDRSV1
			field{30, "20240229"},                           // SFIDDATE
			field{38, "2359580001"},                         // SFIDTIME HHMMSScccc
			field{48, "U1      "},                           // SFIDUSER X(8)
			field{56, "O0013000000PARTNER       "},          // SFIDDEST X(25): 18 + 7
			field{81, "O0013000000SMARTPROXY    "},          // SFIDORIG X(25): 21 + 4
			field{106, "U"},                                 // SFIDFMT
			field{107, "00000"},                             // SFIDLRECL 9(5)
			field{112, "0000000012345"},                     // SFIDFSIZ 9(13)
			field{125, "0000000012345"},                     // SFIDOSIZ 9(13)
			field{138, "00000000000000000"},                 // SFIDREST 9(17)
			field{155, "00"},                                // SFIDSEC
			field{157, "00"},                                // SFIDCIPH
			field{159, "0"},                                 // SFIDCOMP
			field{160, "0"},                                 // SFIDENV
			field{161, "N"},                                 // SFIDSIGN
			field{162, "021"},                               // SFIDDESCL: octets of the UTF-8 text
			field{165, "Rechnungen f\xc3\xbcr M\xc3\xa4rz"}, // SFIDDESC T(n)
		),
	},
	{
		name: "sfid_fixed_signed",
		cmd: &SFID{DatasetName: "ORDERS", Stamp: stamp("1999-12-31 00:00:00", 9999),
			Destination: "O0013000000PARTNER", Originator: "O0013000000SMARTPROXY", Format: FormatFixed,
			MaxRecordSize: 80, FileSize: 9999999999999, OriginalFileSize: 1, RestartPosition: 99999999999999999,
			Security: SecurityEncryptedSigned, Cipher: 2, Compression: FileCompressionZLIB, Envelope: EnvelopeCMS,
			SignedEERP: true},
		literal: layout( // RFC 5024 §5.3.3
			field{0, "H"},
			field{1, "ORDERS                    "}, // 6 + 20 spaces
			field{27, "   "},
			field{30, "19991231"},
			field{38, "0000009999"},
			field{48, "        "},
			field{56, "O0013000000PARTNER       "},
			field{81, "O0013000000SMARTPROXY    "},
			field{106, "F"},
			field{107, "00080"},
			field{112, "9999999999999"},
			field{125, "0000000000001"},
			field{138, "99999999999999999"},
			field{155, "03"}, // encrypted and signed
			field{157, "02"},
			field{159, "1"}, // ZLIB
			field{160, "1"}, // CMS
			field{161, "Y"},
			field{162, "000"},
		),
	},
	{name: "sfpa", cmd: &SFPA{AnswerCount: 42}, literal: "200000000000000042"},
	{name: "sfna", cmd: &SFNA{Reason: SFNADuplicateFile, Retry: true, Text: "already received"}, literal: "313Y016already received"},
	{name: "sfna_notext", cmd: &SFNA{Reason: SFNAUnspecified}, literal: "399N000"},
	{name: "data", cmd: &Data{Payload: []byte{0x05, 'H', 'e', 'l', 'l', 'o', 0x40 | 10, ' ', 0x80}}, literal: "D\x05Hello\x4a \x80"},
	{name: "cdt", cmd: &CDT{}, literal: "C  "},
	{name: "efid", cmd: &EFID{RecordCount: 3, UnitCount: 240}, literal: "T0000000000000000300000000000000240"},
	{name: "efpa_y", cmd: &EFPA{ChangeDirection: true}, literal: "4Y"},
	{name: "efpa_n", cmd: &EFPA{}, literal: "4N"},
	{name: "efna", cmd: &EFNA{Reason: EFNAInvalidByteCount, Text: "expected 240"}, literal: "511012expected 240"},
	{name: "esid_normal", cmd: &ESID{Reason: ESIDNormal}, literal: "F00000\r"},
	{name: "esid_error", cmd: &ESID{Reason: ESIDModeIncompatible, Text: "both send-only", HighBitCR: true}, literal: "F10014both send-only\x8d"},
	{name: "cd", cmd: &CD{}, literal: "R"},
	{
		name: "eerp",
		cmd: &EERP{DatasetName: "INVOICES.2024", Stamp: stamp("2024-02-29 23:59:58", 1),
			Destination: "O0013000000SMARTPROXY", Originator: "O0013000000PARTNER"},
		literal: layout( // RFC 5024 §5.3.13
			field{0, "E"},                          // EERPCMD
			field{1, "INVOICES.2024             "}, // EERPDSN X(26)
			field{27, "   "},                       // EERPRSV1
			field{30, "20240229"},                  // EERPDATE
			field{38, "2359580001"},                // EERPTIME
			field{48, "        "},                  // EERPUSER X(8)
			field{56, "O0013000000SMARTPROXY    "}, // EERPDEST X(25)
			field{81, "O0013000000PARTNER       "}, // EERPORIG X(25)
			field{106, "\x00\x00"},                 // EERPHSHL U(2): no hash
			field{108, "\x00\x00"},                 // EERPSIGL U(2): no signature
		),
	},
	{
		name: "eerp_signed",
		cmd: &EERP{DatasetName: "ORDERS", Stamp: stamp("1999-12-31 00:00:00", 9999), UserData: "X",
			Destination: "O0013000000SMARTPROXY", Originator: "O0013000000PARTNER", Hash: sha1Hash, Signature: cmsBlob},
		literal: layout( // RFC 5024 §5.3.13
			field{0, "E"},
			field{1, "ORDERS                    "},
			field{27, "   "},
			field{30, "19991231"},
			field{38, "0000009999"},
			field{48, "X       "},
			field{56, "O0013000000SMARTPROXY    "},
			field{81, "O0013000000PARTNER       "},
			field{106, "\x00\x14"}, // EERPHSHL: 20, network byte order
			field{108, sha1Literal},
			field{128, "\x00\x7c"}, // EERPSIGL: 124
			field{130, cmsLiteral},
		),
	},
	{
		name: "nerp",
		cmd: &NERP{DatasetName: "ORDERS", Stamp: stamp("2007-11-01 12:00:00", 17),
			Destination: "O0013000000SMARTPROXY", Originator: "O0013000000PARTNER", Creator: "O0013000000HUB",
			Reason: NERPDuplicateFile, Text: "duplicate", Hash: sha1Hash, Signature: cmsBlob},
		literal: layout( // RFC 5024 §5.3.14
			field{0, "N"},                           // NERPCMD
			field{1, "ORDERS                    "},  // NERPDSN X(26)
			field{27, "      "},                     // NERPRSV1 X(6)
			field{33, "20071101"},                   // NERPDATE
			field{41, "1200000017"},                 // NERPTIME
			field{51, "O0013000000SMARTPROXY    "},  // NERPDEST
			field{76, "O0013000000PARTNER       "},  // NERPORIG
			field{101, "O0013000000HUB           "}, // NERPCREA X(25): 14 + 11
			field{126, "23"},                        // NERPREAS: SFNA(RETRY=N) with reason 13
			field{128, "009"},                       // NERPREASL
			field{131, "duplicate"},                 // NERPREAST
			field{140, "\x00\x14"},                  // NERPHSHL
			field{142, sha1Literal},                 // NERPHSH
			field{162, "\x00\x7c"},                  // NERPSIGL
			field{164, cmsLiteral},                  // NERPSIG
		),
	},
	{name: "rtr", cmd: &RTR{}, literal: "P"},
	{name: "secd", cmd: &SECD{}, literal: "J"},
	{name: "auch", cmd: &AUCH{Challenge: cmsBlob},
		// RFC 5024 §5.3.17: AUCHCMD, AUCHCHLL U(2) = 124, AUCHCHAL.
		literal: layout(field{0, "A"}, field{1, "\x00\x7c"}, field{3, cmsLiteral})},
	{name: "aurp", cmd: &AURP{Response: [20]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}},
		// RFC 5024 §5.3.18: AURPCMD, AURPRSP U(20).
		literal: layout(field{0, "S"}, field{1, "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14"})},
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".hex") }

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(goldenPath(name))
	if err != nil {
		t.Fatalf("read golden file: %v (run go test -run TestGolden -update)", err)
	}
	var out []byte
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("golden file %s: %v", name, err)
		}
		out = append(out, v...)
	}
	return out
}

func writeGolden(t testing.TB, name string, cmd Command, b []byte) {
	t.Helper()
	var s strings.Builder
	s.WriteString("# " + cmd.Code().String() + ", " + strconv.Itoa(len(b)) + " octets\n")
	for i := 0; i < len(b); i += 32 {
		s.WriteString(hex.EncodeToString(b[i:min(i+32, len(b))]) + "\n")
	}
	if err := os.WriteFile(goldenPath(name), []byte(s.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

var cmpOpts = cmp.Options{cmpopts.EquateEmpty()}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cmd.Append(nil)
			if err != nil {
				t.Fatalf("Append() error = %v", err)
			}
			if tc.literal == "" {
				t.Errorf("no hand-written literal: a golden file alone only records what the encoder wrote")
			}
			if string(got) != tc.literal {
				t.Errorf("Append() = %q, want %q", got, tc.literal)
			}
			// The decoder is checked against the hand-written buffer too, so that an
			// offset error shared by encoder and decoder cannot pass.
			if lit, err := Parse([]byte(tc.literal), nil); err != nil {
				t.Errorf("Parse(literal) error = %v", err)
			} else if diff := cmp.Diff(tc.cmd, lit, cmpOpts); diff != "" {
				t.Errorf("Parse(literal) mismatch (-want +got):\n%s", diff)
			}
			if *update {
				writeGolden(t, tc.name, tc.cmd, got)
			}
			want := readGolden(t, tc.name)
			if !bytes.Equal(got, want) {
				t.Errorf("Append() = %x, want golden %x", got, want)
			}
			// Appending to a non-empty dst keeps the prefix.
			pre := []byte("prefix")
			got2, err := tc.cmd.Append(pre)
			if err != nil || !bytes.Equal(got2[:6], pre) || !bytes.Equal(got2[6:], want) {
				t.Errorf("Append(prefix) = %q, %v, want prefix+golden", got2, err)
			}
			dec, err := Parse(want, nil)
			if err != nil {
				t.Fatalf("Parse(golden) error = %v", err)
			}
			if diff := cmp.Diff(tc.cmd, dec, cmpOpts); diff != "" {
				t.Errorf("Parse(golden) mismatch (-want +got):\n%s", diff)
			}
			if dec.Code() != tc.cmd.Code() || want[0] != byte(tc.cmd.Code()) {
				t.Errorf("Code() = %v, first octet %q, want %v", dec.Code(), want[0], tc.cmd.Code())
			}
			if err := Validate(tc.cmd, nil); err != nil {
				t.Errorf("Validate(strict) = %v, want nil", err)
			}
		})
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 4096)
	for _, tc := range goldenCases {
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := tc.cmd.Append(buf[:0]); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: Append allocates %v times with enough capacity, want 0", tc.name, allocs)
		}
	}
}

// mutate returns a copy of the golden buffer name with b written at off.
func mutate(t *testing.T, name string, off int, b string) []byte {
	t.Helper()
	buf := bytes.Clone(readGolden(t, name))
	copy(buf[off:], b)
	return buf
}

func golden(t *testing.T, name string) []byte { return readGolden(t, name) }

func TestParseRejects(t *testing.T) {
	lenient := &ParseOptions{Charset: CharsetLenient}
	tests := []struct {
		name   string
		buf    func(t *testing.T) []byte
		opts   *ParseOptions
		reason ESIDReason
		field  string
	}{
		{"empty", func(t *testing.T) []byte { return nil }, nil, ESIDBufferSizeError, ""},
		{"unknown code", func(t *testing.T) []byte { return []byte("Z") }, nil, ESIDCommandNotRecognised, ""},
		{"lower case code", func(t *testing.T) []byte { return []byte("x") }, nil, ESIDCommandNotRecognised, ""},
		{"SSRM message", func(t *testing.T) []byte { return []byte("IODETTE FTP READY!\r") }, nil, ESIDInvalidData, "SSRMMSG"},
		{"SSRM CR", func(t *testing.T) []byte { return []byte("IODETTE FTP READY \n") }, nil, ESIDInvalidData, "SSRMCR"},
		{"SSRM short", func(t *testing.T) []byte { return []byte("IODETTE FTP READY") }, nil, ESIDBufferSizeError, ""},
		{"SSID long", func(t *testing.T) []byte { return append(golden(t, "ssid"), ' ') }, nil, ESIDBufferSizeError, ""},
		{"SSID short", func(t *testing.T) []byte { return golden(t, "ssid")[:60] }, nil, ESIDBufferSizeError, ""},
		{"SSIDLEV zero", func(t *testing.T) []byte { return mutate(t, "ssid", 1, "0") }, nil, ESIDInvalidData, "SSIDLEV"},
		{"SSIDLEV letter", func(t *testing.T) []byte { return mutate(t, "ssid", 1, "A") }, nil, ESIDInvalidData, "SSIDLEV"},
		{"SSIDCODE empty", func(t *testing.T) []byte { return mutate(t, "ssid", 2, strings.Repeat(" ", 25)) }, nil, ESIDInvalidData, "SSIDCODE"},
		{"SSIDCODE leading space", func(t *testing.T) []byte { return mutate(t, "ssid", 2, " O001") }, nil, ESIDInvalidData, "SSIDCODE"},
		{"SSIDCODE lower case strict", func(t *testing.T) []byte { return mutate(t, "ssid", 2, "o") }, nil, ESIDInvalidData, "SSIDCODE"},
		{"SSIDCODE underscore strict", func(t *testing.T) []byte { return mutate(t, "ssid", 10, "_") }, nil, ESIDInvalidData, "SSIDCODE"},
		{"SSIDCODE control lenient", func(t *testing.T) []byte { return mutate(t, "ssid", 10, "\x01") }, lenient, ESIDInvalidData, "SSIDCODE"},
		{"SSIDCODE 8-bit lenient", func(t *testing.T) []byte { return mutate(t, "ssid", 10, "\xc3") }, lenient, ESIDInvalidData, "SSIDCODE"},
		{"SSIDPSWD embedded space", func(t *testing.T) []byte { return mutate(t, "ssid", 27, "SEC RET ") }, nil, ESIDInvalidData, "SSIDPSWD"},
		{"SSIDSDEB below 128", func(t *testing.T) []byte { return mutate(t, "ssid", 35, "00127") }, nil, ESIDInvalidData, "SSIDSDEB"},
		{"SSIDSDEB not digits", func(t *testing.T) []byte { return mutate(t, "ssid", 35, " 4096") }, nil, ESIDInvalidData, "SSIDSDEB"},
		{"SSIDSR", func(t *testing.T) []byte { return mutate(t, "ssid", 40, "X") }, nil, ESIDInvalidData, "SSIDSR"},
		{"SSIDCMPR", func(t *testing.T) []byte { return mutate(t, "ssid", 41, "y") }, nil, ESIDInvalidData, "SSIDCMPR"},
		{"SSIDREST", func(t *testing.T) []byte { return mutate(t, "ssid", 42, " ") }, lenient, ESIDInvalidData, "SSIDREST"},
		{"SSIDSPEC", func(t *testing.T) []byte { return mutate(t, "ssid", 43, "1") }, nil, ESIDInvalidData, "SSIDSPEC"},
		{"SSIDCRED zero", func(t *testing.T) []byte { return mutate(t, "ssid", 44, "000") }, nil, ESIDInvalidData, "SSIDCRED"},
		{"SSIDCRED space padded", func(t *testing.T) []byte { return mutate(t, "ssid", 44, " 99") }, nil, ESIDInvalidData, "SSIDCRED"},
		{"SSIDAUTH", func(t *testing.T) []byte { return mutate(t, "ssid", 47, "J") }, nil, ESIDInvalidData, "SSIDAUTH"},
		{"SSIDRSV1 strict", func(t *testing.T) []byte { return mutate(t, "ssid", 48, "ABCD") }, nil, ESIDInvalidData, "SSIDRSV1"},
		{"SSIDRSV1 lenient control", func(t *testing.T) []byte { return mutate(t, "ssid", 48, "\x00") }, lenient, ESIDInvalidData, "SSIDRSV1"},
		{"SSIDUSER lower strict", func(t *testing.T) []byte { return mutate(t, "ssid", 52, "user") }, nil, ESIDInvalidData, "SSIDUSER"},
		{"SSIDCR", func(t *testing.T) []byte { return mutate(t, "ssid", 60, "\n") }, nil, ESIDInvalidData, "SSIDCR"},
		{"SFID short", func(t *testing.T) []byte { return golden(t, "sfid_fixed_signed")[:164] }, nil, ESIDBufferSizeError, ""},
		{"SFID description longer than buffer", func(t *testing.T) []byte { return mutate(t, "sfid", 162, "999") }, nil, ESIDBufferSizeError, "SFIDDESC"},
		{"SFID trailing octet", func(t *testing.T) []byte { return append(golden(t, "sfid"), 'x') }, nil, ESIDBufferSizeError, ""},
		{"SFIDDSN empty", func(t *testing.T) []byte { return mutate(t, "sfid", 1, strings.Repeat(" ", 26)) }, nil, ESIDInvalidData, "SFIDDSN"},
		{"SFIDDSN embedded space", func(t *testing.T) []byte { return mutate(t, "sfid", 1, "INVOICES 2024") }, nil, ESIDInvalidData, "SFIDDSN"},
		{"SFIDRSV1", func(t *testing.T) []byte { return mutate(t, "sfid", 27, "ABC") }, nil, ESIDInvalidData, "SFIDRSV1"},
		{"SFIDDATE Feb 30", func(t *testing.T) []byte { return mutate(t, "sfid", 30, "20240230") }, nil, ESIDInvalidData, "SFIDDATE"},
		{"SFIDDATE Feb 29 non-leap", func(t *testing.T) []byte { return mutate(t, "sfid", 30, "20230229") }, nil, ESIDInvalidData, "SFIDDATE"},
		{"SFIDDATE month 13", func(t *testing.T) []byte { return mutate(t, "sfid", 30, "20241301") }, nil, ESIDInvalidData, "SFIDDATE"},
		{"SFIDDATE year 0", func(t *testing.T) []byte { return mutate(t, "sfid", 30, "00000101") }, nil, ESIDInvalidData, "SFIDDATE"},
		{"SFIDDATE letters", func(t *testing.T) []byte { return mutate(t, "sfid", 30, "2024O101") }, nil, ESIDInvalidData, "SFIDDATE"},
		{"SFIDTIME hour 24", func(t *testing.T) []byte { return mutate(t, "sfid", 38, "2400000001") }, nil, ESIDInvalidData, "SFIDTIME"},
		{"SFIDTIME second 60", func(t *testing.T) []byte { return mutate(t, "sfid", 38, "2359600001") }, nil, ESIDInvalidData, "SFIDTIME"},
		{"SFIDTIME counter 0000", func(t *testing.T) []byte { return mutate(t, "sfid", 38, "1200000000") }, nil, ESIDInvalidData, "SFIDTIME"},
		{"SFIDDEST empty", func(t *testing.T) []byte { return mutate(t, "sfid", 56, strings.Repeat(" ", 25)) }, nil, ESIDInvalidData, "SFIDDEST"},
		{"SFIDORIG lower", func(t *testing.T) []byte { return mutate(t, "sfid", 81, "o") }, nil, ESIDInvalidData, "SFIDORIG"},
		{"SFIDFMT", func(t *testing.T) []byte { return mutate(t, "sfid", 106, "X") }, nil, ESIDInvalidData, "SFIDFMT"},
		{"SFIDLRECL for U", func(t *testing.T) []byte { return mutate(t, "sfid", 107, "00080") }, nil, ESIDInvalidData, "SFIDLRECL"},
		{"SFIDLRECL V secured", func(t *testing.T) []byte {
			return mutate(t, "sfid_fixed_signed", 106, "V70000")
		}, nil, ESIDInvalidData, "SFIDLRECL"},
		{"SFIDFSIZ", func(t *testing.T) []byte { return mutate(t, "sfid", 112, "-") }, nil, ESIDInvalidData, "SFIDFSIZ"},
		{"SFIDOSIZ", func(t *testing.T) []byte { return mutate(t, "sfid", 125, " ") }, nil, ESIDInvalidData, "SFIDOSIZ"},
		{"SFIDREST", func(t *testing.T) []byte { return mutate(t, "sfid", 138, "+") }, nil, ESIDInvalidData, "SFIDREST"},
		{"SFIDSEC 04", func(t *testing.T) []byte { return mutate(t, "sfid", 155, "04") }, nil, ESIDInvalidData, "SFIDSEC"},
		{"SFIDCIPH", func(t *testing.T) []byte { return mutate(t, "sfid", 157, "0A") }, nil, ESIDInvalidData, "SFIDCIPH"},
		{"SFIDCOMP 2", func(t *testing.T) []byte { return mutate(t, "sfid", 159, "2") }, nil, ESIDInvalidData, "SFIDCOMP"},
		{"SFIDENV 2", func(t *testing.T) []byte { return mutate(t, "sfid", 160, "2") }, nil, ESIDInvalidData, "SFIDENV"},
		{"SFIDENV missing for signed", func(t *testing.T) []byte { return mutate(t, "sfid", 155, "02000") }, nil, ESIDInvalidData, "SFIDENV"},
		{"SFIDSIGN", func(t *testing.T) []byte { return mutate(t, "sfid", 161, "X") }, nil, ESIDInvalidData, "SFIDSIGN"},
		{"SFIDDESCL", func(t *testing.T) []byte { return mutate(t, "sfid", 162, "0x0") }, nil, ESIDInvalidData, "SFIDDESCL"},
		{"SFIDDESC bad UTF-8", func(t *testing.T) []byte { return mutate(t, "sfid", 165, "\xff") }, nil, ESIDInvalidData, "SFIDDESC"},
		{"SFPA short", func(t *testing.T) []byte { return []byte("2000") }, nil, ESIDBufferSizeError, ""},
		{"SFPAACNT", func(t *testing.T) []byte { return mutate(t, "sfpa", 1, " ") }, nil, ESIDInvalidData, "SFPAACNT"},
		{"SFNAREAS undefined", func(t *testing.T) []byte { return mutate(t, "sfna", 1, "07") }, nil, ESIDInvalidData, "SFNAREAS"},
		{"SFNAREAS EFNA-only 21", func(t *testing.T) []byte { return mutate(t, "sfna", 1, "21") }, nil, ESIDInvalidData, "SFNAREAS"},
		{"SFNARRTR", func(t *testing.T) []byte { return mutate(t, "sfna", 3, "y") }, nil, ESIDInvalidData, "SFNARRTR"},
		{"SFNAREASL too long", func(t *testing.T) []byte { return mutate(t, "sfna", 4, "017") }, nil, ESIDBufferSizeError, "SFNAREAST"},
		{"SFNAREASL too short", func(t *testing.T) []byte { return mutate(t, "sfna", 4, "015") }, nil, ESIDBufferSizeError, ""},
		{"SFNA truncated", func(t *testing.T) []byte { return []byte("313Y") }, nil, ESIDBufferSizeError, "SFNAREASL"},
		{"DATA subrecord overrun", func(t *testing.T) []byte { return []byte("D\x05Hell") }, nil, ESIDBufferSizeError, "DATABUF"},
		{"DATA compressed without octet", func(t *testing.T) []byte { return []byte("D\x01A\x45") }, nil, ESIDBufferSizeError, "DATABUF"},
		{"DATA too long", func(t *testing.T) []byte { return append([]byte("D"), make([]byte, MaxExchangeBuffer)...) }, nil, ESIDBufferSizeError, ""},
		{"CDT length", func(t *testing.T) []byte { return []byte("C") }, nil, ESIDBufferSizeError, ""},
		{"CDTRSV1 strict", func(t *testing.T) []byte { return []byte("C00") }, nil, ESIDInvalidData, "CDTRSV1"},
		{"EFIDRCNT", func(t *testing.T) []byte { return mutate(t, "efid", 1, "A") }, nil, ESIDInvalidData, "EFIDRCNT"},
		{"EFIDUCNT", func(t *testing.T) []byte { return mutate(t, "efid", 34, " ") }, nil, ESIDInvalidData, "EFIDUCNT"},
		{"EFID long", func(t *testing.T) []byte { return append(golden(t, "efid"), '0') }, nil, ESIDBufferSizeError, ""},
		{"EFPACD", func(t *testing.T) []byte { return []byte("4 ") }, nil, ESIDInvalidData, "EFPACD"},
		{"EFPA short", func(t *testing.T) []byte { return []byte("4") }, nil, ESIDBufferSizeError, ""},
		{"EFNAREAS undefined", func(t *testing.T) []byte { return mutate(t, "efna", 1, "24") }, nil, ESIDInvalidData, "EFNAREAS"},
		{"EFNAREAST bad UTF-8", func(t *testing.T) []byte { return mutate(t, "efna", 6, "\xc3\x28") }, nil, ESIDInvalidData, "EFNAREAST"},
		{"ESIDREAS 13", func(t *testing.T) []byte { return []byte("F13000\r") }, nil, ESIDInvalidData, "ESIDREAS"},
		{"ESID missing CR", func(t *testing.T) []byte { return []byte("F00000") }, nil, ESIDBufferSizeError, "ESIDCR"},
		{"ESIDCR", func(t *testing.T) []byte { return []byte("F00000\n") }, nil, ESIDInvalidData, "ESIDCR"},
		{"ESID text length", func(t *testing.T) []byte { return []byte("F00002ab") }, nil, ESIDBufferSizeError, "ESIDCR"},
		{"CD long", func(t *testing.T) []byte { return []byte("R ") }, nil, ESIDBufferSizeError, ""},
		{"RTR long", func(t *testing.T) []byte { return []byte("PP") }, nil, ESIDBufferSizeError, ""},
		{"SECD long", func(t *testing.T) []byte { return []byte("J\r") }, nil, ESIDBufferSizeError, ""},
		{"EERPRSV1", func(t *testing.T) []byte { return mutate(t, "eerp", 27, "XXX") }, nil, ESIDInvalidData, "EERPRSV1"},
		{"EERPDATE", func(t *testing.T) []byte { return mutate(t, "eerp", 30, "20241232") }, nil, ESIDInvalidData, "EERPDATE"},
		{"EERPHSHL beyond buffer", func(t *testing.T) []byte { return mutate(t, "eerp", 106, "\x00\x10") }, nil, ESIDBufferSizeError, "EERPHSH"},
		{"EERP trailing", func(t *testing.T) []byte { return append(golden(t, "eerp"), 0) }, nil, ESIDBufferSizeError, ""},
		{"EERP missing SIGL", func(t *testing.T) []byte { e := golden(t, "eerp"); return e[:len(e)-2] }, nil, ESIDBufferSizeError, "EERPSIGL"},
		{"NERPRSV1", func(t *testing.T) []byte { return mutate(t, "nerp", 27, "Z") }, nil, ESIDInvalidData, "NERPRSV1"},
		{"NERPCREA empty", func(t *testing.T) []byte { return mutate(t, "nerp", 101, strings.Repeat(" ", 25)) }, nil, ESIDInvalidData, "NERPCREA"},
		{"NERPREAS undefined", func(t *testing.T) []byte { return mutate(t, "nerp", 126, "10") }, nil, ESIDInvalidData, "NERPREAS"},
		{"AUCH empty challenge", func(t *testing.T) []byte { return []byte("A\x00\x00") }, nil, ESIDInvalidData, "AUCHCHLL"},
		{"AUCH length mismatch", func(t *testing.T) []byte { return []byte("A\x00\x03ab") }, nil, ESIDBufferSizeError, "AUCHCHAL"},
		{"AURP short", func(t *testing.T) []byte { return golden(t, "aurp")[:20] }, nil, ESIDBufferSizeError, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := tc.buf(t)
			cmd, err := Parse(buf, tc.opts)
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, %v, want *ProtocolError", buf, cmd, err)
			}
			if pe.Reason != tc.reason {
				t.Errorf("Parse(%q) reason = %v, want %v (%v)", buf, pe.Reason, tc.reason, err)
			}
			if tc.field != "" && pe.Field != tc.field {
				t.Errorf("Parse(%q) field = %q, want %q (%v)", buf, pe.Field, tc.field, err)
			}
			if len(buf) > 0 && CommandCode(buf[0]).Known() && pe.Command != CommandCode(buf[0]) {
				t.Errorf("Parse(%q) command = %v, want %v", buf, pe.Command, CommandCode(buf[0]))
			}
		})
	}
}

func TestParseLenient(t *testing.T) {
	lenient := &ParseOptions{Charset: CharsetLenient}
	tests := []struct {
		name  string
		buf   func(t *testing.T) []byte
		check func(Command) string
	}{
		{"lower case and underscore ID", func(t *testing.T) []byte { return mutate(t, "ssid", 2, "o0013000000smart_proxy") },
			func(c Command) string { return c.(*SSID).ID }},
		{"embedded space password", func(t *testing.T) []byte { return mutate(t, "ssid", 27, "se cret") },
			func(c Command) string { return string(c.(*SSID).Password) }},
		{"lower case dataset", func(t *testing.T) []byte { return mutate(t, "sfid", 1, "invoice_2024.xml") },
			func(c Command) string { return c.(*SFID).DatasetName }},
		{"reserved with letters", func(t *testing.T) []byte { return []byte("Cxx") },
			func(c Command) string { return c.Code().String() }},
	}
	wants := []string{"o0013000000smart_proxy", "se cret", "invoice_2024.xml", "CDT"}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := tc.buf(t)
			if _, err := Parse(buf, nil); err == nil {
				t.Errorf("Parse(%q, strict) = nil error, want a violation", buf)
			}
			c, err := Parse(buf, lenient)
			if err != nil {
				t.Fatalf("Parse(%q, lenient) error = %v", buf, err)
			}
			if got := tc.check(c); got != wants[i] {
				t.Errorf("Parse(%q, lenient) value = %q, want %q", buf, got, wants[i])
			}
			// Lenient values encode again, to the same octets except reserved fields.
			out, err := c.Append(nil)
			if err != nil {
				t.Fatalf("Append() error = %v", err)
			}
			if c.Code() != CodeCDT && !bytes.Equal(out, buf) {
				t.Errorf("Append() = %q, want %q", out, buf)
			}
			if err := Validate(c, nil); err == nil && c.Code() != CodeCDT {
				t.Errorf("Validate(strict) = nil, want a violation")
			}
		})
	}
	// A zero time counter is accepted only on request.
	buf := mutate(t, "sfid", 38, "1200000000")
	c, err := Parse(buf, &ParseOptions{AllowZeroTimeCounter: true})
	if err != nil {
		t.Fatalf("Parse(counter 0000, AllowZeroTimeCounter) error = %v", err)
	}
	if got := c.(*SFID).Stamp; got.Counter != 0 || got.Time.Hour() != 12 {
		t.Errorf("Stamp = %+v, want 12:00:00 counter 0", got)
	}
}

func TestAppendRejects(t *testing.T) {
	valid := func() *SSID {
		return &SSID{ID: "O0013000000X", BufferSize: 4096, Mode: ModeBoth, Credit: 10}
	}
	tests := []struct {
		name  string
		cmd   Command
		field string
	}{
		{"SSID level 10", func() Command { s := valid(); s.Level = 10; return s }(), "SSIDLEV"},
		{"SSID empty ID", func() Command { s := valid(); s.ID = ""; return s }(), "SSIDCODE"},
		{"SSID long ID", func() Command { s := valid(); s.ID = strings.Repeat("A", 26); return s }(), "SSIDCODE"},
		{"SSID trailing space", func() Command { s := valid(); s.ID = "O001 "; return s }(), "SSIDCODE"},
		{"SSID non-ASCII password", func() Command { s := valid(); s.Password = "pässwort"; return s }(), "SSIDPSWD"},
		{"SSID buffer 127", func() Command { s := valid(); s.BufferSize = 127; return s }(), "SSIDSDEB"},
		{"SSID buffer 100000", func() Command { s := valid(); s.BufferSize = 100000; return s }(), "SSIDSDEB"},
		{"SSID mode", func() Command { s := valid(); s.Mode = 'X'; return s }(), "SSIDSR"},
		{"SSID credit 0", func() Command { s := valid(); s.Credit = 0; return s }(), "SSIDCRED"},
		{"SSID credit 1000", func() Command { s := valid(); s.Credit = 1000; return s }(), "SSIDCRED"},
		{"SFID year 10000", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatUnstructured,
			Stamp: Timestamp{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Counter: 1}}, "SFIDDATE"},
		{"SFID format", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: 'Q', Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDFMT"},
		{"SFID lrecl for T", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, MaxRecordSize: 1, Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDLRECL"},
		{"SFID negative size", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, FileSize: -1, Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDFSIZ"},
		{"SFID restart 18 digits", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, RestartPosition: 1e17, Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDREST"},
		{"SFID cipher 100", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, Cipher: 100, Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDCIPH"},
		{"SFID description", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, Description: strings.Repeat("x", 1000), Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDDESC"},
		{"SFID description UTF-8", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, Description: "\xff", Stamp: stamp("2020-01-01 00:00:00", 1)}, "SFIDDESC"},
		{"SFID counter", &SFID{DatasetName: "A", Destination: "B", Originator: "C", Format: FormatText, Stamp: Timestamp{Time: time.Now(), Counter: 10000}}, "SFIDTIME"},
		{"SFPA negative", &SFPA{AnswerCount: -1}, "SFPAACNT"},
		{"SFNA reason", &SFNA{Reason: 7}, "SFNAREAS"},
		{"EFNA reason", &EFNA{Reason: 0}, "EFNAREAS"},
		{"ESID reason", &ESID{Reason: 50}, "ESIDREAS"},
		{"NERP reason", &NERP{DatasetName: "A", Destination: "B", Originator: "C", Creator: "D", Reason: 1, Stamp: stamp("2020-01-01 00:00:00", 1)}, "NERPREAS"},
		{"EERP hash too long", &EERP{DatasetName: "A", Destination: "B", Originator: "C", Hash: make([]byte, 70000), Stamp: stamp("2020-01-01 00:00:00", 1)}, "EERPHSHL"},
		{"AUCH empty", &AUCH{}, "AUCHCHAL"},
		{"DATA bad payload", &Data{Payload: []byte{0x05, 'a'}}, "DATABUF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := tc.cmd.Append(dst)
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Append() = %q, %v, want *ProtocolError", got, err)
			}
			if pe.Field != tc.field {
				t.Errorf("Append() field = %q, want %q (%v)", pe.Field, tc.field, err)
			}
			if string(got) != "keep" {
				t.Errorf("Append() on error = %q, want dst unchanged", got)
			}
		})
	}
}

func TestCommandCodeString(t *testing.T) {
	want := map[CommandCode]string{
		CodeSSRM: "SSRM", CodeSSID: "SSID", CodeSFID: "SFID", CodeSFPA: "SFPA", CodeSFNA: "SFNA",
		CodeDATA: "DATA", CodeCDT: "CDT", CodeEFID: "EFID", CodeEFPA: "EFPA", CodeEFNA: "EFNA",
		CodeESID: "ESID", CodeCD: "CD", CodeEERP: "EERP", CodeNERP: "NERP", CodeRTR: "RTR",
		CodeSECD: "SECD", CodeAUCH: "AUCH", CodeAURP: "AURP", 'Z': "CommandCode(0x5a)",
	}
	for c, w := range want {
		if got := c.String(); got != w {
			t.Errorf("CommandCode(%q).String() = %q, want %q", byte(c), got, w)
		}
	}
}

func TestReasonStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{ESIDProtocolViolation.String(), "02 (protocol violation)"},
		{ESIDSecureAuthIncompatible.String(), "12 (secure authentication requirements incompatible)"},
		{ESIDReason(13).String(), "13 (undefined)"},
		{SFNADuplicateFile.String(), "13 (duplicate file)"},
		{SFNAReason(21).String(), "21 (undefined)"},
		{EFNADecompressionFailure.String(), "23 (file decompression failure)"},
		{NERPStoppedByOperator.String(), "50 (transmission stopped by the operator)"},
		{NERPReason(1).String(), "01 (undefined)"},
		{ModeBoth.String(), "both"},
		{FormatText.String(), "T (text)"},
		{SecuritySigned.String(), "02 (signed)"},
		{CharsetLenient.String(), "lenient"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestPasswordRedacted(t *testing.T) {
	s := &SSID{ID: "O001", Password: "TOPSECR1", BufferSize: 128, Mode: ModeBoth, Credit: 1}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, s); strings.Contains(out, "TOPSECR1") {
			t.Errorf("Sprintf(%q, ssid) = %q, leaks the password", f, out)
		}
	}
	// A protocol error about the password does not quote it either.
	buf, err := s.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	copy(buf[27:], "TOP\x01")
	_, err = Parse(buf, &ParseOptions{Charset: CharsetLenient})
	if err == nil || strings.Contains(err.Error(), "TOP") {
		t.Errorf("Parse(bad password) error = %v, want an error that does not quote the password", err)
	}
}

func TestProtocolError(t *testing.T) {
	_, err := Parse([]byte("X5"), nil)
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		t.Fatalf("Parse() error = %v, want *ProtocolError", err)
	}
	if got, want := err.Error(), "oftp2: SSID: buffer of 2 octets, the command has 61 (ESID reason 07 (exchange buffer size error))"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := ReasonOf(err); got != ESIDBufferSizeError {
		t.Errorf("ReasonOf() = %v, want 07", got)
	}
	if got := ReasonOf(errors.New("x")); got != ESIDUnspecified {
		t.Errorf("ReasonOf(other) = %v, want 99", got)
	}
	esid := pe.ESID()
	b, err := esid.Append(nil)
	if err != nil {
		t.Fatalf("ESID().Append() error = %v", err)
	}
	back, err := Parse(b, nil)
	if err != nil || back.(*ESID).Reason != ESIDBufferSizeError {
		t.Errorf("Parse(ESID()) = %v, %v, want reason 07", back, err)
	}
}
