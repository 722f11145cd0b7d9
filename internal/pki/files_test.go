package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.pem")
	if err := WriteKeyFile(p, []byte("one")); err != nil {
		t.Fatalf("WriteKeyFile = %v", err)
	}
	if err := WriteKeyFile(p, []byte("two")); err != nil {
		t.Fatalf("WriteKeyFile(again) = %v", err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "two" {
		t.Errorf("content = %q, want %q", got, "two")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != KeyFileMode {
		t.Errorf("mode = %v, want %v", st.Mode().Perm(), KeyFileMode)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1 (no temporary files left)", len(entries))
	}
	if err := WriteCertFile(filepath.Join(dir, "missing", "c.pem"), []byte("x")); err == nil {
		t.Errorf("WriteCertFile(missing dir) = nil error, want error")
	}
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	files, err := Init(dir, InitOptions{
		ServerNames: []string{"dmz.example.com", "192.0.2.10", "localhost"},
		Hostname:    "gateway1",
	})
	if err != nil {
		t.Fatalf("Init = %v", err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.Path))
		st, err := os.Stat(f.Path)
		if err != nil {
			t.Fatalf("stat %s: %v", f.Path, err)
		}
		want := CertFileMode
		if f.Secret {
			want = KeyFileMode
		}
		if st.Mode().Perm() != want {
			t.Errorf("mode of %s = %v, want %v", f.Path, st.Mode().Perm(), want)
		}
		if f.Purpose == "" {
			t.Errorf("%s has no purpose", f.Path)
		}
	}
	wantNames := []string{FileCACert, FileCAKey, FileServerCert, FileServerKey, FileClientCert, FileClientKey}
	if !slices.Equal(names, wantNames) {
		t.Errorf("Init files = %v, want %v", names, wantNames)
	}

	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ca, err := LoadCA(read(FileCACert), read(FileCAKey))
	if err != nil {
		t.Fatalf("LoadCA(written files) = %v", err)
	}
	srv, err := ParseCertificatesPEM(read(FileServerCert))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "gateway1", "dmz.example.com", "192.0.2.10"} {
		if _, err := srv[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %q: %v", host, err)
		}
	}
	if got, want := len(srv[0].DNSNames), 3; got != want {
		t.Errorf("server DNS names = %v, want 3 distinct names", srv[0].DNSNames)
	}
	cli, err := ParseCertificatesPEM(read(FileClientCert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cli[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Errorf("client certificate verifies for server auth, want failure")
	}
	if got, want := cli[0].Subject.CommonName, "smartproxy-client"; got != want {
		t.Errorf("client CN = %q, want %q", got, want)
	}

	before := read(FileCACert)
	if _, err := Init(dir, InitOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Init(existing) = %v, want already-exists error", err)
	}
	if string(read(FileCACert)) != string(before) {
		t.Errorf("Init(existing) changed %s", FileCACert)
	}
	if _, err := Init(dir, InitOptions{Overwrite: true}); err != nil {
		t.Errorf("Init(Overwrite) = %v", err)
	}
	if string(read(FileCACert)) == string(before) {
		t.Errorf("Init(Overwrite) kept the old CA")
	}
}

func TestInitErrors(t *testing.T) {
	tests := []struct {
		name string
		dir  string
		opts InitOptions
		want string
	}{
		{"empty dir", "", InitOptions{}, "directory is empty"},
		{"empty server name", "d", InitOptions{ServerNames: []string{" "}}, "empty server name"},
		{"URL as server name", "d", InitOptions{ServerNames: []string{"https://x"}}, "neither a DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir
			if dir != "" {
				dir = filepath.Join(t.TempDir(), dir)
			}
			_, err := Init(dir, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Init(%q, %+v) = %v, want error containing %q", dir, tt.opts, err, tt.want)
			}
			if dir != "" {
				if _, err := os.Stat(dir); err == nil {
					t.Errorf("Init created %s despite the error", dir)
				}
			}
		})
	}
}
