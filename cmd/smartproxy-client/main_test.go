package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"smartproxy/client/clienttest"
	"smartproxy/client/configfile"
)

func TestHelpAndVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Fatalf("run(-h) = %v, want nil", err)
	}
	for _, want := range []string{"usage: smartproxy-client", "-U url", "-S host[:port]", "-T token", "-d ", "-o ip", "-h ", "-v ",
		"--config FILE", "--tunnel-cert FILE", "--streams N", "--admin ADDR", "--pid-file FILE", "--log-format FORMAT", "--log-level LEVEL", "--log-dir DIR", "--check"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("run(-h) output lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"-v"}, &stdout, &stderr); err != nil {
		t.Fatalf("run(-v) = %v, want nil", err)
	}
	if got := stdout.String(); !strings.HasPrefix(got, "smartproxy-client ") || strings.Count(got, "\n") != 1 {
		t.Errorf("run(-v) = %q, want one line \"smartproxy-client VERSION\"", got)
	}
	if stderr.Len() != 0 {
		t.Errorf("run(-h/-v) wrote to stderr: %q", stderr.String())
	}
}

func TestCheck(t *testing.T) {
	files := clienttest.NewFiles(t, t.TempDir())
	path := filepath.Join(files.Dir, "client.json")
	c := files.Config("127.0.0.1:3305")
	c.Routes = []configfile.Route{{Name: "partner-ag", ListenAddress: "127.0.0.1:65433", PartnerAddress: "oftp.partner.example:6619", PartnerOdetteID: clienttest.PartnerID}}
	clienttest.WriteConfig(t, path, c)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--check", "--config", path}, &stdout, &stderr); err != nil {
		t.Fatalf("run(--check) = %v, want nil", err)
	}
	for _, want := range []string{path + ": valid", "partners:         3 (2 enabled)", "internal server:  127.0.0.1:3305",
		"route partner-ag: listen 127.0.0.1:65433 -> partner " + clienttest.PartnerID + " at oftp.partner.example:6619"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("run(--check) output lacks %q:\n%s", want, stdout.String())
		}
	}

	bad := files.Config("127.0.0.1:3305")
	bad.Partners[1].AllowedNetworks = []string{"10.0.0.1/8"}
	clienttest.WriteConfig(t, path, bad)
	err := run(context.Background(), []string{"--check", "--config", path}, &stdout, &stderr)
	var ce *configfile.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "partners[1].allowed_networks[0]") {
		t.Errorf("run(--check) with a bad network = %v, want a configfile.Error naming partners[1].allowed_networks[0]", err)
	}
}
