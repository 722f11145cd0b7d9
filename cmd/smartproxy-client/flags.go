package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"smartproxy/client"
	"smartproxy/internal/daemon"
	"smartproxy/tunnel/transport"
)

// Defaults of the command line.
const (
	defaultAdminAddr   = "127.0.0.1:2880"
	defaultMetricsAddr = "127.0.0.1:2882"
	pidFileName        = "smartproxy-client.pid"
	// defaultStateDir holds the last good configuration from the backend and the event spool
	// (systemd: StateDirectory=smartproxy-client).
	defaultStateDir = "/var/lib/smartproxy-client"
	// credentialName is the systemd credential (LoadCredential=token:FILE) read from
	// $CREDENTIALS_DIRECTORY when neither -T nor --token-file is given.
	credentialName = "token"
)

// options is the parsed command line.
type options struct {
	help, version bool
	usage         func(io.Writer) // prints the help text

	backend    *backendURL // -U
	servers    serverList  // -S, host:port each, with the default port filled in
	token      client.Secret
	debug      bool   // -d
	sourceIP   string // -o
	configFile string
	// stateDir, apiCA and apiFingerprint configure the backend synchronisation (-U).
	stateDir       string
	apiCA          string
	apiFingerprint string
	tunnelCert     string
	tunnelKey      string
	tunnelCA       string
	serverName     string
	streams        int
	// check makes the run check the configuration file and exit (--check).
	check bool
	// daemon holds logging, the PID file and the admin and metrics listeners (daemon.AddFlags).
	daemon daemon.Options
}

// String describes o for logs and tests without secrets (the token, the backend password).
func (o *options) String() string {
	backend := "-"
	if o.backend != nil {
		backend = o.backend.String()
	}
	return fmt.Sprintf("options{servers: %s, backend: %s, token: %s, config: %q, state_dir: %q, streams: %d}",
		o.servers.String(), backend, o.token, o.configFile, o.stateDir, o.streams)
}

// usageError marks errors caused by a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

const usageText = `usage: smartproxy-client -S host[:port] -U url -T token --tunnel-cert FILE --tunnel-key FILE --tunnel-ca FILE [options]
       smartproxy-client -S host[:port] --config FILE --tunnel-cert FILE --tunnel-key FILE --tunnel-ca FILE [options]

smartproxy-client is the internal part of the SmartProxy for OFTP2. It dials the DMZ server
(smartproxy-server), pushes the security configuration to it and forwards the OFTP2 sessions the
server admits to the internal OFTP2 server. The configuration comes from the backend API (-U) or
from a local file (--config), exactly one of them. It runs in the foreground (systemd
supervises it).

Options compatible with the original product:
  -U url       backend API, https://[user:pass@]host[:port][/path]; the configuration is
               long-polled from it, the last good one kept in --state-dir
  -S host[:port]
               the DMZ server (smartproxy-server); port 2878 if not given. Several servers
               (high availability, docs/high-availability.md): a comma list or -S repeated;
               the client keeps a tunnel to each
  -T token     bearer token for the backend API; visible in ps: prefer --token-file or a
               systemd credential named "token" (LoadCredential=token:FILE)
  -d           debug: log to stderr at debug level (overrides --log-dir and --log-level)
  -o ip        source address of the connections to the DMZ server
  -h           print this help and exit
  -v           print the version and exit

Further options:
`

// parseArgs parses the command line. -h and -v set help and version and skip the checks.
func parseArgs(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("smartproxy-client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var backend, token, tokenFile string
	fs.StringVar(&backend, "U", "", "")
	fs.Var(&o.servers, "S", "")
	fs.StringVar(&token, "T", "", "")
	fs.BoolVar(&o.debug, "d", false, "")
	fs.StringVar(&o.sourceIP, "o", "", "")
	fs.BoolVar(&o.help, "h", false, "")
	fs.BoolVar(&o.version, "v", false, "")
	fs.StringVar(&tokenFile, "token-file", "", "`FILE` (mode 0600 or stricter) holding the bearer token for the backend API, instead of -T; without both, $CREDENTIALS_DIRECTORY/"+credentialName+" is used when systemd provides it")
	fs.StringVar(&o.configFile, "config", "", "the local configuration `FILE` (JSON, see docs/configuration.md) instead of -U; SIGHUP reloads it")
	fs.StringVar(&o.stateDir, "state-dir", defaultStateDir, "`DIR` (mode 0700) for the last good configuration from the backend and the event spool (with -U)")
	fs.StringVar(&o.apiCA, "api-ca", "", "PEM `FILE` with the CAs the backend's certificate must chain to (with -U; default: the system's roots)")
	fs.StringVar(&o.apiFingerprint, "api-fingerprint", "", "SHA-256 `FINGERPRINT` the backend's certificate must have (64 hex digits, colons allowed), as smartproxy-api prints it for a certificate it generated (with -U)")
	fs.StringVar(&o.tunnelCert, "tunnel-cert", "", "PEM `FILE` with the client's tunnel certificate chain; SIGHUP reloads it")
	fs.StringVar(&o.tunnelKey, "tunnel-key", "", "PEM `FILE` with the private key of --tunnel-cert")
	fs.StringVar(&o.tunnelCA, "tunnel-ca", "", "PEM `FILE` with the tunnel CA the server certificate must chain to")
	fs.StringVar(&o.serverName, "tunnel-server-name", "", "`NAME` the server certificate must carry (default: the host of -S)")
	fs.IntVar(&o.streams, "streams", 1, "`N` parallel tunnel streams to the server, each on its own connection")
	fs.BoolVar(&o.check, "check", false, "check the configuration file (--config) and the files it names, print a summary and exit")
	o.daemon.Name = "smartproxy-client"
	checkDaemon := daemon.AddFlags(fs, &o.daemon, daemon.FlagDefaults{Admin: defaultAdminAddr, Metrics: defaultMetricsAddr, PIDFile: pidFileName})
	o.usage = func(w io.Writer) {
		fmt.Fprint(w, usageText)
		fs.SetOutput(w)
		fs.VisitAll(func(f *flag.Flag) {
			if len(f.Name) == 1 {
				return // described above
			}
			name, use := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s %s\n        %s", f.Name, name, use)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			o.help = true
			return o, nil
		}
		return nil, usagef("%v (see -h)", err)
	}
	if o.help || o.version {
		return o, nil
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (see -h)", fs.Arg(0))
	}

	if backend != "" {
		u, err := parseBackendURL(backend)
		if err != nil {
			return nil, usagef("-U: %v", err)
		}
		o.backend = u
	}
	token, err := resolveToken(token, tokenFile, o.backend != nil)
	if err != nil {
		return nil, err
	}
	o.token = client.Secret(token)
	switch {
	case o.configFile != "" && o.backend != nil:
		return nil, usagef("give the configuration source once: -U url (the backend) or --config FILE (a local file), not both")
	case o.configFile == "" && o.backend == nil:
		return nil, usagef("-U url (the backend API) or --config FILE (a local file, see docs/configuration.md) is required")
	case o.backend != nil:
		if o.check {
			return nil, usagef("--check checks a local configuration file (--config); the backend checks its own documents")
		}
		if o.backend.User != "" && token != "" {
			return nil, usagef("-U with user:password and -T both authenticate with the Authorization header; give one of them")
		}
		if o.backend.User == "" && token == "" {
			return nil, usagef("a token is required with -U (the backend's bearer token for this proxy client): --token-file FILE, a systemd credential %q, or -T token", credentialName)
		}
		if o.stateDir == "" {
			return nil, usagef("--state-dir: a directory is required with -U")
		}
	default:
		if o.apiCA != "" || o.apiFingerprint != "" || token != "" {
			return nil, usagef("-T/--token-file, --api-ca and --api-fingerprint belong to -U; with --config there is no backend")
		}
	}
	if o.check {
		return o, nil
	}
	if len(o.servers) == 0 {
		return nil, usagef("-S host[:port] is required: the DMZ server to connect to")
	}
	if o.sourceIP != "" {
		if _, err := netip.ParseAddr(o.sourceIP); err != nil {
			return nil, usagef("-o: %q is not an IP address", o.sourceIP)
		}
	}
	for _, f := range []struct{ name, value string }{{"--tunnel-cert", o.tunnelCert}, {"--tunnel-key", o.tunnelKey}, {"--tunnel-ca", o.tunnelCA}} {
		if f.value == "" {
			return nil, usagef("%s FILE is required (see docs/pki.md for creating the tunnel certificates)", f.name)
		}
	}
	if o.streams < 1 || o.streams > 64 {
		return nil, usagef("--streams: %d is out of range 1 to 64", o.streams)
	}
	if err := checkDaemon(); err != nil {
		return nil, usagef("%v", err)
	}
	if l := o.daemon.Log.Level; l < logrus.ErrorLevel {
		return nil, usagef("--log-level: %q would hide errors; use error, warn, info, debug or trace", l)
	}
	if o.debug {
		o.daemon.Log.Level, o.daemon.Log.Dir = logrus.DebugLevel, ""
	}
	return o, nil
}

// resolveToken picks the backend token from -T, --token-file or, when neither is given and a
// backend is used, the systemd credential in $CREDENTIALS_DIRECTORY. A token file must not be
// readable by group or others: the token lets its holder read the partners' configuration.
func resolveToken(flagToken, file string, backend bool) (string, error) {
	if flagToken != "" && file != "" {
		return "", usagef("give the backend token once: -T token or --token-file FILE, not both")
	}
	if flagToken != "" {
		return flagToken, nil
	}
	what := "--token-file"
	if file == "" {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" || !backend {
			return "", nil
		}
		file = filepath.Join(dir, credentialName)
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		what = "systemd credential " + credentialName
	}
	st, err := os.Stat(file)
	if err != nil {
		return "", usagef("%s: %v", what, err)
	}
	if !st.Mode().IsRegular() {
		return "", usagef("%s: %s is not a regular file", what, file)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", usagef("%s: %s is readable by others (mode %04o); use mode 0600 or 0400", what, file, st.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", usagef("%s: %v", what, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", usagef("%s: %s is empty", what, file)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", usagef("%s: %s holds more than one word; it must hold only the token", what, file)
	}
	return tok, nil
}

// serverAddress turns "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address into
// host:port with the default tunnel port.
func serverAddress(s string) (string, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" {
			return "", fmt.Errorf("%q has no host", s)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
		}
		return s, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("%q is not host[:port]", s)
		}
	}
	if host == "" || strings.ContainsAny(host, " /[]") {
		return "", fmt.Errorf("%q is not host[:port]", s)
	}
	return net.JoinHostPort(host, strconv.Itoa(transport.DefaultPort)), nil
}

// backendURL is a parsed -U value. The password is a Secret, so printing the struct is safe.
type backendURL struct {
	// URL is the API base without credentials.
	URL *url.URL
	// User and Password come from the user-info part, if any.
	User     string
	Password client.Secret
}

// full returns the URL with the credentials, for the API client only.
func (b *backendURL) full() string {
	u := *b.URL
	if b.User != "" {
		u.User = url.UserPassword(b.User, b.Password.Reveal())
	}
	return u.String()
}

func (b *backendURL) String() string {
	if b.User == "" {
		return b.URL.String()
	}
	return b.URL.Scheme + "://" + b.User + ":" + b.Password.String() + "@" + b.URL.Host + b.URL.Path
}

// parseBackendURL parses https://[user:pass@]host[:port][/path]. Plain http is refused: the
// backend hands out the company's private key.
func parseBackendURL(s string) (*backendURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse repeats the input, which may hold a password.
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("scheme %q: want https (the backend delivers private keys)", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("no host")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("a query or fragment is not allowed")
	}
	b := &backendURL{}
	if u.User != nil {
		b.User = u.User.Username()
		if b.User == "" {
			return nil, errors.New("user information without a user name")
		}
		pw, _ := u.User.Password()
		b.Password = client.Secret(pw)
		u.User = nil
	}
	b.URL = u
	return b, nil
}
