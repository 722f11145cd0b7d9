package backendsync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/client/internal/diskfile"
)

// Names in the state directory.
const (
	stateFile = "state.json"
	crlDir    = "crls"
	spoolDir  = "spool"
	// stateFormat is the version of state.json's layout.
	stateFormat = 1
	// maxStateBytes bounds state.json when it is read back (a document with thousands of
	// partners and certificates is a few MiB).
	maxStateBytes = 64 << 20
)

// savedState is the content of state.json: the last good configuration document.
type savedState struct {
	// Format is stateFormat.
	Format int `json:"format"`
	// ETag is the document's ETag as the backend sent it.
	ETag string `json:"etag"`
	// Version is the snapshot version the document was pushed with.
	Version uint64 `json:"version"`
	// SavedAt is when the document was saved.
	SavedAt time.Time `json:"saved_at"`
	// Document is the configuration document.
	Document *apiv1.ConfigDocument `json:"document"`
}

// store is the state directory. It is used by one goroutine at a time (Initial, then the
// configuration loop).
type store struct {
	dir string
}

func (s *store) statePath() string { return filepath.Join(s.dir, stateFile) }

// crlPath is the file of the CRL with the given SHA-256 (hexadecimal, as in the document).
func (s *store) crlPath(sum string) string {
	return filepath.Join(s.dir, crlDir, strings.ToLower(sum)+".der")
}

// init creates the directories.
func (s *store) init() error {
	if err := diskfile.MkdirPrivate(s.dir); err != nil {
		return err
	}
	return diskfile.MkdirPrivate(filepath.Join(s.dir, crlDir))
}

// load reads state.json. It returns nil, nil when there is none.
func (s *store) load() (*savedState, error) {
	f, err := os.Open(s.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", s.statePath(), maxStateBytes)
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", s.statePath(), err)
	}
	if st.Format != stateFormat || st.Document == nil || st.Version == 0 {
		return nil, fmt.Errorf("%s: format %d without a document or version; ignored", s.statePath(), st.Format)
	}
	return &st, nil
}

// save writes state.json atomically.
func (s *store) save(st *savedState) error {
	st.Format = stateFormat
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return diskfile.WriteAtomic(s.statePath(), data, 0o600)
}

// haveCRL reports whether the CRL described by info is on disk with its size. The content was
// checked against its SHA-256 when it was written (the name is the hash).
func (s *store) haveCRL(info *apiv1.CRLInfo) bool {
	st, err := os.Stat(s.crlPath(info.SHA256))
	return err == nil && st.Mode().IsRegular() && st.Size() == info.Size
}

// verifyCRL checks the file of info against its size and SHA-256, reading it in pieces.
func (s *store) verifyCRL(info *apiv1.CRLInfo) error {
	f, err := os.Open(s.crlPath(info.SHA256))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != info.Size || !strings.EqualFold(hex.EncodeToString(h.Sum(nil)), info.SHA256) {
		return fmt.Errorf("CRL file %s does not match its size and SHA-256", s.crlPath(info.SHA256))
	}
	return nil
}

// writeCRL stores a CRL that fill streams, atomically, after checking its size and SHA-256
// against info. It returns the number of bytes written.
func (s *store) writeCRL(info *apiv1.CRLInfo, fill func(w io.Writer) error) error {
	var h hash.Hash
	var cw *countWriter
	err := diskfile.WriteAtomicFrom(s.crlPath(info.SHA256), 0o600, func(w io.Writer) error {
		h = sha256.New()
		cw = &countWriter{w: io.MultiWriter(w, h)}
		if err := fill(cw); err != nil {
			return err
		}
		if cw.n != info.Size {
			return fmt.Errorf("received %d bytes, the document announces %d", cw.n, info.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, info.SHA256) {
			return fmt.Errorf("received content with SHA-256 %s, the document announces %s", got, info.SHA256)
		}
		return nil
	})
	return err
}

// prune removes CRL files that doc does not name, and temporary files left by a crash.
func (s *store) prune(doc *apiv1.ConfigDocument) (removed int, err error) {
	keep := make(map[string]bool, len(doc.CRLs))
	for _, c := range doc.CRLs {
		keep[strings.ToLower(c.SHA256)+".der"] = true
	}
	dir := filepath.Join(s.dir, crlDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, err
		}
		removed++
	}
	if removed > 0 {
		return removed, diskfile.SyncDir(dir)
	}
	return 0, nil
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
