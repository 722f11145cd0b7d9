package spool

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
	"smartproxy/client/internal/diskfile"
)

// Defaults of Config.
const (
	// DefaultMaxEvents is Config.MaxEvents when zero.
	DefaultMaxEvents = 100_000
	// DefaultMaxBytes is Config.MaxBytes when zero.
	DefaultMaxBytes = 64 << 20
	// DefaultSegmentBytes is Config.SegmentBytes when zero.
	DefaultSegmentBytes = 4 << 20
	// MaxRecordBytes is the largest event (as JSON) the spool accepts. Events are bounded by
	// the contract's field limits well below it.
	MaxRecordBytes = 1 << 20
)

const (
	headerLen  = 8
	headName   = "head"
	segPrefix  = "seg-"
	segSuffix  = ".log"
	dirMode    = 0o700
	fileMode   = 0o600
	maxSegment = ^uint64(0)
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Config configures a Spool. Dir is required; every other field has a documented default.
type Config struct {
	// Dir is the spool directory, created with mode 0700 if missing. Required. A directory
	// accessible to others is refused: events name partners and addresses.
	Dir string
	// MaxEvents bounds the number of events held. If zero, DefaultMaxEvents.
	MaxEvents int
	// MaxBytes bounds the bytes of records held. If zero, DefaultMaxBytes.
	MaxBytes int64
	// SegmentBytes is the size at which appends move on to a new segment file. If zero,
	// DefaultSegmentBytes.
	SegmentBytes int64
	// Logger receives the spool's warnings (dropped events, cut records). If nil, nothing is
	// logged.
	Logger logrus.FieldLogger
}

// Spool is an on-disk queue of events. Create it with Open; it is safe for concurrent use.
type Spool struct {
	// Immutable after Open.
	cfg Config
	log logrus.FieldLogger

	ready chan struct{} // capacity 1: signalled by Append
	kick  chan struct{} // capacity 1: signalled by Kick

	mu       sync.Mutex
	closed   bool
	pending  []record // events not yet acknowledged, oldest first
	start    int      // index of the oldest pending record in pending (a queue without copying)
	headSeq  uint64   // sequence number of pending[start]
	bytes    int64    // record bytes of the pending events
	head     position // where pending[start] begins; the end of the last record when empty
	active   *os.File // segment appends go to
	activeNo uint64
	activeSz int64
	segments []uint64 // segment numbers on disk, ascending
	dropped  uint64   // events dropped by the bounds since Open
	cut      int64    // bytes of corrupt records cut off or skipped at Open
}

// record is where one event lies on disk.
type record struct {
	seg  uint64
	off  int64
	size int32 // header + payload
}

// position is a place in the segment files.
type position struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
}

// Open opens or creates the spool in cfg.Dir and loads the events still pending.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: Config.Dir is required")
	}
	if cfg.MaxEvents < 0 || cfg.MaxBytes < 0 || cfg.SegmentBytes < 0 {
		return nil, errors.New("spool: negative bound in Config")
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	if err := diskfile.MkdirPrivate(cfg.Dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{cfg: cfg, log: log.WithField("spool", cfg.Dir), ready: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
	}
	if err := s.newSegment(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", cfg.Dir, err)
	}
	if n := s.lenLocked(); n > 0 {
		s.signal()
		s.log.WithFields(logrus.Fields{"events": n, "bytes": s.bytes}).Info("spool holds events not yet accepted by the backend; sending them")
	}
	return s, nil
}

// load reads the head and scans the segments from it.
func (s *Spool) load() error {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
			if strings.HasPrefix(name, "."+headName+".tmp") {
				os.Remove(filepath.Join(s.cfg.Dir, name)) // an interrupted head update
			}
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), 16, 64)
		if err != nil || n == maxSegment {
			continue
		}
		s.segments = append(s.segments, n)
	}
	slices.Sort(s.segments)

	data, err := os.ReadFile(filepath.Join(s.cfg.Dir, headName))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(s.segments) > 0 {
			s.head = position{Segment: s.segments[0]}
		}
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(data, &s.head); err != nil {
			// The head is written atomically, so this is not a torn write but damage: start
			// from the oldest segment and resend (the backend drops duplicates by id).
			s.log.WithError(err).Error("spool head file is unreadable; resending every event on disk (the backend drops duplicates)")
			s.head = position{}
			if len(s.segments) > 0 {
				s.head.Segment = s.segments[0]
			}
		}
	}
	var keep []uint64
	for i, n := range s.segments {
		path := s.segPath(n)
		if n < s.head.Segment {
			if err := os.Remove(path); err != nil {
				return err
			}
			continue
		}
		keep = append(keep, n)
		from := int64(0)
		if n == s.head.Segment {
			from = s.head.Offset
		}
		if err := s.scan(n, from, i == len(s.segments)-1); err != nil {
			return err
		}
	}
	s.segments = keep
	if len(s.pending) > 0 {
		s.head = position{Segment: s.pending[0].seg, Offset: s.pending[0].off}
	}
	return nil
}

// scan reads the records of segment n from offset from. A corrupt record ends the scan; in the
// last segment the file is cut there.
func (s *Spool) scan(n uint64, from int64, last bool) error {
	path := s.segPath(n)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if from > size {
		s.log.WithFields(logrus.Fields{"segment": filepath.Base(path), "head_offset": from, "size": size}).
			Error("spool head points beyond the end of its segment; skipping that segment")
		return nil
	}
	var hdr [headerLen]byte
	buf := make([]byte, 0, 4096)
	off := from
	for off < size {
		reason := ""
		if size-off < headerLen {
			reason = "torn record header"
		} else if _, err := f.ReadAt(hdr[:], off); err != nil {
			return err
		} else {
			plen := int64(binary.BigEndian.Uint32(hdr[0:4]))
			switch {
			case plen == 0 || plen > MaxRecordBytes:
				reason = fmt.Sprintf("record length %d out of range", plen)
			case off+headerLen+plen > size:
				reason = "torn record"
			default:
				buf = slices.Grow(buf[:0], int(plen))[:plen]
				if _, err := f.ReadAt(buf, off+headerLen); err != nil {
					return err
				}
				if crc32.Checksum(buf, crcTable) != binary.BigEndian.Uint32(hdr[4:8]) {
					reason = "checksum mismatch"
				}
			}
		}
		if reason != "" {
			lost := size - off
			s.cut += lost
			fields := logrus.Fields{"segment": filepath.Base(path), "offset": off, "bytes_lost": lost, "reason": reason}
			if last {
				s.log.WithFields(fields).Warn("spool: cut a damaged record at the end of the newest segment (a write interrupted by a crash); events after it were never acknowledged to their source")
				if err := f.Truncate(off); err != nil {
					return err
				}
				if err := f.Sync(); err != nil {
					return err
				}
			} else {
				s.log.WithFields(fields).Error("spool: a damaged record ends this segment; the events in the bytes lost cannot be sent")
			}
			return nil
		}
		rsize := int64(binary.BigEndian.Uint32(hdr[0:4])) + headerLen
		s.pending = append(s.pending, record{seg: n, off: off, size: int32(rsize)})
		s.bytes += rsize
		off += rsize
	}
	return nil
}

func (s *Spool) segPath(n uint64) string {
	return filepath.Join(s.cfg.Dir, fmt.Sprintf("%s%016x%s", segPrefix, n, segSuffix))
}

// newSegment starts a new segment file after the newest one. s.mu must be held (or s not yet
// shared).
func (s *Spool) newSegment() error {
	var n uint64
	if len(s.segments) > 0 {
		n = s.segments[len(s.segments)-1] + 1
	}
	if n == maxSegment {
		return errors.New("segment numbers exhausted")
	}
	f, err := os.OpenFile(s.segPath(n), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, fileMode)
	if err != nil {
		return err
	}
	if err := diskfile.SyncDir(s.cfg.Dir); err != nil {
		f.Close()
		return err
	}
	if s.active != nil {
		s.active.Close()
	}
	s.active, s.activeNo, s.activeSz = f, n, 0
	s.segments = append(s.segments, n)
	if s.lenLocked() == 0 {
		// Nothing pending: the head moves to the new segment, so that older ones can go.
		s.head = position{Segment: n}
	}
	return nil
}

// NewID returns a new event id: 128 random bits as 32 hexadecimal digits.
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("spool: event id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Append adds events to the spool, durably: when it returns nil, they are on disk. An event
// without an ID gets a new one (NewID); the ids are set in evs. Every event must pass
// apiv1.ValidateEvent, otherwise none is appended and the error names the event. When the
// bounds are reached, the oldest events are dropped to make room, counted and logged.
func (s *Spool) Append(evs ...apiv1.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var buf []byte
	sizes := make([]int32, len(evs))
	for i := range evs {
		ev := &evs[i]
		if ev.ID == "" {
			id, err := NewID()
			if err != nil {
				return err
			}
			ev.ID = id
		}
		if err := apiv1.ValidateEvent(ev); err != nil {
			return fmt.Errorf("spool: event %d (%s): %w", i, ev.Name, err)
		}
		payload, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("spool: event %d (%s): %w", i, ev.Name, err)
		}
		if len(payload) > MaxRecordBytes {
			return fmt.Errorf("spool: event %d (%s) is %d bytes as JSON, more than %d", i, ev.Name, len(payload), MaxRecordBytes)
		}
		var hdr [headerLen]byte
		binary.BigEndian.PutUint32(hdr[0:4], uint32(len(payload)))
		binary.BigEndian.PutUint32(hdr[4:8], crc32.Checksum(payload, crcTable))
		buf = append(buf, hdr[:]...)
		buf = append(buf, payload...)
		sizes[i] = int32(headerLen + len(payload))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("spool: closed")
	}
	if s.activeSz > 0 && s.activeSz+int64(len(buf)) > s.cfg.SegmentBytes {
		if err := s.newSegment(); err != nil {
			return fmt.Errorf("spool: new segment: %w", err)
		}
	}
	need := int64(len(buf))
	if len(evs) > s.cfg.MaxEvents || need > s.cfg.MaxBytes {
		return fmt.Errorf("spool: %d events of %d bytes exceed the spool's bounds (%d events, %d bytes)", len(evs), need, s.cfg.MaxEvents, s.cfg.MaxBytes)
	}
	// Make room: the oldest events go first, so that the newest (most relevant) survive.
	dropped := 0
	for s.lenLocked() > 0 && (s.lenLocked()+len(evs) > s.cfg.MaxEvents || s.bytes+need > s.cfg.MaxBytes) {
		s.popLocked(1)
		dropped++
	}
	if dropped > 0 {
		s.dropped += uint64(dropped)
		if err := s.saveHeadLocked(); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.log.WithFields(logrus.Fields{"event": "spool_overflow", "dropped": dropped, "dropped_total": s.dropped,
			"max_events": s.cfg.MaxEvents, "max_bytes": s.cfg.MaxBytes}).
			Error("spool full: dropped the oldest events not yet accepted by the backend")
	}
	if _, err := s.active.Write(buf); err != nil {
		// A partial write leaves a torn record that the next Open cuts; continue on a fresh
		// segment so that later appends are not behind it.
		nerr := s.newSegment()
		return fmt.Errorf("spool: write: %w", errors.Join(err, nerr))
	}
	if err := s.active.Sync(); err != nil {
		return fmt.Errorf("spool: sync: %w", err)
	}
	off := s.activeSz
	for _, sz := range sizes {
		s.pending = append(s.pending, record{seg: s.activeNo, off: off, size: sz})
		s.bytes += int64(sz)
		off += int64(sz)
	}
	s.activeSz = off
	s.signal()
	return nil
}

func (s *Spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

func (s *Spool) lenLocked() int { return len(s.pending) - s.start }

// popLocked forgets the n oldest pending records and moves the head after them.
func (s *Spool) popLocked(n int) {
	for i := 0; i < n; i++ {
		r := s.pending[s.start]
		s.pending[s.start] = record{}
		s.start++
		s.headSeq++
		s.bytes -= int64(r.size)
		s.head = position{Segment: r.seg, Offset: r.off + int64(r.size)}
	}
	if s.start == len(s.pending) {
		s.pending, s.start = s.pending[:0], 0
		s.head = position{Segment: s.activeNo, Offset: s.activeSz}
	} else {
		s.head = position{Segment: s.pending[s.start].seg, Offset: s.pending[s.start].off}
		if s.start > 1024 && s.start > len(s.pending)/2 {
			s.pending = append(s.pending[:0], s.pending[s.start:]...)
			s.start = 0
		}
	}
}

// saveHeadLocked writes the head and deletes the segments before it.
func (s *Spool) saveHeadLocked() error {
	data, err := json.Marshal(s.head)
	if err != nil {
		return err
	}
	if err := diskfile.WriteAtomic(filepath.Join(s.cfg.Dir, headName), data, fileMode); err != nil {
		return fmt.Errorf("writing head: %w", err)
	}
	removed := false
	for len(s.segments) > 0 && s.segments[0] < s.head.Segment && s.segments[0] != s.activeNo {
		if err := os.Remove(s.segPath(s.segments[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		s.segments = s.segments[1:]
		removed = true
	}
	if removed {
		return diskfile.SyncDir(s.cfg.Dir)
	}
	return nil
}

// Batch is a run of the oldest pending events, returned by Peek and acknowledged with Ack.
type Batch struct {
	// Events are the events, oldest first.
	Events []apiv1.Event
	first  uint64 // sequence number of Events[0]
}

// Peek returns up to maxEvents of the oldest pending events whose records total at most
// maxBytes (but at least one event when any is pending). It does not remove them.
func (s *Spool) Peek(maxEvents int, maxBytes int64) (*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("spool: closed")
	}
	b := &Batch{first: s.headSeq}
	var total int64
	files := make(map[uint64]*os.File)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i := s.start; i < len(s.pending) && len(b.Events) < maxEvents; i++ {
		r := s.pending[i]
		if len(b.Events) > 0 && total+int64(r.size) > maxBytes {
			break
		}
		f := files[r.seg]
		if f == nil {
			var err error
			if f, err = os.Open(s.segPath(r.seg)); err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
			files[r.seg] = f
		}
		buf := make([]byte, r.size)
		if _, err := f.ReadAt(buf, r.off); err != nil {
			return nil, fmt.Errorf("spool: reading %s at %d: %w", filepath.Base(s.segPath(r.seg)), r.off, err)
		}
		payload := buf[headerLen:]
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(buf[4:8]) {
			return nil, fmt.Errorf("spool: record in %s at %d changed on disk (checksum mismatch)", filepath.Base(s.segPath(r.seg)), r.off)
		}
		var ev apiv1.Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("spool: record in %s at %d: %w", filepath.Base(s.segPath(r.seg)), r.off, err)
		}
		b.Events = append(b.Events, ev)
		total += int64(r.size)
	}
	return b, nil
}

// Ack removes the events of b that are still pending (events dropped meanwhile by the bounds
// are skipped) and records the new head durably. n limits the acknowledgement to the first n
// events of b; a negative n means all of them.
func (s *Spool) Ack(b *Batch, n int) error {
	if n < 0 || n > len(b.Events) {
		n = len(b.Events)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("spool: closed")
	}
	end := b.first + uint64(n)
	if end <= s.headSeq {
		return nil
	}
	s.popLocked(int(end - s.headSeq))
	if err := s.saveHeadLocked(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Len returns the number of pending events and the bytes of their records.
func (s *Spool) Len() (events int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lenLocked(), s.bytes
}

// Dropped returns the number of events dropped by the bounds since Open.
func (s *Spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// CutBytes returns the bytes of damaged records Open cut off or skipped.
func (s *Spool) CutBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cut
}

// Ready returns a channel that receives a value after an Append (and after Open when events
// are pending). It has room for one value: a receiver that was busy still sees that something
// arrived.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

// Kick ends a retry wait of Send at once, e.g. because the backend was seen answering again.
func (s *Spool) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close closes the active segment. Pending events stay on disk for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.active != nil {
		return s.active.Close()
	}
	return nil
}
