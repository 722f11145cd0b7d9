// Package logging sets up the daemons' logrus loggers: text or JSON, to stderr (journald under
// systemd) or to daily-rolled files, with a global level and per-session levels that can be
// changed at run time (signals, admin API). Every level change is logged.
package logging

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
		df, err := NewDailyFile(opts.Dir, prefix, nil)
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
// at local midnight. It is safe for concurrent use.
type DailyFile struct {
	dir, prefix string
	now         func() time.Time

	mu  sync.Mutex
	day string
	f   *os.File
}

// NewDailyFile opens the file for today in dir, creating dir (0750) if needed. now is the clock;
// if nil, time.Now is used.
func NewDailyFile(dir, prefix string, now func() time.Time) (*DailyFile, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	d := &DailyFile{dir: dir, prefix: prefix, now: now}
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
	return nil
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
