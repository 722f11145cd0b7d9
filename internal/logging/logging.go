// Package logging sets up the daemons' logrus loggers: text or JSON, to stderr (journald under
// systemd) or to daily-rolled files, with a global level and per-session levels that can be
// changed at run time (signals, admin API). Every level change is logged.
package logging

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Options configures New.
type Options struct {
	// Format is "text" or "json". If empty, "text" is used.
	Format string
	// Level is the initial global level. If zero (panic), info is used: a logger that logs only
	// panics is never what an operator wants.
	Level logrus.Level
	// Dir, if set, makes the logger write to daily-rolled files Dir/Prefix-YYYY-MM-DD.log instead of
	// Output.
	Dir string
	// Prefix names the daily files. If empty, "smartproxy" is used.
	Prefix string
	// Output is where logs go when Dir is empty. If nil, os.Stderr is used.
	Output io.Writer
	// Retention limits the daily files kept in Dir. The zero value keeps every file.
	Retention Retention
}

// Retention says which daily log files are removed. A file's day is the date in its name; the
// file being written is never removed. Old files are removed when a file is opened (at start and
// at each new day).
type Retention struct {
	// MaxAge removes files whose day is more than MaxAge before today. If zero, age removes none.
	MaxAge time.Duration
	// MaxFiles keeps at most this many files (the newest, today's included). If zero, the count
	// removes none.
	MaxFiles int
}

// AddRetentionFlags registers --log-max-age and --log-max-files on fs, with the defaults the
// daemons document (30 days, no count limit), and returns the Retention they fill in.
func AddRetentionFlags(fs *flag.FlagSet) *Retention {
	r := &Retention{MaxAge: 30 * 24 * time.Hour}
	fs.Var((*ageFlag)(&r.MaxAge), "log-max-age", "with --log-dir: remove daily log files older than `AGE` (days as 30d, or a duration such as 36h; 0 keeps all)")
	fs.IntVar(&r.MaxFiles, "log-max-files", 0, "with --log-dir: keep at most `N` daily log files (0: no limit)")
	return r
}

// ageFlag is a flag.Value for a retention age in days ("30d") or as a Go duration ("36h").
type ageFlag time.Duration

func (a *ageFlag) String() string {
	if a == nil || *a == 0 {
		return "0"
	}
	d := time.Duration(*a)
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func (a *ageFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100000 {
			return fmt.Errorf("%q: want a number of days such as 30d or a duration such as 36h", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return fmt.Errorf("%q: want a number of days such as 30d or a duration such as 36h", s)
		}
	}
	*a = ageFlag(d)
	return nil
}

// New builds a logger from opts. The returned Closer closes the daily file, if any.
func New(opts Options) (*logrus.Logger, io.Closer, error) {
	log := logrus.New()
	switch strings.ToLower(opts.Format) {
	case "", "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano, DisableColors: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	default:
		return nil, nil, fmt.Errorf("log format %q: want text or json", opts.Format)
	}
	level := opts.Level
	if level == logrus.PanicLevel {
		level = logrus.InfoLevel
	}
	log.SetLevel(level)
	var closer io.Closer = nopCloser{}
	var out io.Writer = os.Stderr
	if opts.Output != nil {
		out = opts.Output
	}
	if opts.Dir != "" {
		prefix := opts.Prefix
		if prefix == "" {
			prefix = "smartproxy"
		}
		if opts.Retention.MaxFiles < 0 || opts.Retention.MaxAge < 0 {
			return nil, nil, fmt.Errorf("log retention %+v: negative limits", opts.Retention)
		}
		df, err := NewDailyFile(opts.Dir, prefix, opts.Retention, nil)
		if err != nil {
			return nil, nil, err
		}
		out, closer = df, df
	}
	log.SetOutput(&lockedWriter{w: out})
	return log, closer, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// Discard returns a logger that writes nothing: the default of a component
// whose configuration has no logger.
func Discard() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// lockedWriter serialises writes from several loggers that share one output (the global logger
// and per-session loggers), so that lines never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// DailyFile is an io.Writer that appends to Dir/Prefix-YYYY-MM-DD.log and switches to a new file
// at local midnight, removing the files its Retention no longer keeps. It is safe for concurrent
// use.
type DailyFile struct {
	dir, prefix string
	keep        Retention
	now         func() time.Time

	mu  sync.Mutex
	day string
	f   *os.File
}

// NewDailyFile opens the file for today in dir, creating dir (0750) if needed, and removes the
// files keep does not keep. now is the clock; if nil, time.Now is used.
func NewDailyFile(dir, prefix string, keep Retention, now func() time.Time) (*DailyFile, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	d := &DailyFile{dir: dir, prefix: prefix, keep: keep, now: now}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.rollLocked(); err != nil {
		return nil, err
	}
	return d, nil
}

// Name returns the path of the file currently written.
func (d *DailyFile) Name() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return ""
	}
	return d.f.Name()
}

func (d *DailyFile) rollLocked() error {
	day := d.now().Format("2006-01-02")
	if d.f != nil && day == d.day {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(d.dir, d.prefix+"-"+day+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	if d.f != nil {
		d.f.Close()
	}
	d.f, d.day = f, day
	d.pruneLocked()
	return nil
}

// pruneLocked removes this prefix's daily files that are older than keep.MaxAge or beyond the
// newest keep.MaxFiles. Files of other names are never touched; a file that cannot be removed
// is left for the next day.
func (d *DailyFile) pruneLocked() {
	if d.keep.MaxAge <= 0 && d.keep.MaxFiles <= 0 {
		return
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return
	}
	today, err := time.ParseInLocation("2006-01-02", d.day, time.UTC)
	if err != nil {
		return
	}
	type dated struct {
		name string
		day  time.Time
	}
	var files []dated
	for _, e := range entries {
		day, ok := strings.CutPrefix(e.Name(), d.prefix+"-")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		day, ok = strings.CutSuffix(day, ".log")
		if !ok {
			continue
		}
		t, err := time.ParseInLocation("2006-01-02", day, time.UTC) // UTC: whole days, no DST shift
		if err != nil || day == d.day {
			continue // not one of ours, or the file being written
		}
		files = append(files, dated{e.Name(), t})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].day.After(files[j].day) })
	for i, f := range files {
		tooOld := d.keep.MaxAge > 0 && today.Sub(f.day) > d.keep.MaxAge
		tooMany := d.keep.MaxFiles > 0 && i+1 >= d.keep.MaxFiles // today's file counts as one
		if tooOld || tooMany {
			os.Remove(filepath.Join(d.dir, f.name))
		}
	}
}

// Write appends p to the current day's file.
func (d *DailyFile) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.rollLocked(); err != nil {
		if d.f == nil {
			return 0, err
		}
		// Keep writing to yesterday's file rather than losing lines.
	}
	if d.f == nil {
		return 0, errors.New("log file closed")
	}
	return d.f.Write(p)
}

// Close closes the current file.
func (d *DailyFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// ParseLevel parses a level name as logrus does, with "warning"/"warn" and case-insensitivity.
func ParseLevel(s string) (logrus.Level, error) {
	l, err := logrus.ParseLevel(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("log level %q: want one of panic, fatal, error, warn, info, debug, trace", s)
	}
	return l, nil
}
