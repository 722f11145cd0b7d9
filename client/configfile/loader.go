package configfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"smartproxy/client"
	"smartproxy/client/configspec"
)

// Loader reads one configuration file, now and on every reload, and numbers its versions. It
// remembers the last good configuration: a file that fails to load leaves it in force.
//
// Versions: a file with a "version" field gets that version, which must be higher than the
// version in force whenever the content changes. A file without one gets a derived version:
// the content's SHA-256 decides whether anything changed (reloading identical files keeps the
// version), and a change gets the current time in Unix milliseconds, or the previous version + 1
// if that is higher. Derived versions therefore keep growing across restarts of the client, so
// the server, which applies only a version higher than the one it has, accepts the configuration
// of a restarted client.
//
// A Loader is safe for concurrent use.
type Loader struct {
	path string
	now  func() time.Time

	mu   sync.Mutex
	last *client.Snapshot
}

// NewLoader returns a Loader for the file at path. now is the clock for certificate validity and
// derived versions; if nil, time.Now is used.
func NewLoader(path string, now func() time.Time) (*Loader, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if now == nil {
		now = time.Now
	}
	return &Loader{path: abs, now: now}, nil
}

// Path returns the absolute path of the configuration file.
func (l *Loader) Path() string { return l.path }

// Current returns the configuration in force, or nil before the first successful Load.
func (l *Loader) Current() *client.Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Result is the outcome of a successful Load.
type Result struct {
	// Snapshot is the configuration now in force.
	Snapshot *client.Snapshot
	// Changed is false when the file's content equals the configuration already in force
	// (Snapshot is then that configuration, with its version).
	Changed bool
	// Warnings are problems that do not prevent using the configuration (a certificate close to
	// expiry, an out-of-date CRL, a key file readable by others), each naming its field.
	Warnings []string
}

// Load reads and checks the file. On success the result is in force; on failure the error is an
// *Error naming every problem's field (or an error reading the file), and the configuration in
// force stays as it was.
func (l *Loader) Load() (*Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	data, err := os.ReadFile(l.path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var f File
	if err := decode(data, &f); err != nil {
		fe := err.(*FieldError)
		return nil, &Error{Path: l.path, Problems: []*FieldError{fe}}
	}
	now := l.now()
	built, err := configspec.Build(spec(&f, filepath.Dir(l.path)), now)
	if err != nil {
		var se *configspec.Error
		if !errors.As(err, &se) {
			return nil, fmt.Errorf("config file %s: %w", l.path, err)
		}
		probs := make([]*FieldError, len(se.Problems))
		for i, p := range se.Problems {
			probs[i] = &FieldError{Field: p.Field, Msg: p.Msg}
		}
		return nil, &Error{Path: l.path, Problems: probs}
	}
	digest := built.Snapshot.Digest
	res := &Result{Warnings: built.Warnings}
	if l.last != nil && l.last.Digest == digest && (f.Version == 0 || f.Version == l.last.Version) {
		res.Snapshot = l.last
		return res, nil
	}
	var version uint64
	switch {
	case f.Version != 0:
		if l.last != nil && f.Version <= l.last.Version {
			return nil, &Error{Path: l.path, Problems: []*FieldError{{Field: "version",
				Msg: fmt.Sprintf("%d is not higher than %d, the version in force; raise it, or remove the field to let the client number versions", f.Version, l.last.Version)}}}
		}
		version = f.Version
	default:
		version = uint64(max(now.UnixMilli(), 1))
		if l.last != nil && version <= l.last.Version {
			version = l.last.Version + 1
		}
	}
	snap := built.Snapshot
	snap.Version = version
	snap.Source = "file " + l.path
	snap.Origin = client.OriginFile
	l.last = snap
	res.Snapshot = snap
	res.Changed = true
	return res, nil
}
