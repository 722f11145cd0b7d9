package transport

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/internal/pki"
)

func TestCertSourceReload(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	f := writeIdentity(t, dir, "server", p.server, p.ca)
	log, hook := newLogger(t)
	s := newSource(t, f, log)
	if got, want := s.Leaf().SerialNumber, p.server.Cert.SerialNumber; got.Cmp(want) != 0 {
		t.Fatalf("Leaf() serial = %v, want %v", got, want)
	}
	if s.Roots() == nil {
		t.Fatal("Roots() = nil")
	}

	changed, err := s.Reload()
	if err != nil || changed {
		t.Errorf("Reload() without change = %v, %v, want false, nil", changed, err)
	}

	next, err := p.ca.Issue(pki.Request{CommonName: "smartproxy-server", DNSNames: []string{"localhost"}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	// A certificate without its key (half-way through a copy) is refused and
	// the old pair stays.
	replaceFile(t, f.cert, next.CertPEM, pki.CertFileMode)
	changed, err = s.Reload()
	if err == nil || changed {
		t.Errorf("Reload() with mismatched key = %v, %v, want false and an error", changed, err)
	}
	if s.Leaf().SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
		t.Errorf("failed reload replaced the certificate")
	}
	if countEntries(hook, func(e *logrus.Entry) bool {
		return e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "reload failed")
	}) != 1 {
		t.Errorf("failed reload not logged as one error:\n%s", dumpEntries(hook))
	}
	replaceFile(t, f.key, next.KeyPEM, pki.KeyFileMode)
	changed, err = s.Reload()
	if err != nil || !changed {
		t.Errorf("Reload() with new pair = %v, %v, want true, nil", changed, err)
	}
	if got, want := s.Leaf().SerialNumber, next.Cert.SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("Leaf() serial after reload = %v, want %v", got, want)
	}

	// Broken CA file.
	replaceFile(t, f.ca, []byte("not PEM"), pki.CertFileMode)
	if _, err := s.Reload(); err == nil {
		t.Errorf("Reload() with broken CA file = nil error")
	}
	replaceFile(t, f.ca, next.CertPEM, pki.CertFileMode)
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("Reload() with a leaf as CA = %v, want not-a-CA error", err)
	}
	os.Remove(f.ca)
	if _, err := s.Reload(); err == nil {
		t.Errorf("Reload() with missing CA file = nil error")
	}
	if s.Roots() == nil || s.Leaf().SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("failed reloads changed the current set")
	}
}

func TestCertSourceErrors(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	f := writeIdentity(t, dir, "c", p.client, p.ca)
	tests := []struct {
		name string
		cfg  CertSourceConfig
		want string
	}{
		{"no files", CertSourceConfig{}, "needs a certificate"},
		{"missing cert", CertSourceConfig{CertFile: filepath.Join(dir, "nope"), KeyFile: f.key, CAFile: f.ca}, "no such file"},
		{"key as CA", CertSourceConfig{CertFile: f.cert, KeyFile: f.key, CAFile: f.key}, "want CERTIFICATE"},
		{"swapped key", CertSourceConfig{CertFile: f.cert, KeyFile: f.ca, CAFile: f.ca}, "load"},
		{"negative interval", CertSourceConfig{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca, CheckInterval: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCertSource(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewCertSource(%+v) = %v, want error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// TestCertSourceRun: the periodic check notices replaced files by itself.
func TestCertSourceRun(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	f := writeIdentity(t, dir, "server", p.server, p.ca)
	s, err := NewCertSource(CertSourceConfig{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca, CheckInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	next, err := p.ca.Issue(pki.Request{CommonName: "rotated", Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	// Write the key first, then the certificate: the check may see the
	// mismatched state in between and must keep the old pair until both are
	// there. The new certificate is longer (chain identical, other CN), so
	// its size differs even when the file system's time stamps are coarse.
	replaceFile(t, f.key, next.KeyPEM, pki.KeyFileMode)
	replaceFile(t, f.cert, next.CertPEM, pki.CertFileMode)
	deadline := time.Now().Add(testTimeout)
	for s.Leaf().Subject.CommonName != "rotated" {
		if time.Now().After(deadline) {
			t.Fatalf("Run did not pick up the rotated certificate within %v", testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCertRotation replaces the server's files and calls Reload: a new
// connection sees the new certificate while an established stream keeps
// working.
func TestCertRotation(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	sf := writeIdentity(t, dir, "server", p.server, p.ca)
	cf := writeIdentity(t, dir, "client", p.client, p.ca)
	serverSrc := newSource(t, sf, nil)
	clientSrc := newSource(t, cf, nil)
	srv, err := NewServer(ServerConfig{Credentials: serverSrc, OnStream: echoHandler})
	if err != nil {
		t.Fatal(err)
	}
	addr := runServer(t, srv)

	handles := make(chan *clientStreamHandle, 2)
	c1, err := NewClient(ClientConfig{Address: addr, Credentials: clientSrc, OnStream: collectingHandler(handles)})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c1)
	old := receiveHandle(t, handles)
	if old.peer.Certificate.SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
		t.Fatalf("first connection sees serial %v, want %v", old.peer.Certificate.SerialNumber, p.server.Cert.SerialNumber)
	}

	rotated, err := p.ca.Issue(pki.Request{CommonName: "smartproxy-server", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, sf.cert, rotated.CertPEM, pki.CertFileMode)
	replaceFile(t, sf.key, rotated.KeyPEM, pki.KeyFileMode)
	if changed, err := serverSrc.Reload(); err != nil || !changed {
		t.Fatalf("Reload() = %v, %v, want true, nil", changed, err)
	}

	handles2 := make(chan *clientStreamHandle, 2)
	c2, err := NewClient(ClientConfig{Address: addr, Credentials: clientSrc, OnStream: collectingHandler(handles2)})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c2)
	fresh := receiveHandle(t, handles2)
	if got, want := fresh.peer.Certificate.SerialNumber, rotated.Cert.SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("new connection sees serial %v, want the rotated %v", got, want)
	}
	if err := ping(t, fresh.stream, 2); err != nil {
		t.Errorf("ping on the new connection = %v", err)
	}
	if err := ping(t, old.stream, 1); err != nil {
		t.Errorf("ping on the established stream after rotation = %v", err)
	}

	// Rotating the CA: a client still using a certificate of the old CA is
	// refused by new handshakes.
	newCA, err := pki.NewCA("New tunnel CA")
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, sf.ca, newCA.CertPEM, pki.CertFileMode)
	if _, err := serverSrc.Reload(); err != nil {
		t.Fatal(err)
	}
	err = rawConnect(t, addr, &tls.Config{Certificates: []tls.Certificate{p.client.TLS}, RootCAs: p.ca.Pool(), ServerName: "localhost"})
	if err == nil {
		t.Errorf("client of the old CA accepted after the CA rotation")
	}
	if err := ping(t, old.stream, 3); err != nil {
		t.Errorf("ping on the established stream after CA rotation = %v", err)
	}
}
