package spool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"smartproxy/api/apiv1"
	"smartproxy/client/spool"
	"smartproxy/internal/backoff"
	"smartproxy/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// event returns a valid event numbered i.
func event(i int) apiv1.Event {
	return apiv1.Event{Time: time.Date(2026, 3, 1, 12, 0, 0, i, time.UTC), Severity: apiv1.SeverityWarning,
		Name: "partner_unknown", Message: fmt.Sprintf("event %d", i), RemoteAddr: "192.0.2.7:40000",
		Fields: map[string]string{"n": fmt.Sprint(i)}, Source: apiv1.SourceServer}
}

func open(t *testing.T, cfg spool.Config) *spool.Spool {
	t.Helper()
	s, err := spool.Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s) = %v", cfg.Dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendN(t *testing.T, s *spool.Spool, from, n int) []string {
	t.Helper()
	var ids []string
	for i := from; i < from+n; i++ {
		evs := []apiv1.Event{event(i)}
		if err := s.Append(evs...); err != nil {
			t.Fatalf("Append(event %d) = %v", i, err)
		}
		ids = append(ids, evs[0].ID)
	}
	return ids
}

// drain peeks and acknowledges everything and returns the messages in order.
func drain(t *testing.T, s *spool.Spool) []string {
	t.Helper()
	var out []string
	for {
		b, err := s.Peek(7, 1<<20)
		if err != nil {
			t.Fatalf("Peek() = %v", err)
		}
		if len(b.Events) == 0 {
			return out
		}
		for _, ev := range b.Events {
			out = append(out, ev.Message)
		}
		if err := s.Ack(b, -1); err != nil {
			t.Fatalf("Ack() = %v", err)
		}
	}
}

func messages(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf("event %d", i))
	}
	return out
}

func TestAppendPeekAck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := open(t, spool.Config{Dir: dir})
	ids := appendN(t, s, 0, 20)
	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := make(map[string]bool)
	for _, id := range ids {
		if !hexID.MatchString(id) || seen[id] {
			t.Fatalf("Append gave id %q, want 32 unique hexadecimal digits", id)
		}
		seen[id] = true
	}
	b, err := s.Peek(5, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(b.Events), 5; got != want {
		t.Fatalf("Peek(5) = %d events, want %d", got, want)
	}
	for i, ev := range b.Events {
		if ev.ID != ids[i] {
			t.Errorf("Peek()[%d].ID = %q, want %q", i, ev.ID, ids[i])
		}
		if diff := cmp.Diff(withID(event(i), ids[i]), ev); diff != "" {
			t.Errorf("Peek()[%d] mismatch (-want +got):\n%s", i, diff)
		}
	}
	// Peek does not remove.
	again, err := s.Peek(5, 1<<20)
	if err != nil || again.Events[0].ID != ids[0] {
		t.Fatalf("second Peek() = %v, %v; want the same oldest event", again, err)
	}
	if err := s.Ack(b, 3); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Len(); n != 17 {
		t.Errorf("Len() after Ack(3) = %d, want 17", n)
	}
	// Acknowledging an older batch again changes nothing.
	if err := s.Ack(again, 2); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Len(); n != 17 {
		t.Errorf("Len() after a stale Ack = %d, want 17", n)
	}
	if diff := cmp.Diff(messages(3, 17), drain(t, s)); diff != "" {
		t.Errorf("drained events mismatch (-want +got):\n%s", diff)
	}

	// Byte limit: at least one event, then no more than the limit allows.
	appendN(t, s, 100, 3)
	one, err := s.Peek(10, 1)
	if err != nil || len(one.Events) != 1 {
		t.Errorf("Peek(10, 1 byte) = %d events, %v; want exactly one", len(one.Events), err)
	}
}

func withID(ev apiv1.Event, id string) apiv1.Event {
	ev.ID = id
	return ev
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := open(t, spool.Config{Dir: dir})
	appendN(t, s, 0, 3)
	b, _ := s.Peek(1, 1<<20)
	if err := s.Ack(b, -1); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("spool directory mode = %04o, want 0700", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) == 0 {
		t.Fatal("spool directory is empty after Append")
	}
	for _, e := range entries {
		info, _ := e.Info()
		if got := info.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode = %04o, want 0600", e.Name(), got)
		}
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Open(spool.Config{Dir: open}); err == nil || !strings.Contains(err.Error(), "0755") {
		t.Errorf("Open(dir with mode 0755) = %v, want an error naming the mode", err)
	}
}

func TestAppendRefusesInvalidEvent(t *testing.T) {
	s := open(t, spool.Config{Dir: filepath.Join(t.TempDir(), "spool")})
	bad := event(1)
	bad.Severity = "loud"
	good := event(0)
	if err := s.Append(good, bad); err == nil || !strings.Contains(err.Error(), "severity") {
		t.Errorf("Append(good, bad severity) = %v, want an error naming severity", err)
	}
	if n, _ := s.Len(); n != 0 {
		t.Errorf("Len() after a refused Append = %d, want 0 (nothing appended)", n)
	}
}

// TestRestart closes and reopens the spool at every stage: the unacknowledged events survive
// in order, the acknowledged ones do not come back, and new ids do not collide.
func TestRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	cfg := spool.Config{Dir: dir, SegmentBytes: 2048} // several segments
	s := open(t, cfg)
	ids := appendN(t, s, 0, 60)
	b, err := s.Peek(25, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b, -1); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, cfg)
	if n, _ := s.Len(); n != 35 {
		t.Fatalf("Len() after reopen = %d, want 35", n)
	}
	b, err = s.Peek(100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, ev := range b.Events {
		gotIDs = append(gotIDs, ev.ID)
	}
	if diff := cmp.Diff(ids[25:], gotIDs); diff != "" {
		t.Errorf("ids after reopen mismatch (-want +got):\n%s", diff)
	}
	select {
	case <-s.Ready():
	default:
		t.Error("Ready() not signalled after opening a spool with pending events")
	}
	// Restart between reading and acknowledging: the events stay.
	s.Close()
	s = open(t, cfg)
	appendN(t, s, 60, 5)
	if diff := cmp.Diff(messages(25, 40), drain(t, s)); diff != "" {
		t.Errorf("drained events mismatch (-want +got):\n%s", diff)
	}
	s.Close()

	// Fully acknowledged: old segments are gone and a reopen finds nothing.
	s = open(t, cfg)
	if n, _ := s.Len(); n != 0 {
		t.Errorf("Len() after everything was acknowledged = %d, want 0", n)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(segs) > 2 {
		t.Errorf("%d segment files remain after everything was acknowledged, want at most 2 (the active ones)", len(segs))
	}
}

func TestBounds(t *testing.T) {
	tests := []struct {
		name      string
		cfg       spool.Config
		append    int
		wantLen   int
		wantFirst int // number of the oldest surviving event
	}{
		{"max events", spool.Config{MaxEvents: 10}, 25, 10, 15},
		{"max bytes", spool.Config{MaxBytes: 2000}, 40, -1, -1},
		{"within bounds", spool.Config{MaxEvents: 50}, 25, 25, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := logrus.New()
			log.SetOutput(&logs)
			tt.cfg.Dir = filepath.Join(t.TempDir(), "spool")
			tt.cfg.Logger = log
			s := open(t, tt.cfg)
			appendN(t, s, 0, tt.append)
			n, size := s.Len()
			dropped := s.Dropped()
			if uint64(n)+dropped != uint64(tt.append) {
				t.Errorf("Len() %d + Dropped() %d = %d, want %d (nothing lost uncounted)", n, dropped, uint64(n)+dropped, tt.append)
			}
			if tt.wantLen >= 0 && n != tt.wantLen {
				t.Errorf("Len() = %d, want %d", n, tt.wantLen)
			}
			if tt.cfg.MaxBytes > 0 && size > tt.cfg.MaxBytes {
				t.Errorf("Len() bytes = %d, want at most %d", size, tt.cfg.MaxBytes)
			}
			if dropped > 0 && !strings.Contains(logs.String(), "dropped_total="+fmt.Sprint(dropped)) {
				t.Errorf("log does not report the %d dropped events:\n%s", dropped, logs.String())
			}
			if dropped == 0 && logs.Len() > 0 && strings.Contains(logs.String(), "spool full") {
				t.Errorf("log reports dropping without a drop:\n%s", logs.String())
			}
			got := drain(t, s)
			first := tt.wantFirst
			if first < 0 {
				first = tt.append - n
			}
			if diff := cmp.Diff(messages(first, n), got); diff != "" {
				t.Errorf("surviving events mismatch (-want +got):\n%s", diff)
			}
			// The drop is durable: a reopen does not bring dropped events back.
			s.Close()
			s2 := open(t, tt.cfg)
			if n, _ := s2.Len(); n != 0 {
				t.Errorf("Len() after reopen = %d, want 0", n)
			}
		})
	}
	t.Run("batch larger than the bounds", func(t *testing.T) {
		s := open(t, spool.Config{Dir: filepath.Join(t.TempDir(), "spool"), MaxEvents: 2})
		if err := s.Append(event(0), event(1), event(2)); err == nil {
			t.Error("Append(3 events) into a spool of 2 = nil, want an error")
		}
	})
}

// lastSegment returns the newest segment file that holds data.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	slices.Sort(segs)
	for i := len(segs) - 1; i >= 0; i-- {
		if st, err := os.Stat(segs[i]); err == nil && st.Size() > 0 {
			return segs[i]
		}
	}
	t.Fatal("no segment with data")
	return ""
}

func TestCorruptTail(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		wantLen int
	}{
		{"torn last record", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()-5); err != nil {
				t.Fatal(err)
			}
		}, 4},
		{"torn header", func(t *testing.T, path string) {
			appendBytes(t, path, []byte{0, 0, 1})
		}, 5},
		{"garbage after the last record", func(t *testing.T, path string) {
			appendBytes(t, path, bytes.Repeat([]byte{0xff}, 40))
		}, 5},
		{"flipped byte in the last record", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			flip(t, path, st.Size()-3)
		}, 4},
		{"zero length record", func(t *testing.T, path string) {
			appendBytes(t, path, make([]byte, 16))
		}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool")
			cfg := spool.Config{Dir: dir}
			s := open(t, cfg)
			appendN(t, s, 0, 5)
			s.Close()
			seg := lastSegment(t, dir)
			tt.damage(t, seg)

			var logs bytes.Buffer
			log := logrus.New()
			log.SetOutput(&logs)
			cfg.Logger = log
			s = open(t, cfg)
			if n, _ := s.Len(); n != tt.wantLen {
				t.Errorf("Len() after damage = %d, want %d", n, tt.wantLen)
			}
			if s.CutBytes() == 0 || !strings.Contains(logs.String(), "bytes_lost=") {
				t.Errorf("CutBytes() = %d with log %q; want the cut reported", s.CutBytes(), logs.String())
			}
			// Appends continue, and a further reopen is clean.
			appendN(t, s, 5, 2)
			s.Close()
			logs.Reset()
			s = open(t, cfg)
			if s.CutBytes() != 0 {
				t.Errorf("second reopen cut %d bytes (log %q), want 0: the first reopen should have repaired the file", s.CutBytes(), logs.String())
			}
			want := append(messages(0, tt.wantLen), messages(5, 2)...)
			if diff := cmp.Diff(want, drain(t, s)); diff != "" {
				t.Errorf("events mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCorruptOlderSegment damages a record in a segment that is not the newest: the rest of
// that segment is lost (and logged), later segments are intact.
func TestCorruptOlderSegment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	cfg := spool.Config{Dir: dir, Logger: log}
	s := open(t, cfg)
	appendN(t, s, 0, 5)
	s.Close()
	first := lastSegment(t, dir)
	s = open(t, cfg) // a new segment for the next appends
	appendN(t, s, 5, 5)
	s.Close()
	// Damage the third record of the first segment: find it by its payload.
	data, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, []byte(`"event 2"`))
	if at < 0 {
		t.Fatal("event 2 not found in the first segment")
	}
	flip(t, first, int64(at+3))
	s = open(t, cfg)
	if diff := cmp.Diff(append(messages(0, 2), messages(5, 5)...), drain(t, s)); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), "checksum mismatch") {
		t.Errorf("log does not report the damaged record:\n%s", logs.String())
	}
}

func TestCorruptHead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := open(t, spool.Config{Dir: dir})
	appendN(t, s, 0, 4)
	b, _ := s.Peek(2, 1<<20)
	if err := s.Ack(b, -1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, "head"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open(t, spool.Config{Dir: dir})
	// Everything on disk is sent again; the backend drops the duplicates by id.
	if n, _ := s.Len(); n != 4 {
		t.Errorf("Len() with a damaged head = %d, want 4 (every event on disk)", n)
	}
}

func appendBytes(t *testing.T, path string, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(p); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// store is a backend's event store in memory: it keeps each id once, as the real backend does.
type store struct {
	mu        sync.Mutex
	byID      map[string]apiv1.Event
	posts     int
	failNext  int // posts to fail before accepting
	rejectMsg string
	anonymous bool // reject without naming the event
	got       chan struct{}
}

func newStore() *store {
	return &store{byID: make(map[string]apiv1.Event), got: make(chan struct{}, 100)}
}

func (st *store) post(ctx context.Context, evs []apiv1.Event) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.posts++
	if len(evs) > 3 {
		return fmt.Errorf("batch of %d events, want at most 3 (BatchEvents)", len(evs))
	}
	if st.failNext > 0 {
		st.failNext--
		return errors.New("503 unavailable")
	}
	for i, ev := range evs {
		if st.rejectMsg != "" && ev.Message == st.rejectMsg {
			if st.anonymous {
				return &spool.RejectedError{Index: -1, Err: errors.New("invalid_json")}
			}
			return &spool.RejectedError{Index: i, Err: errors.New("invalid_field: events[" + fmt.Sprint(i) + "].message")}
		}
	}
	for _, ev := range evs {
		st.byID[ev.ID] = ev
	}
	select {
	case st.got <- struct{}{}:
	default:
	}
	return nil
}

func (st *store) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byID)
}

// waitFor waits until cond holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 10*time.Second, what, cond)
}

func TestSend(t *testing.T) {
	t.Run("rejection names the event", func(t *testing.T) { testSend(t, false) })
	t.Run("rejection of the whole batch", func(t *testing.T) { testSend(t, true) })
}

func testSend(t *testing.T, anonymous bool) {
	dir := filepath.Join(t.TempDir(), "spool")
	log, hook := test.NewNullLogger()
	s := open(t, spool.Config{Dir: dir, Logger: log})
	st := newStore()
	st.failNext = 2
	st.rejectMsg = "event 4"
	st.anonymous = anonymous
	ids := appendN(t, s, 0, 10)

	ctx, cancel := context.WithCancel(context.Background())
	var stats spool.SendStats
	done := make(chan error, 1)
	go func() {
		done <- s.Send(ctx, st.post, spool.SendConfig{BatchEvents: 3, Backoff: backoff.Exponential{Base: time.Millisecond, Cap: 2 * time.Millisecond}}, &stats)
	}()
	waitFor(t, "9 events in the store", func() bool { return st.count() == 9 })
	// Events appended while Send runs are picked up without delay.
	more := appendN(t, s, 10, 4)
	waitFor(t, "13 events in the store", func() bool { return st.count() == 13 })
	waitFor(t, "an empty spool", func() bool { n, _ := s.Len(); return n == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Send() = %v, want nil after cancel", err)
	}
	if stats.Sent != 13 || stats.Rejected != 1 || stats.Failures != 2 {
		t.Errorf("stats = %+v, want 13 sent, 1 rejected, 2 failures", stats)
	}
	for i, id := range append(ids, more...) {
		_, ok := st.byID[id]
		if want := i != 4; ok != want {
			t.Errorf("event %d in store = %v, want %v", i, ok, want)
		}
	}
	var rejectedLogged bool
	for _, e := range hook.AllEntries() {
		if e.Data["event"] == "spool_event_rejected" && e.Data["event_id"] == ids[4] {
			rejectedLogged = true
		}
	}
	if !rejectedLogged {
		t.Error("the rejected event is not logged with its id")
	}
}

// TestSendCrashBeforeAck posts a batch and "crashes" before the acknowledgement reaches the
// disk: the restarted spool sends the batch again, and the store, which keeps each id once,
// ends with every event exactly once.
func TestSendCrashBeforeAck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	cfg := spool.Config{Dir: dir}
	s := open(t, cfg)
	ids := appendN(t, s, 0, 8)
	st := newStore()
	b, err := s.Peek(3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.post(context.Background(), b.Events); err != nil {
		t.Fatal(err)
	}
	s.Close() // the crash: posted, not acknowledged

	s = open(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, st.post, spool.SendConfig{BatchEvents: 3}, nil) }()
	waitFor(t, "an empty spool", func() bool { n, _ := s.Len(); return n == 0 })
	cancel()
	<-done
	if got := st.count(); got != len(ids) {
		t.Errorf("store holds %d distinct events, want %d", got, len(ids))
	}
	for _, id := range ids {
		if _, ok := st.byID[id]; !ok {
			t.Errorf("event %s missing in the store", id)
		}
	}
	if st.posts < 4 {
		t.Errorf("posts = %d, want at least 4 (the first batch was sent twice)", st.posts)
	}
}

func TestSendStopsOnCancel(t *testing.T) {
	s := open(t, spool.Config{Dir: filepath.Join(t.TempDir(), "spool")})
	appendN(t, s, 0, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	calls := make(chan struct{}, 10)
	go func() {
		done <- s.Send(ctx, func(ctx context.Context, evs []apiv1.Event) error {
			calls <- struct{}{}
			return errors.New("backend down")
		}, spool.SendConfig{Backoff: backoff.Exponential{Base: time.Hour, Cap: time.Hour}}, nil)
	}()
	<-calls
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Send() = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return after cancel while backing off")
	}
	if n, _ := s.Len(); n != 2 {
		t.Errorf("Len() = %d after failed posts, want 2 (nothing acknowledged)", n)
	}
}

// TestKick ends a long retry wait of Send at once.
func TestKick(t *testing.T) {
	s := open(t, spool.Config{Dir: filepath.Join(t.TempDir(), "spool")})
	appendN(t, s, 0, 3)
	st := newStore()
	st.failNext = 1
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Send(ctx, st.post, spool.SendConfig{BatchEvents: 3, Backoff: backoff.Exponential{Base: time.Hour, Cap: time.Hour}}, nil)
	}()
	waitFor(t, "the failed first post", func() bool { st.mu.Lock(); defer st.mu.Unlock(); return st.posts == 1 })
	s.Kick()
	waitFor(t, "the events after Kick", func() bool { return st.count() == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Send() = %v, want nil", err)
	}
}
