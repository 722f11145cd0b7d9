// Package diskfile writes the client's state files durably: atomically replaced files and
// synced directories, so that a crash or power loss leaves either the old or the new content,
// never a mix, and never a rename that is lost.
package diskfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteAtomic writes data to path with the given mode: a temporary file in the same directory
// is written, synced and renamed over path, and the directory is synced so that the rename
// survives a crash.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	return WriteAtomicFrom(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteAtomicFrom is WriteAtomic for content that fill writes (streamed, so that it need not
// be in memory). If fill fails, path is left as it was and the error is returned.
func WriteAtomicFrom(path string, mode os.FileMode, fill func(w io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// SyncDir syncs a directory, so that the creation, rename or removal of its entries is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// MkdirPrivate creates dir (and its parents) with mode 0700 if it does not exist, and refuses a
// dir that exists with wider permissions or is not a directory: it holds secrets.
func MkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o; it holds secrets and must not be accessible to others (chmod 0700)", dir, st.Mode().Perm())
	}
	return nil
}
