package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smartproxy/internal/pki"
)

func TestRunPKIInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"pki", "init", "--dir", dir, "--server-name", "dmz.example.com,192.0.2.1", "--server-name", "gw.example.com", "--client-name", "inside-1"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run(pki init) = %v; stderr %s", err, stderr.String())
	}
	for _, name := range []string{pki.FileCACert, pki.FileCAKey, pki.FileServerCert, pki.FileServerKey, pki.FileClientCert, pki.FileClientKey} {
		if !strings.Contains(stdout.String(), filepath.Join(dir, name)) {
			t.Errorf("output does not list %s:\n%s", name, stdout.String())
		}
	}
	ca, err := os.ReadFile(filepath.Join(dir, pki.FileCACert))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.ParseCertificatesPEM(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	srvPEM, err := os.ReadFile(filepath.Join(dir, pki.FileServerCert))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pki.ParseCertificatesPEM(srvPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"dmz.example.com", "gw.example.com", "192.0.2.1", "localhost", "127.0.0.1"} {
		if _, err := srv[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	cliPEM, err := os.ReadFile(filepath.Join(dir, pki.FileClientCert))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := pki.ParseCertificatesPEM(cliPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cli[0].Subject.CommonName, "inside-1"; got != want {
		t.Errorf("client CN = %q, want %q", got, want)
	}

	// A second run refuses to overwrite; --force replaces.
	err = run(context.Background(), []string{"pki", "init", "--dir", dir}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second run = %v, want already-exists error", err)
	}
	if err := run(context.Background(), []string{"pki", "init", "--dir", dir, "--force"}, &stdout, &stderr); err != nil {
		t.Errorf("run with --force = %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		want     string
		wantCode int
	}{
		{"pki without subcommand", []string{"pki"}, "missing subcommand", 2},
		{"unknown subcommand", []string{"pki", "issue"}, "unknown subcommand", 2},
		{"no dir", []string{"pki", "init"}, "--dir is required", 2},
		{"extra argument", []string{"pki", "init", "--dir", "x", "y"}, "unexpected argument", 2},
		{"unknown flag", []string{"pki", "init", "--bogus"}, "bogus", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want error containing %q", tt.args, err, tt.want)
			}
			if got := exitCode(err); got != tt.wantCode {
				t.Errorf("exitCode(%v) = %d, want %d", err, got, tt.wantCode)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"pki", "init", "-h"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run(pki init -h) = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(stderr.String(), "--dir") && !strings.Contains(stderr.String(), "-dir") {
		t.Errorf("help output lacks the dir flag:\n%s", stderr.String())
	}
}
