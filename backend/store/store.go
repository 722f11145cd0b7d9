package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"smartproxy/internal/logging"
)

// Options configure Open. The zero value opens an existing database with
// the defaults.
type Options struct {
	// Create makes Open create the database file (mode 0600) and its
	// directory (mode 0700) when they do not exist. If false, a missing file
	// is ErrNoDatabase.
	Create bool
	// Readers is the number of read-only connections. If zero, 4.
	Readers int
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection or process. If zero, 10s.
	BusyTimeout time.Duration
	// Now is the clock used for timestamps and validity windows. If nil,
	// time.Now.
	Now func() time.Time
	// Logger receives the errors of PollRevision. If nil, they are
	// discarded.
	Logger logrus.FieldLogger
}

// Store is an open smartproxy-api database. It is safe for concurrent use.
type Store struct {
	// Immutable after Open.
	path string
	w    *sql.DB // exactly one connection; every write transaction
	r    *sql.DB // read-only connections
	now  func() time.Time
	log  logrus.FieldLogger

	mu      sync.Mutex
	rev     int64         // the newest revision this Store has seen
	changed chan struct{} // closed and replaced when rev grows
}

// Open opens the database at path, creating it when opts.Create is set, and
// applies pending schema migrations. It returns a *SchemaError when the
// database was written by a newer binary.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("store: no database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := prepareFile(abs, opts.Create); err != nil {
		return nil, err
	}
	s := &Store{path: abs, now: opts.Now, log: opts.Logger, changed: make(chan struct{})}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = logging.Discard()
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 10 * time.Second
	}
	readers := opts.Readers
	if readers <= 0 {
		readers = 4
	}
	ms := strconv.FormatInt(busy.Milliseconds(), 10)
	s.w, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {ms}, "_foreign_keys": {"1"}, "_journal_mode": {"WAL"},
		"_synchronous": {"NORMAL"}, "_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxIdleTime(0)
	if err := s.migrate(ctx); err != nil {
		s.w.Close()
		return nil, err
	}
	s.r, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {ms}, "_foreign_keys": {"1"}, "_query_only": {"1"},
	}))
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)
	rev, err := s.Revision(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.rev = rev
	return s, nil
}

// dsn builds the driver's URI for path with query parameters q.
func dsn(path string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

// prepareFile checks that path exists, or creates it empty with mode 0600
// (SQLite gives its -wal and -shm files the same mode) when create is set.
func prepareFile(path string, create bool) error {
	st, err := os.Stat(path)
	switch {
	case err == nil:
		if !st.Mode().IsRegular() {
			return fmt.Errorf("store: %s is not a regular file", path)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("store: %w", err)
	case !create:
		return fmt.Errorf("store: %s: %w (run \"smartproxy-api init\" first)", path, ErrNoDatabase)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return fmt.Errorf("store: %w", err)
	}
	return f.Close()
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database connections.
func (s *Store) Close() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}

// write runs fn in one write transaction and commits it when fn returns nil,
// together with the audit entry ctx carries (WithAudit), if any.
// The new revision is published to WaitRevision after the commit.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := s.recordAudit(ctx, tx); err != nil {
		tx.Rollback()
		return err
	}
	var rev int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&rev); err != nil {
		tx.Rollback()
		return fmt.Errorf("store: read revision: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	s.publish(rev)
	return nil
}

// read runs fn in one read-only transaction: every query in fn sees the same
// snapshot of the database.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("store: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// Revision returns the configuration revision stored in the database. It
// grows with every change to what a configuration document contains.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	db := s.r
	if db == nil {
		db = s.w
	}
	if err := db.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("store: read revision: %w", err)
	}
	return rev, nil
}

// publish records rev as seen and wakes WaitRevision callers when it is new.
func (s *Store) publish(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.rev {
		return
	}
	s.rev = rev
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitRevision returns as soon as this Store has seen a revision greater than
// after, with that revision, or with ctx's error when ctx ends first. Changes
// made through this Store are seen at once, changes made by other processes
// when PollRevision reads them.
func (s *Store) WaitRevision(ctx context.Context, after int64) (int64, error) {
	for {
		s.mu.Lock()
		rev, ch := s.rev, s.changed
		s.mu.Unlock()
		if rev > after {
			return rev, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return rev, ctx.Err()
		}
	}
}

// PollRevision reads the revision every interval (if zero, 200ms) so that
// WaitRevision sees changes made by other processes. It returns nil when
// ctx ends.
func (s *Store) PollRevision(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rev, err := s.Revision(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !failing {
				s.log.WithError(err).Error("cannot read the configuration revision")
			}
			failing = true
			continue
		}
		failing = false
		s.publish(rev)
	}
}
