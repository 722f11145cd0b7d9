// Package pidfile manages a daemon's PID file with stale-file detection.
//
// The owner of a PID file holds an exclusive advisory lock (flock) on it for as long as it runs.
// A second start finds the lock taken and fails with an error naming the owner's PID. A file whose
// lock is free was left behind by a process that is gone (crash, kill -9, power loss): it is
// stale, and Acquire takes it over and reports it, so the caller can log a warning. Using the lock
// instead of probing the PID with kill(2) makes the check immune to PID reuse after a reboot.
package pidfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// ErrRunning is matched (errors.Is) by the error Acquire returns when a live process owns the file.
var ErrRunning = errors.New("another instance is running")

// RunningError reports that a live process holds the PID file.
type RunningError struct {
	Path   string // the PID file
	PID    int    // the owner's PID as written in the file; 0 if it could not be read
	Daemon string // the daemon's name, if the caller gave one (Claim)
}

func (e *RunningError) Error() string {
	if e.Daemon != "" && e.PID > 0 {
		return fmt.Sprintf("another %s is running with PID %d (PID file %s)", e.Daemon, e.PID, e.Path)
	}
	if e.PID > 0 {
		return fmt.Sprintf("pid file %s: another instance is running with pid %d", e.Path, e.PID)
	}
	return fmt.Sprintf("pid file %s: another instance is running (its pid could not be read)", e.Path)
}

// Is makes errors.Is(err, ErrRunning) true.
func (e *RunningError) Is(target error) bool { return target == ErrRunning }

// File is an acquired PID file. It is released by Release.
type File struct {
	path string
	f    *os.File
	// StalePID is the PID found in a stale file that Acquire replaced, or 0 if the file was new.
	StalePID int
	// Stale is true when Acquire replaced a file left behind by a process that is gone.
	Stale bool
}

// Path returns the PID file's path.
func (p *File) Path() string { return p.path }

// Acquire creates or takes over the PID file at path and writes the current process's PID into it.
// If a live process holds the file it returns a *RunningError. If the file was stale, the returned
// File has Stale set and StalePID holds the PID that was in it.
func Acquire(path string) (*File, error) {
	if path == "" {
		return nil, errors.New("pid file: empty path")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pid file: %w", err)
	}
	old, _ := readPID(f) // garbage in a stale file is replaced like any stale content
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &RunningError{Path: path, PID: old}
		}
		return nil, fmt.Errorf("pid file %s: lock: %w", path, err)
	}
	// The file may have been removed and recreated by its previous owner between our open and our
	// lock; then we hold a lock on an unlinked inode. Check that the path still names our file.
	if same, err := samePath(f, path); err != nil || !same {
		f.Close()
		if err == nil {
			err = errors.New("file was replaced while it was being locked")
		}
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	p := &File{path: path, f: f}
	if fileSize(f) > 0 {
		p.Stale = true
		p.StalePID = old
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	return p, nil
}

// Release removes the PID file and drops the lock. It is safe to call more than once.
func (p *File) Release() error {
	if p == nil || p.f == nil {
		return nil
	}
	err := os.Remove(p.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	p.f = nil
	return err
}

func readPID(f *os.File) (int, error) {
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file holds %q, not a pid", s)
	}
	return pid, nil
}

func fileSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

func samePath(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// Claim is Acquire for a daemon: a live owner is an error that names the daemon and the owner's
// PID, and a stale file that was replaced is logged as a warning on log.
func Claim(path, daemon string, log logrus.FieldLogger) (*File, error) {
	pf, err := Acquire(path)
	if err != nil {
		var re *RunningError
		if errors.As(err, &re) {
			re.Daemon = daemon
		}
		return nil, err
	}
	if pf.Stale {
		log.WithFields(logrus.Fields{"pid_file": pf.Path(), "stale_pid": pf.StalePID}).
			Warn("replaced a stale PID file left behind by a process that is gone")
	}
	return pf, nil
}
