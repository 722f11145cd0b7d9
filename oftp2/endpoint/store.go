package endpoint

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"smartproxy/oftp2"
)

// Layout of a receive directory. Received files land in the directory
// itself under a name derived from the dataset name; everything else lives
// in the hidden state directory beside them, on the same file system, so
// that the final rename is atomic:
//
//	DIR/NAME                              a received file (complete, verified)
//	DIR/.oftp2/received/NAME.json         its metadata (ReceivedFile as JSON)
//	DIR/.oftp2/partial/KEY.part           a file being received (temporary)
//	DIR/.oftp2/partial/KEY.json           its restart state (restartState)
//	DIR/.oftp2/responses/KEY.json         an EERP or NERP not yet delivered
//
// KEY is derived from the originator, dataset name, date and time of the
// Virtual File, which identify it (RFC 5024 §1.5.2).
const (
	stateDirName     = ".oftp2"
	partialDirName   = "partial"
	receivedDirName  = "received"
	responsesDirName = "responses"
)

// DefaultCheckpointInterval is the amount of received data after which the
// restart state is made durable when Config.CheckpointInterval is zero.
const DefaultCheckpointInterval = 8 << 20

// ReceivedFile describes a Virtual File that was received completely, stored
// under its final name and acknowledged with EFPA.
type ReceivedFile struct {
	// Path is the final path of the file.
	Path string `json:"path"`
	// DatasetName is SFIDDSN, the Virtual File name.
	DatasetName string `json:"dataset_name"`
	// Date is SFIDDATE (CCYYMMDD) and Time is SFIDTIME (HHMMSScccc), as sent.
	Date string `json:"date"`
	// Time is SFIDTIME (HHMMSScccc), as sent.
	Time string `json:"time"`
	// Originator is SFIDORIG.
	Originator string `json:"originator"`
	// Destination is SFIDDEST.
	Destination string `json:"destination"`
	// UserData is SFIDUSER.
	UserData string `json:"user_data,omitempty"`
	// Description is SFIDDESC.
	Description string `json:"description,omitempty"`
	// Format is SFIDFMT as a letter: "U", "T", "F" or "V".
	Format string `json:"format"`
	// RecordSize is SFIDLRECL.
	RecordSize int `json:"record_size"`
	// Records is the record count (EFIDRCNT; zero for U and T).
	Records int64 `json:"records"`
	// Units is the number of octets of user data (EFIDUCNT).
	Units int64 `json:"units"`
	// Size is the size of the local file (Units plus the record length
	// indicators of a V file).
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the local file.
	SHA256 string `json:"sha256"`
	// Partner is the Odette ID of the session partner that delivered it.
	Partner string `json:"partner"`
	// RestartPosition is the position the transfer resumed at (SFPAACNT);
	// zero for a transfer that started at the beginning.
	RestartPosition int64 `json:"restart_position,omitempty"`
	// Received is when the file was stored.
	Received time.Time `json:"received"`
}

// restartState is the durable part of a file being received (the JSON file
// beside the temporary file).
type restartState struct {
	Originator  string `json:"originator"`
	DatasetName string `json:"dataset_name"`
	Date        string `json:"date"`
	Time        string `json:"time"`
	Destination string `json:"destination"`
	Format      string `json:"format"`
	RecordSize  int    `json:"record_size"`
	// RecordLength is the length of every record of an F file, learnt from
	// the first record; zero before it.
	RecordLength int `json:"record_length,omitempty"`
	// Records, Units and Size are the committed position: complete records,
	// octets of user data, and octets of the temporary file, all durable.
	Records int64     `json:"records"`
	Units   int64     `json:"units"`
	Size    int64     `json:"size"`
	Partner string    `json:"partner"`
	Updated time.Time `json:"updated"`
}

// response is an end-to-end response (EERP or NERP) waiting to be sent to
// the partner that delivered the file.
type response struct {
	Key         string           `json:"key"`
	Partner     string           `json:"partner"`
	DatasetName string           `json:"dataset_name"`
	Date        string           `json:"date"`
	Time        string           `json:"time"`
	Destination string           `json:"destination"` // EERPDEST: the file's originator
	Originator  string           `json:"originator"`  // EERPORIG: the final recipient (this endpoint)
	UserData    string           `json:"user_data,omitempty"`
	Negative    bool             `json:"negative,omitempty"`
	Reason      oftp2.NERPReason `json:"reason,omitempty"`
	Text        string           `json:"text,omitempty"`
	Created     time.Time        `json:"created"`
}

// inbox stores received files in a directory. It is safe for concurrent use
// by several sessions.
type inbox struct {
	dir        string // immutable
	checkpoint int64  // immutable
	now        func() time.Time

	mu     sync.Mutex
	active map[string]bool // keys being received; guarded by mu
	// claims maps a pending response's key to the session that will send it; guarded by mu.
	// A response belongs to the session that received its file, so that of several
	// concurrent sessions with one partner each delivers its own receipts; an unclaimed one
	// (left by an earlier session) goes to the first session that speaks.
	claims map[string]any
}

func openInbox(dir string, checkpoint int64, now func() time.Time) (*inbox, error) {
	for _, d := range []string{dir, filepath.Join(dir, stateDirName, partialDirName), filepath.Join(dir, stateDirName, receivedDirName), filepath.Join(dir, stateDirName, responsesDirName)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("endpoint: receive directory: %w", err)
		}
	}
	if checkpoint <= 0 {
		checkpoint = DefaultCheckpointInterval
	}
	return &inbox{dir: dir, checkpoint: checkpoint, now: now, active: make(map[string]bool), claims: make(map[string]any)}, nil
}

func (in *inbox) path(parts ...string) string {
	return filepath.Join(append([]string{in.dir, stateDirName}, parts...)...)
}

// fileKey identifies a Virtual File by originator, dataset name, date and
// time (RFC 5024 §1.5.2).
func fileKey(orig, dsn, date, tim string) string {
	h := sha256.Sum256([]byte(orig + "\x00" + dsn + "\x00" + date + "\x00" + tim))
	return hex.EncodeToString(h[:12])
}

func stampStrings(t oftp2.Timestamp) (date, tim string) {
	y, m, d := t.Time.Date()
	hh, mm, ss := t.Time.Clock()
	return fmt.Sprintf("%04d%02d%02d", y, m, d), fmt.Sprintf("%02d%02d%02d%04d", hh, mm, ss, t.Counter)
}

func parseStamp(date, tim string) (oftp2.Timestamp, error) {
	if len(date) != 8 || len(tim) != 10 {
		return oftp2.Timestamp{}, fmt.Errorf("bad stamp %q %q", date, tim)
	}
	t, err := time.Parse("20060102150405", date+tim[:6])
	if err != nil {
		return oftp2.Timestamp{}, err
	}
	c, err := strconv.Atoi(tim[6:])
	if err != nil {
		return oftp2.Timestamp{}, err
	}
	return oftp2.Timestamp{Time: t, Counter: c}, nil
}

// refusal is a negative answer to an SFID.
type refusal struct {
	reason oftp2.SFNAReason
	retry  bool
	text   string
}

// incoming is one file being received. It is owned by the session goroutine.
type incoming struct {
	in      *inbox
	key     string
	sfid    oftp2.SFID
	partner string
	st      restartState
	restart bool // restart agreed for the session: keep the partial file on failure
	resumed int64

	f      *os.File
	w      *bufio.Writer
	h      hash.Hash
	unpack oftp2.Unpacker

	// Current position, ahead of st (the committed one) by the data not yet
	// made durable.
	records, units, size int64
	cur                  int    // octets of the current F record
	vrec                 []byte // the current V record
	ended                bool   // U/T: the end of record (end of file) flag was seen
	sinceCheckpoint      int64
	bad                  *oftp2.EFNA // the first content error; answered at EFID
}

// begin opens a file for the SFID. It returns the restart position to answer
// in SFPA, or a refusal for SFNA. restartAgreed says whether both sides
// offered restart in SSID.
func (in *inbox) begin(sfid *oftp2.SFID, partner string, restartAgreed, compression bool) (*incoming, int64, *refusal, error) {
	switch sfid.Format {
	case oftp2.FormatVariable:
		if sfid.MaxRecordSize > maxVariableRecord {
			return nil, 0, &refusal{reason: oftp2.SFNARecordLengthNotSupported, text: fmt.Sprintf("V records are stored with 2-octet lengths: at most %d octets", maxVariableRecord)}, nil
		}
	case oftp2.FormatFixed:
		if sfid.MaxRecordSize < 1 {
			return nil, 0, &refusal{reason: oftp2.SFNARecordLengthNotSupported, text: "F file without a record size"}, nil
		}
	}
	date, tim := stampStrings(sfid.Stamp)
	key := fileKey(sfid.Originator, sfid.DatasetName, date, tim)
	in.mu.Lock()
	if in.active[key] {
		in.mu.Unlock()
		return nil, 0, &refusal{reason: oftp2.SFNAUnspecified, retry: true, text: "the file is being received in another session"}, nil
	}
	in.active[key] = true
	in.mu.Unlock()
	x := &incoming{in: in, key: key, sfid: *sfid, partner: partner, restart: restartAgreed, h: sha256.New()}
	x.unpack.AllowCompression = compression
	pos, err := x.open(date, tim)
	if err != nil {
		x.release()
		return nil, 0, nil, err
	}
	return x, pos, nil, nil
}

func (x *incoming) partPath() string  { return x.in.path(partialDirName, x.key+".part") }
func (x *incoming) statePath() string { return x.in.path(partialDirName, x.key+".json") }

// open creates the temporary file, or resumes a partial one when the SFID
// asks for a restart and the stored state matches (RFC 5024 §4.3.3, §5.3.4:
// the answer count is at most SFIDREST).
func (x *incoming) open(date, tim string) (int64, error) {
	x.st = restartState{
		Originator: x.sfid.Originator, DatasetName: x.sfid.DatasetName, Date: date, Time: tim,
		Destination: x.sfid.Destination, Format: string(rune(x.sfid.Format)), RecordSize: x.sfid.MaxRecordSize,
		Partner: x.partner,
	}
	if x.restart && x.sfid.RestartPosition > 0 {
		pos, ok, err := x.resume()
		if err != nil || ok {
			return pos, err
		}
	}
	_ = os.Remove(x.statePath())
	f, err := os.OpenFile(x.partPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, fmt.Errorf("endpoint: %w", err)
	}
	x.f = f
	x.w = bufio.NewWriterSize(f, 256<<10)
	return 0, nil
}

// resume reopens a partial file from an earlier session. ok is false when
// there is nothing usable to resume.
func (x *incoming) resume() (pos int64, ok bool, err error) {
	data, err := os.ReadFile(x.statePath())
	if err != nil {
		return 0, false, nil
	}
	var st restartState
	if json.Unmarshal(data, &st) != nil || st.Originator != x.st.Originator || st.DatasetName != x.st.DatasetName ||
		st.Date != x.st.Date || st.Time != x.st.Time || st.Format != x.st.Format || st.RecordSize != x.st.RecordSize {
		return 0, false, nil
	}
	f, err := os.OpenFile(x.partPath(), os.O_RDWR, 0)
	if err != nil {
		return 0, false, nil
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() < st.Size {
		f.Close()
		return 0, false, nil
	}
	// The answer count is the committed position, never more than SFIDREST
	// (§5.3.4), in records for F and V and in whole 1K blocks for U and T
	// (§1.5.4).
	var size int64
	switch x.sfid.Format {
	case oftp2.FormatFixed:
		pos = min(st.Records, x.sfid.RestartPosition)
		size = pos * int64(st.RecordLength)
		st.Units = size
	case oftp2.FormatVariable:
		pos = min(st.Records, x.sfid.RestartPosition)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return 0, false, err
		}
		_, units, _, err := scanVariable(bufio.NewReader(io.LimitReader(f, st.Size)), pos)
		if err != nil {
			f.Close()
			return 0, false, nil
		}
		st.Units = units
		size = units + 2*pos
	default:
		pos = min(st.Units/blockSize, x.sfid.RestartPosition)
		size = pos * blockSize
		st.Units = size
	}
	if pos == 0 {
		f.Close()
		return 0, false, nil
	}
	st.Records = 0
	if x.sfid.Format == oftp2.FormatFixed || x.sfid.Format == oftp2.FormatVariable {
		st.Records = pos
	}
	st.Size = size
	if err := f.Truncate(size); err != nil {
		f.Close()
		return 0, false, fmt.Errorf("endpoint: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return 0, false, fmt.Errorf("endpoint: %w", err)
	}
	if _, err := io.CopyN(x.h, f, size); err != nil {
		f.Close()
		return 0, false, fmt.Errorf("endpoint: %w", err)
	}
	st.Partner = x.partner
	x.st = st
	x.f = f
	x.w = bufio.NewWriterSize(f, 256<<10)
	x.records, x.units, x.size = st.Records, st.Units, st.Size
	x.resumed = pos
	return pos, true, nil
}

// fail records the first content error; the file is then refused at EFID.
func (x *incoming) fail(reason oftp2.EFNAReason, format string, args ...any) {
	if x.bad == nil {
		x.bad = &oftp2.EFNA{Reason: reason, Text: fmt.Sprintf(format, args...)}
	}
}

// data takes one DATA payload (§7). A malformed payload is a protocol error;
// content that does not fit the file format refuses the file at EFID.
func (x *incoming) data(payload []byte) error {
	return x.unpack.Unpack(payload, func(p []byte, eor bool) error {
		if x.bad != nil {
			return nil
		}
		if err := x.write(p); err != nil {
			return err
		}
		if eor {
			return x.endRecord()
		}
		return nil
	})
}

func (x *incoming) write(p []byte) error {
	switch x.sfid.Format {
	case oftp2.FormatUnstructured, oftp2.FormatText:
		if x.ended && len(p) > 0 {
			x.fail(oftp2.EFNAInvalidByteCount, "data after the end of file flag of a %s file", x.sfid.Format)
			return nil
		}
		x.units += int64(len(p))
		x.size += int64(len(p))
		x.sinceCheckpoint += int64(len(p))
		if err := x.emit(p); err != nil {
			return err
		}
		if x.restart && x.sinceCheckpoint >= x.in.checkpoint {
			return x.checkpoint()
		}
		return nil
	case oftp2.FormatFixed:
		x.cur += len(p)
		limit := x.st.RecordLength
		if limit == 0 {
			limit = x.sfid.MaxRecordSize
		}
		if x.cur > limit {
			x.fail(oftp2.EFNARecordLengthNotSupported, "F record %d is longer than %d octets", x.records+1, limit)
			return nil
		}
		return x.emit(p)
	default:
		if len(x.vrec)+len(p) > x.sfid.MaxRecordSize {
			x.fail(oftp2.EFNARecordLengthNotSupported, "V record %d is longer than SFIDLRECL %d", x.records+1, x.sfid.MaxRecordSize)
			return nil
		}
		x.vrec = append(x.vrec, p...)
		return nil
	}
}

func (x *incoming) endRecord() error {
	switch x.sfid.Format {
	case oftp2.FormatUnstructured, oftp2.FormatText:
		// §7.2: an unstructured file is one record; the flag ends the file.
		x.ended = true
	case oftp2.FormatFixed:
		if x.st.RecordLength == 0 {
			x.st.RecordLength = x.cur
		}
		if x.cur != x.st.RecordLength {
			x.fail(oftp2.EFNARecordLengthNotSupported, "F record %d has %d octets, the records before %d", x.records+1, x.cur, x.st.RecordLength)
			return nil
		}
		x.records++
		x.units += int64(x.cur)
		x.size += int64(x.cur)
		x.sinceCheckpoint += int64(x.cur)
		x.cur = 0
	default:
		var hdr [2]byte
		binary.BigEndian.PutUint16(hdr[:], uint16(len(x.vrec)))
		if err := x.emit(hdr[:]); err != nil {
			return err
		}
		if err := x.emit(x.vrec); err != nil {
			return err
		}
		x.records++
		x.units += int64(len(x.vrec))
		x.size += int64(len(x.vrec)) + 2
		x.sinceCheckpoint += int64(len(x.vrec)) + 2
		x.vrec = x.vrec[:0]
	}
	if x.restart && x.sinceCheckpoint >= x.in.checkpoint {
		return x.checkpoint()
	}
	return nil
}

func (x *incoming) emit(p []byte) error {
	if _, err := x.w.Write(p); err != nil {
		return fmt.Errorf("endpoint: write %s: %w", x.partPath(), err)
	}
	x.h.Write(p)
	return nil
}

// checkpoint makes the current position durable: data flushed and synced,
// then the restart state written atomically. U and T files are checkpointed
// at any octet (the restart position is rounded down to 1K blocks when it is
// used); F and V files at record boundaries.
func (x *incoming) checkpoint() error {
	if err := x.w.Flush(); err != nil {
		return fmt.Errorf("endpoint: write %s: %w", x.partPath(), err)
	}
	if err := x.f.Sync(); err != nil {
		return fmt.Errorf("endpoint: sync %s: %w", x.partPath(), err)
	}
	x.st.Records, x.st.Units, x.st.Size = x.records, x.units, x.size
	if x.sfid.Format == oftp2.FormatFixed {
		// Data of an unfinished F record is in the file beyond Size; it is
		// cut off on resume.
		x.st.Size = x.records * int64(x.st.RecordLength)
	}
	x.st.Updated = x.in.now()
	data, err := json.Marshal(&x.st)
	if err != nil {
		return err
	}
	x.sinceCheckpoint = 0
	return writeFileAtomic(x.statePath(), data)
}

// finish checks the EFID counts (RFC 5024 §5.3.8: the exact totals, also
// after a restart), then stores the file under its final name. It returns
// the stored file, or an EFNA when the file is refused (the partial file is
// then removed), or an error when the file could not be stored. A stored
// file comes with a non-nil error only when its metadata could not be
// written; the file itself is complete.
func (x *incoming) finish(efid *oftp2.EFID) (*ReceivedFile, *oftp2.EFNA, error) {
	defer x.release()
	refuse := func(e *oftp2.EFNA) (*ReceivedFile, *oftp2.EFNA, error) {
		x.remove()
		return nil, e, nil
	}
	if x.bad != nil {
		return refuse(x.bad)
	}
	switch x.sfid.Format {
	case oftp2.FormatFixed:
		if x.cur != 0 {
			return refuse(&oftp2.EFNA{Reason: oftp2.EFNAInvalidRecordCount, Text: "the last F record has no end of record flag"})
		}
	case oftp2.FormatVariable:
		if len(x.vrec) != 0 {
			return refuse(&oftp2.EFNA{Reason: oftp2.EFNAInvalidRecordCount, Text: "the last V record has no end of record flag"})
		}
	}
	structured := x.sfid.Format == oftp2.FormatFixed || x.sfid.Format == oftp2.FormatVariable
	if structured && efid.RecordCount != x.records {
		return refuse(&oftp2.EFNA{Reason: oftp2.EFNAInvalidRecordCount, Text: fmt.Sprintf("received %d records, EFID says %d", x.records, efid.RecordCount)})
	}
	if efid.UnitCount != x.units {
		return refuse(&oftp2.EFNA{Reason: oftp2.EFNAInvalidByteCount, Text: fmt.Sprintf("received %d octets, EFID says %d", x.units, efid.UnitCount)})
	}
	if err := x.w.Flush(); err != nil {
		x.remove()
		return nil, nil, fmt.Errorf("endpoint: write %s: %w", x.partPath(), err)
	}
	if err := x.f.Sync(); err != nil {
		x.remove()
		return nil, nil, fmt.Errorf("endpoint: sync %s: %w", x.partPath(), err)
	}
	if err := x.f.Close(); err != nil {
		x.f = nil
		x.remove()
		return nil, nil, fmt.Errorf("endpoint: close %s: %w", x.partPath(), err)
	}
	x.f = nil
	final, err := x.in.place(x.partPath(), x.sfid.DatasetName, x.st.Date, x.st.Time)
	if err != nil {
		x.remove()
		return nil, nil, err
	}
	rf := &ReceivedFile{
		Path: final, DatasetName: x.sfid.DatasetName, Date: x.st.Date, Time: x.st.Time,
		Originator: x.sfid.Originator, Destination: x.sfid.Destination, UserData: x.sfid.UserData,
		Description: x.sfid.Description, Format: string(rune(x.sfid.Format)), RecordSize: x.sfid.MaxRecordSize,
		Records: x.records, Units: x.units, Size: x.size, SHA256: hex.EncodeToString(x.h.Sum(nil)),
		Partner: x.partner, RestartPosition: x.resumed, Received: x.in.now(),
	}
	meta, err := json.MarshalIndent(rf, "", "  ")
	if err == nil {
		err = writeFileAtomic(x.in.path(receivedDirName, filepath.Base(final)+".json"), meta)
	}
	_ = os.Remove(x.statePath())
	if err != nil {
		return rf, nil, fmt.Errorf("endpoint: metadata of %s: %w", final, err)
	}
	return rf, nil, nil
}

// abort ends an unfinished transfer. With restart agreed the data received so
// far is kept for a later session; otherwise the partial file is removed.
func (x *incoming) abort() error {
	defer x.release()
	if x.f == nil {
		return nil
	}
	if x.restart && x.bad == nil {
		err := x.checkpoint()
		x.f.Close()
		x.f = nil
		if err != nil {
			x.remove()
		}
		return err
	}
	x.remove()
	return nil
}

// remove deletes the partial file and its state.
func (x *incoming) remove() {
	if x.f != nil {
		x.f.Close()
		x.f = nil
	}
	_ = os.Remove(x.partPath())
	_ = os.Remove(x.statePath())
}

func (x *incoming) release() {
	x.in.mu.Lock()
	delete(x.in.active, x.key)
	x.in.mu.Unlock()
}

// place renames the complete temporary file to its final name in the
// receive directory: the dataset name made safe as a file name, with the
// date and time appended (and a number after that) when the name is taken.
// It never replaces an existing file.
func (in *inbox) place(tmp, dsn, date, tim string) (string, error) {
	base := safeFileName(dsn)
	for i := 0; i < 1000; i++ {
		name := base
		switch {
		case i == 1:
			name = base + "." + date + tim
		case i > 1:
			name = base + "." + date + tim + "." + strconv.Itoa(i-1)
		}
		final := filepath.Join(in.dir, name)
		// os.Link fails when the target exists, which makes the check and
		// the rename one atomic step; the temporary name is removed after.
		err := os.Link(tmp, final)
		switch {
		case errors.Is(err, fs.ErrExist):
			continue
		case err != nil:
			// A file system without hard links: check, then rename.
			if _, serr := os.Lstat(final); serr == nil {
				continue
			}
			if err := os.Rename(tmp, final); err != nil {
				return "", fmt.Errorf("endpoint: store %s: %w", final, err)
			}
		default:
			// The data is safe under the final name; a temporary name left
			// behind is removed with the partial state by the caller.
			_ = os.Remove(tmp)
		}
		if err := syncDir(in.dir); err != nil {
			// Not durable: take the final name back, so that a file under
			// a final name is always one that was acknowledged.
			_ = os.Remove(final)
			return "", err
		}
		return final, nil
	}
	return "", fmt.Errorf("endpoint: no free file name for %q in %s", dsn, in.dir)
}

// safeFileName turns a dataset name into a file name: characters other than
// letters, digits, '.', '-', '_', '(' and ')' become '_'; a name that would
// be hidden or special gets a leading '_'.
func safeFileName(dsn string) string {
	b := []byte(strings.TrimSpace(dsn))
	for i, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_', c == '(', c == ')':
		default:
			b[i] = '_'
		}
	}
	s := string(b)
	if s == "" || s[0] == '.' {
		s = "_" + s
	}
	return s
}

// addResponse persists an end-to-end response to send to partner, claimed by owner (the
// session that received the file).
func (in *inbox) addResponse(r *response, owner any) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.claims[r.Key] = owner
	in.mu.Unlock()
	return writeFileAtomic(in.path(responsesDirName, r.Key+".json"), data)
}

// release drops owner's claims: its responses not yet delivered go to a later session.
func (in *inbox) release(owner any) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, o := range in.claims {
		if o == owner {
			delete(in.claims, k)
		}
	}
}

// responses returns the pending responses for partner that owner may send, oldest first:
// its own and the unclaimed ones, which it claims.
func (in *inbox) responses(partner string, owner any) ([]*response, error) {
	all, err := in.allResponses(partner)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	out := all[:0]
	for _, r := range all {
		if o, ok := in.claims[r.Key]; ok && o != owner {
			continue
		}
		in.claims[r.Key] = owner
		out = append(out, r)
	}
	return out, nil
}

// allResponses returns every pending response for partner, oldest first.
func (in *inbox) allResponses(partner string) ([]*response, error) {
	entries, err := os.ReadDir(in.path(responsesDirName))
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	var out []*response
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(in.path(responsesDirName, e.Name()))
		if err != nil {
			continue
		}
		var r response
		if json.Unmarshal(data, &r) != nil || r.Partner != partner {
			continue
		}
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// responseDone removes a response the partner has acknowledged with RTR.
func (in *inbox) responseDone(key string) error {
	in.mu.Lock()
	delete(in.claims, key)
	in.mu.Unlock()
	err := os.Remove(in.path(responsesDirName, key+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("endpoint: sync %s: %w", dir, err)
	}
	return nil
}

// ReadMetadata returns the metadata stored beside a received file (path is
// ReceivedFile.Path).
func ReadMetadata(path string) (*ReceivedFile, error) {
	side := filepath.Join(filepath.Dir(path), stateDirName, receivedDirName, filepath.Base(path)+".json")
	data, err := os.ReadFile(side)
	if err != nil {
		return nil, fmt.Errorf("endpoint: metadata of %s: %w", path, err)
	}
	var rf ReceivedFile
	if err := json.Unmarshal(data, &rf); err != nil {
		return nil, fmt.Errorf("endpoint: metadata of %s: %w", path, err)
	}
	return &rf, nil
}
