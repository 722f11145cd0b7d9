package endpoint

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"smartproxy/oftp2"
)

// Local representation of the Virtual File formats (RFC 5024 §1.5.3). The
// mapping between a local file and a Virtual File is a local matter (§1.5);
// this package uses the following one, so that a file received is
// byte-identical to the file sent:
//
//   - U (unstructured): the file's octets, sent as one record whose end of
//     record flag marks the end of the file (§7.2).
//   - T (text): like U; the file must be text (see validateText). Lines keep
//     their line ends (CR LF as §1.5.3 defines them, or LF), which travel
//     inside the data, as in the example of Appendix A.
//   - F (fixed): the concatenation of the records, each RecordSize octets.
//   - V (variable): each record preceded by its length as a 2-octet unsigned
//     number in network byte order, not counting itself — the record length
//     indicators of RFC 5024 §6.5. Records are therefore at most 65535 octets.
const (
	// maxTextLine is the longest line of a T file (§1.5.3: "A line will not
	// have more than 2048 characters").
	maxTextLine = 2048
	// maxVariableRecord is the longest V record the local representation
	// can hold (a 2-octet length indicator, §6.5).
	maxVariableRecord = 0xffff
	// blockSize is the unit of SFIDFSIZ and of U/T restart positions (§1.5.4).
	blockSize = 1024
)

// OutgoingFile describes a local file to send as a Virtual File.
type OutgoingFile struct {
	// Path is the local file. It is required.
	Path string
	// DatasetName is SFIDDSN, the Virtual File name. If empty, it is derived
	// from the base name of Path: upper-cased, every character outside the
	// RFC 5024 X(n) set replaced by '-', cut to 26 characters.
	DatasetName string
	// Format is the Virtual File format (SFIDFMT). If zero, U is used.
	Format oftp2.FileFormat
	// RecordSize is SFIDLRECL. For F it is the record length and required.
	// For V it is the maximum record length; if zero, the longest record of
	// the file is used. It must be zero for U and T.
	RecordSize int
	// Stamp is the Virtual File date and time stamp (SFIDDATE, SFIDTIME),
	// which together with DatasetName and Originator identifies the file
	// (§1.5.2). If zero, the file's modification time is used, its
	// sub-second part as the counter, so that sending an unchanged file again
	// names the same Virtual File and an interrupted transfer restarts.
	Stamp oftp2.Timestamp
	// Destination is SFIDDEST. If empty, the partner's Odette ID is used.
	Destination string
	// Originator is SFIDORIG. If empty, the endpoint's own Odette ID is used.
	Originator string
	// UserData is SFIDUSER. It may be empty.
	UserData string
	// Description is SFIDDESC. It may be empty.
	Description string
}

// preparedFile is an OutgoingFile checked against its format, with the
// counts EFID will carry. It is owned by the session that sends it.
type preparedFile struct {
	src     OutgoingFile
	sfid    oftp2.SFID
	size    int64 // local octets
	records int64 // EFIDRCNT: F and V only
	units   int64 // EFIDUCNT: octets of user data
}

// errFileFormat marks a local file that does not match its Virtual File format.
var errFileFormat = errors.New("file does not match its format")

// prepare checks f against its format and computes the SFID fields and the
// EFID counts. own and partner fill Originator and Destination.
func prepare(f OutgoingFile, own, partner string) (*preparedFile, error) {
	if f.Path == "" {
		return nil, errors.New("endpoint: outgoing file without a path")
	}
	if f.Format == 0 {
		f.Format = oftp2.FormatUnstructured
	}
	if !f.Format.Valid() {
		return nil, fmt.Errorf("endpoint: %s: unknown format %s", f.Path, f.Format)
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("endpoint: %s is not a regular file", f.Path)
	}
	p := &preparedFile{src: f, size: st.Size()}
	switch f.Format {
	case oftp2.FormatUnstructured, oftp2.FormatText:
		if f.RecordSize != 0 {
			// §5.3.3 SFIDLRECL: 00000 for T and U.
			return nil, fmt.Errorf("endpoint: %s: record size %d given for format %s, which has none", f.Path, f.RecordSize, f.Format)
		}
		p.units = p.size
		if f.Format == oftp2.FormatText {
			if err := validateText(bufio.NewReaderSize(fh, 64<<10)); err != nil {
				return nil, fmt.Errorf("endpoint: %s: %w", f.Path, err)
			}
		}
	case oftp2.FormatFixed:
		if f.RecordSize < 1 || f.RecordSize > oftp2.MaxExchangeBuffer {
			return nil, fmt.Errorf("endpoint: %s: format F needs a record size of 1..99999, got %d", f.Path, f.RecordSize)
		}
		if p.size%int64(f.RecordSize) != 0 {
			return nil, fmt.Errorf("endpoint: %s: %w: %d octets are not a whole number of %d-octet records", f.Path, errFileFormat, p.size, f.RecordSize)
		}
		p.records = p.size / int64(f.RecordSize)
		p.units = p.size
	case oftp2.FormatVariable:
		records, units, longest, err := scanVariable(bufio.NewReaderSize(fh, 64<<10), -1)
		if err != nil {
			return nil, fmt.Errorf("endpoint: %s: %w", f.Path, err)
		}
		switch {
		case f.RecordSize == 0:
			f.RecordSize = max(longest, 1)
		case f.RecordSize < 0 || f.RecordSize > maxVariableRecord:
			return nil, fmt.Errorf("endpoint: %s: format V needs a record size of 1..%d, got %d", f.Path, maxVariableRecord, f.RecordSize)
		case longest > f.RecordSize:
			return nil, fmt.Errorf("endpoint: %s: %w: a record of %d octets exceeds the record size %d", f.Path, errFileFormat, longest, f.RecordSize)
		}
		p.records, p.units = records, units
	}
	if f.DatasetName == "" {
		f.DatasetName = DatasetName(filepath.Base(f.Path))
	}
	if f.Stamp.Time.IsZero() {
		f.Stamp = StampOf(st.ModTime())
	}
	if f.Destination == "" {
		f.Destination = partner
	}
	if f.Originator == "" {
		f.Originator = own
	}
	p.src = f
	blocks := (p.units + blockSize - 1) / blockSize
	p.sfid = oftp2.SFID{
		DatasetName:      f.DatasetName,
		Stamp:            f.Stamp,
		UserData:         f.UserData,
		Destination:      f.Destination,
		Originator:       f.Originator,
		Format:           f.Format,
		MaxRecordSize:    f.RecordSize,
		FileSize:         blocks,
		OriginalFileSize: blocks,
		Description:      f.Description,
	}
	return p, nil
}

// restartLimit is the highest restart position the sender can offer in
// SFIDREST (§5.3.3): it holds the whole file, so it can resume at any record
// (F, V) or whole 1K block (U, T) of it; the receiver answers with the
// position it has (§5.3.4 SFPAACNT ≤ SFIDREST).
func (p *preparedFile) restartLimit() int64 {
	if p.sfid.Format == oftp2.FormatFixed || p.sfid.Format == oftp2.FormatVariable {
		return p.records
	}
	return p.units / blockSize
}

// DatasetName derives a Virtual File dataset name (SFIDDSN, X(26)) from a
// local file name: upper case, characters outside the RFC 5024 X(n) set
// (A–Z, 0–9, / - . & ( ) ) replaced by '-', at most 26 characters. A name
// with nothing left becomes "FILE".
func DatasetName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(name) {
		if b.Len() == 26 {
			break
		}
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("-.&()", r):
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" {
		return "FILE"
	}
	return s
}

// StampOf returns the Virtual File stamp for t: its wall clock to the second,
// and the counter 1–9999 from the sub-second part (§1.5.2: the counter gives
// higher resolution).
func StampOf(t time.Time) oftp2.Timestamp {
	c := t.Nanosecond()/100_000 + 1 // 0.1 ms steps, 1..10000
	return oftp2.Timestamp{Time: t.Truncate(time.Second), Counter: min(c, 9999)}
}

// validateText checks the content of a T file (§1.5.3): no control
// characters except CR, LF and TAB, no line longer than 2048 octets.
func validateText(r io.ByteReader) error {
	line, lineNo := 0, 1
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case c == '\n':
			line = 0
			lineNo++
			continue
		case c == '\r':
			continue
		case c < 0x20 && c != '\t', c == 0x7f:
			return fmt.Errorf("%w: control character 0x%02x in line %d of a text (T) file", errFileFormat, c, lineNo)
		}
		line++
		if line > maxTextLine {
			return fmt.Errorf("%w: line %d of a text (T) file is longer than %d characters", errFileFormat, lineNo, maxTextLine)
		}
	}
}

// scanVariable reads the local V representation (§6.5 length indicators)
// and returns the record count, the octets of user data and the longest
// record. With stop >= 0 it stops after stop records and returns the local
// offset reached as units+2*records.
func scanVariable(r io.Reader, stop int64) (records, units int64, longest int, err error) {
	var hdr [2]byte
	for stop < 0 || records < stop {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				if stop >= 0 {
					return records, units, longest, fmt.Errorf("%w: only %d records, want %d", errFileFormat, records, stop)
				}
				return records, units, longest, nil
			}
			if err == io.ErrUnexpectedEOF {
				return 0, 0, 0, fmt.Errorf("%w: V file ends inside the length indicator of record %d", errFileFormat, records+1)
			}
			return 0, 0, 0, err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if m, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			if err == io.EOF {
				return 0, 0, 0, fmt.Errorf("%w: V record %d has %d octets, its length indicator says %d", errFileFormat, records+1, m, n)
			}
			return 0, 0, 0, err
		}
		records++
		units += int64(n)
		longest = max(longest, n)
	}
	return records, units, longest, nil
}

// recordWriter takes the Virtual File records of one file, as the data
// exchange buffers deliver them.
type recordWriter interface {
	// data appends octets to the current record.
	data(p []byte) error
	// endRecord ends the current record (the end of record flag, §7.2).
	endRecord() error
}

// sendFile reads p from the restart position pos (records for F and V, 1K
// blocks for U and T) and writes its records to w.
func (p *preparedFile) sendFile(pos int64, w recordWriter) error {
	fh, err := os.Open(p.src.Path)
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	if st.Size() != p.size {
		return fmt.Errorf("endpoint: %s changed size during the session (%d, was %d)", p.src.Path, st.Size(), p.size)
	}
	r := bufio.NewReaderSize(fh, 64<<10)
	var skip int64
	switch p.sfid.Format {
	case oftp2.FormatUnstructured, oftp2.FormatText:
		skip = pos * blockSize
	case oftp2.FormatFixed:
		skip = pos * int64(p.sfid.MaxRecordSize)
	case oftp2.FormatVariable:
		// The position is a record number; find its offset (§1.5.4:
		// restart on record boundaries).
		if pos > 0 {
			_, units, _, err := scanVariable(r, pos)
			if err != nil {
				return fmt.Errorf("endpoint: %s: %w", p.src.Path, err)
			}
			skip = units + 2*pos
		}
	}
	if skip > 0 {
		if skip > p.size {
			return fmt.Errorf("endpoint: %s: restart position %d lies beyond the end of the file", p.src.Path, pos)
		}
		if _, err := fh.Seek(skip, io.SeekStart); err != nil {
			return fmt.Errorf("endpoint: %w", err)
		}
		r.Reset(fh)
	}
	switch p.sfid.Format {
	case oftp2.FormatUnstructured, oftp2.FormatText:
		return copyStream(r, w)
	case oftp2.FormatFixed:
		return copyFixed(r, w, p.sfid.MaxRecordSize)
	default:
		return copyVariable(r, w)
	}
}

// copyStream sends an unstructured or text file as one record whose end of
// record flag marks the end of the file (§7.2). An empty remainder sends
// nothing.
func copyStream(r *bufio.Reader, w recordWriter) error {
	buf := make([]byte, 32<<10)
	sent := false
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if werr := w.data(buf[:n]); werr != nil {
				return werr
			}
			sent = true
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if sent {
				return w.endRecord()
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("endpoint: read: %w", err)
		}
	}
}

func copyFixed(r *bufio.Reader, w recordWriter, size int) error {
	buf := make([]byte, size)
	for {
		_, err := io.ReadFull(r, buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("endpoint: read: %w", err)
		}
		if err := w.data(buf); err != nil {
			return err
		}
		if err := w.endRecord(); err != nil {
			return err
		}
	}
}

func copyVariable(r *bufio.Reader, w recordWriter) error {
	buf := make([]byte, maxVariableRecord)
	var hdr [2]byte
	for {
		_, err := io.ReadFull(r, hdr[:])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("endpoint: read: %w", err)
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("endpoint: read: %w", err)
		}
		if err := w.data(buf[:n]); err != nil {
			return err
		}
		if err := w.endRecord(); err != nil {
			return err
		}
	}
}
