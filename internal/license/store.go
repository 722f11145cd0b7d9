package license

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// FileMode is the mode of a stored license file. A license is not secret.
const FileMode = 0o644

// Store verifies file with keys (as Parse does) and, only if it verifies,
// replaces the license at path atomically: it writes a temporary file in the
// same directory, syncs it, renames it over path and syncs the directory,
// so that path holds either the old or the new license, whole. A file that
// fails verification leaves path untouched. Store does not check the license
// against a proxy ID or time; callers that must not replace a valid license
// by one for another host call License.Check on Parse's result first.
func Store(path string, file []byte, keys map[string]ed25519.PublicKey) (*License, error) {
	l, err := Parse(file, keys)
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(path, file); err != nil {
		return nil, fmt.Errorf("license: store %s: %w", path, err)
	}
	return l, nil
}

func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(FileMode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads and verifies the license file at path. A missing file gives an
// error that matches os.ErrNotExist.
func Load(path string, keys map[string]ed25519.PublicKey) (*License, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("license: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("license: read %s: %w", path, err)
	}
	l, err := Parse(data, keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}
