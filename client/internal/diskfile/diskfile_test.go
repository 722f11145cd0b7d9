package diskfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := WriteAtomic(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("Stat() = %v, %v; want mode 0600", st, err)
	}
	// A failing writer leaves the old content and no temporary file.
	werr := errors.New("disk on fire")
	err = WriteAtomicFrom(path, 0o600, func(w io.Writer) error {
		io.WriteString(w, "half")
		return werr
	})
	if !errors.Is(err, werr) {
		t.Errorf("WriteAtomicFrom(failing) = %v, want the writer's error", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "first" {
		t.Errorf("content after a failed write = %q, want the old %q", data, "first")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after a failed write, want only the file", len(entries))
	}
}

func TestMkdirPrivate(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "state")
	if err := MkdirPrivate(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("mode = %04o, want 0700", st.Mode().Perm())
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MkdirPrivate(open); err == nil || !strings.Contains(err.Error(), "0755") {
		t.Errorf("MkdirPrivate(0755 dir) = %v, want an error naming the mode", err)
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if err := MkdirPrivate(file); err == nil {
		t.Error("MkdirPrivate(a file) = nil, want an error")
	}
}
