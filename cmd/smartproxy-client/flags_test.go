package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// base is a minimal valid daemon command line.
var base = []string{"-S", "dmz.example.com", "--config", "c.json", "--tunnel-cert", "c.pem", "--tunnel-key", "k.pem", "--tunnel-ca", "ca.pem"}

func args(extra ...string) []string { return append(append([]string(nil), base...), extra...) }

// serverArgs is base with its -S replaced by the given -S values.
func serverArgs(servers ...string) []string {
	out := append([]string(nil), base[2:]...)
	for _, s := range servers {
		out = append(out, "-S", s)
	}
	return out
}

// backendArgs is a daemon command line with the backend instead of --config.
func backendArgs(extra ...string) []string {
	return append([]string{"-S", "dmz.example.com", "--tunnel-cert", "c.pem", "--tunnel-key", "k.pem", "--tunnel-ca", "ca.pem"}, extra...)
}

// wantServers checks the parsed -S list.
func wantServers(want ...string) func(t *testing.T, o *options) {
	return func(t *testing.T, o *options) {
		t.Helper()
		if got := []string(o.servers); !slices.Equal(got, want) {
			t.Errorf("servers = %q, want %q", got, want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, o *options)
	}{
		{"defaults", args(), func(t *testing.T, o *options) {
			if o.servers.String() != "dmz.example.com:2878" || o.streams != 1 || o.daemon.AdminAddr != defaultAdminAddr || o.daemon.MetricsAddr != defaultMetricsAddr ||
				o.daemon.Log.Level != logrus.InfoLevel || o.daemon.Log.Format != "text" || !strings.HasSuffix(o.daemon.PIDFile, "/"+pidFileName) {
				t.Errorf("options = %+v, want the documented defaults", o)
			}
		}},
		{"server with port", serverArgs("192.0.2.1:9000"), wantServers("192.0.2.1:9000")},
		{"IPv6 server without port", serverArgs("2001:db8::1"), wantServers("[2001:db8::1]:2878")},
		{"bracketed IPv6 server", serverArgs("[::1]"), wantServers("[::1]:2878")},
		{"servers as a comma list", serverArgs("dmz1, dmz2:9000"), wantServers("dmz1:2878", "dmz2:9000")},
		{"servers as repeated flags", serverArgs("dmz1", "[2001:db8::1]"), wantServers("dmz1:2878", "[2001:db8::1]:2878")},
		{"servers mixed", serverArgs("dmz1,dmz2", "dmz3:1"), wantServers("dmz1:2878", "dmz2:2878", "dmz3:1")},
		{"debug", args("-d", "--log-dir", "/var/log/x", "--log-level", "warn"), func(t *testing.T, o *options) {
			if !o.debug || o.daemon.Log.Level != logrus.DebugLevel || o.daemon.Log.Dir != "" {
				t.Errorf("-d: level %v dir %q, want debug to stderr", o.daemon.Log.Level, o.daemon.Log.Dir)
			}
		}},
		{"source address", args("-o", "10.1.2.3"), func(t *testing.T, o *options) {
			if o.sourceIP != "10.1.2.3" {
				t.Errorf("sourceIP = %q, want 10.1.2.3", o.sourceIP)
			}
		}},
		{"pid file disabled", args("--pid-file="), func(t *testing.T, o *options) {
			if o.daemon.PIDFile != "" {
				t.Errorf("pidFile = %q, want empty", o.daemon.PIDFile)
			}
		}},
		{"backend URL with credentials", backendArgs("-U", "https://proxy:s3cret@api.example.com:8443/v1"), func(t *testing.T, o *options) {
			b := o.backend
			if b == nil || b.URL.String() != "https://api.example.com:8443/v1" || b.User != "proxy" || !b.Password.Equal("s3cret") {
				t.Fatalf("backend = %+v, want URL without credentials, user proxy and the password", b)
			}
			if got := b.full(); got != "https://proxy:s3cret@api.example.com:8443/v1" {
				t.Errorf("full() = %q, want the URL with its credentials", got)
			}
			if s := fmt.Sprintf("%v %+v %s %v", b, b, o.token, b.Password); strings.Contains(s, "s3cret") {
				t.Errorf("printing the options shows a secret: %s", s)
			}
			if o.stateDir != defaultStateDir {
				t.Errorf("stateDir = %q, want the default %q", o.stateDir, defaultStateDir)
			}
		}},
		{"backend with token and TLS options", backendArgs("-U", "https://api.example.com/", "-T", "tok-123", "--state-dir", "/tmp/st",
			"--api-ca", "api-ca.pem", "--api-fingerprint", "AB:CD"), func(t *testing.T, o *options) {
			if o.backend == nil || o.backend.User != "" || !o.token.Equal("tok-123") || o.stateDir != "/tmp/st" || o.apiCA != "api-ca.pem" || o.apiFingerprint != "AB:CD" {
				t.Errorf("options = %+v, want the backend with token, state dir, CA and fingerprint", o)
			}
			if s := fmt.Sprintf("%v %+v", o, o.token); strings.Contains(s, "tok-123") {
				t.Errorf("printing the options shows the token: %s", s)
			}
		}},
		{"check needs only the config", []string{"--check", "--config", "c.json"}, func(t *testing.T, o *options) {
			if !o.check {
				t.Error("check = false, want true")
			}
		}},
		{"help", []string{"-h"}, func(t *testing.T, o *options) {
			if !o.help {
				t.Error("help = false, want true")
			}
		}},
		{"version", []string{"-v"}, func(t *testing.T, o *options) {
			if !o.version {
				t.Error("version = false, want true")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(tt.args)
			if err != nil {
				t.Fatalf("parseArgs(%q) = %v, want no error", tt.args, err)
			}
			tt.check(t, o)
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool // a usage error (exit status 2)
	}{
		{"backend and config", args("-U", "https://api.example.com/", "-T", "tok"), "not both", true},
		{"backend without token", backendArgs("-U", "https://api.example.com/"), "a token is required with -U", true},
		{"backend with user and token", backendArgs("-U", "https://u:s3cret@api.example.com/", "-T", "tok"), "give one of them", true},
		{"backend user without name", backendArgs("-U", "https://:s3cret@api.example.com/"), "without a user name", true},
		{"backend without state dir", backendArgs("-U", "https://api.example.com/", "-T", "tok", "--state-dir="), "--state-dir", true},
		{"backend and check", []string{"-U", "https://api.example.com/", "-T", "tok", "--check"}, "--check checks a local configuration file", true},
		{"token without backend", args("-T", "tok"), "belong to -U", true},
		{"API CA without backend", args("--api-ca", "ca.pem"), "belong to -U", true},
		{"no source", []string{"-S", "dmz"}, "-U url (the backend API) or --config FILE", true},
		{"no server", []string{"--config", "c.json"}, "-S host[:port] is required", true},
		{"bad server port", args("-S", "dmz:99999"), "-S: ", true},
		{"server without host", args("-S", ":2878"), "has no host", true},
		{"server twice", serverArgs("dmz1,dmz2", "dmz1:2878"), "dmz1:2878 is given twice", true},
		{"server twice in one list", serverArgs("dmz1,dmz1"), "given twice", true},
		{"empty server in a list", serverArgs("dmz1,,dmz2"), "an empty server", true},
		{"bad server in a list", serverArgs("dmz1,dmz2:0"), "port", true},
		{"bad source address", args("-o", "eth0"), `-o: "eth0" is not an IP address`, true},
		{"http backend", args("-U", "http://api.example.com/"), "want https", true},
		{"backend without host", args("-U", "https:///v1"), "no host", true},
		{"backend with query", args("-U", "https://api.example.com/?x=1"), "query", true},
		{"no tunnel key", []string{"-S", "dmz", "--config", "c.json", "--tunnel-cert", "c.pem", "--tunnel-ca", "ca.pem"}, "--tunnel-key FILE is required", true},
		{"streams", args("--streams", "0"), "--streams", true},
		{"admin not loopback", args("--admin", "0.0.0.0:2880"), "--admin", true},
		{"metrics not loopback", args("--metrics", "192.0.2.1:2882"), "--metrics", true},
		{"pprof without metrics", args("--pprof", "--metrics="), "--pprof", true},
		{"log format", args("--log-format", "xml"), "--log-format", true},
		{"log level", args("--log-level", "loud"), "--log-level", true},
		{"log level hides errors", args("--log-level", "fatal"), "would hide errors", true},
		{"unknown flag", args("--frobnicate"), "frobnicate", true},
		{"stray argument", args("extra"), `unexpected argument "extra"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseArgs(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseArgs(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			var ue *usageError
			if got := errors.As(err, &ue); got != tt.usage {
				t.Errorf("parseArgs(%q) usage error = %v, want %v", tt.args, got, tt.usage)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("parseArgs(%q) = %q shows a password", tt.args, err)
			}
		})
	}
	// A malformed URL with a password must not echo it.
	if _, err := parseArgs(args("-U", "https://u:s3cret@api example.com/")); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("parseArgs(bad URL with password) = %v, want an error without the password", err)
	}
}

// TestTokenSources checks the ways to give the backend token: -T, --token-file (mode checked) and
// the systemd credential in $CREDENTIALS_DIRECTORY, and that the token never shows in String.
func TestTokenSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask must not weaken the test
			t.Fatal(err)
		}
		return p
	}
	good := write("token", "tok-from-file\n", 0o600)
	open := write("open", "tok", 0o644)
	empty := write("empty", " \n", 0o600)
	twoWords := write("two", "tok other\n", 0o400)
	credDir := filepath.Join(dir, "creds")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(credDir, credentialName), []byte("tok-from-credential"), 0o400); err != nil {
		t.Fatal(err)
	}
	backend := func(extra ...string) []string {
		return backendArgs(append([]string{"-U", "https://api.example.com/"}, extra...)...)
	}

	tests := []struct {
		name    string
		args    []string
		creds   string // $CREDENTIALS_DIRECTORY
		want    string // the token, when no error
		wantErr string
	}{
		{"flag", backend("-T", "tok-from-flag"), "", "tok-from-flag", ""},
		{"file", backend("--token-file", good), "", "tok-from-file", ""},
		{"credential", backend(), credDir, "tok-from-credential", ""},
		{"flag wins over credential", backend("-T", "tok-from-flag"), credDir, "tok-from-flag", ""},
		{"file wins over credential", backend("--token-file", good), credDir, "tok-from-file", ""},
		{"credential directory without the credential", backend(), dir + "/none", "", "a token is required"},
		{"flag and file", backend("-T", "x", "--token-file", good), "", "", "not both"},
		{"file readable by others", backend("--token-file", open), "", "", "readable by others (mode 0644)"},
		{"empty file", backend("--token-file", empty), "", "", "is empty"},
		{"two words", backend("--token-file", twoWords), "", "", "more than one word"},
		{"missing file", backend("--token-file", filepath.Join(dir, "missing")), "", "", "no such file"},
		{"file without backend", args("--token-file", good), "", "", "belong to -U"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CREDENTIALS_DIRECTORY", tt.creds)
			o, err := parseArgs(tt.args)
			if tt.wantErr != "" {
				var ue *usageError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ue) {
					t.Fatalf("parseArgs(%q) = %v, want a usage error containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q) = %v", tt.args, err)
			}
			if string(o.token) != tt.want {
				t.Errorf("token = %q, want %q", string(o.token), tt.want)
			}
			if strings.Contains(o.String(), tt.want) {
				t.Errorf("options.String() = %q shows the token", o.String())
			}
		})
	}
}
