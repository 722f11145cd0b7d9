package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"smartproxy/admin"
	"smartproxy/internal/daemon"
	"smartproxy/tunnel/transport"
)

// Defaults of the command line.
const (
	// defaultLicenseFile is in the systemd unit's state directory, where a pushed license can be
	// written: `smartproxy-server -V` run by hand reads the file the service uses.
	defaultLicenseFile = "/var/lib/smartproxy-server/license"
	defaultTunnelDir   = "/etc/smartproxy/tunnel"
	defaultMetricsAddr = "127.0.0.1:2881"
	pidFileName        = "smartproxy-server.pid"
)

// options is the parsed command line of the daemon.
type options struct {
	help, version, printProxyID, printLicense bool
	usage                                     func(io.Writer)

	tunnelAddr     string // -i, host:port with the default port filled in
	licenseFile    string // -l
	tunnelCert     string
	tunnelKey      string
	tunnelCA       string
	allowedClients []string
	daemon         daemon.Options // logging, PID file, admin and metrics listeners (daemon.AddFlags)
	drainTimeout   string
	partnerListen  string // --partner-listen; "" means the configuration's address
}

// usageError marks errors caused by a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

const usageText = `usage: smartproxy-server [options]
       smartproxy-server pki init --dir DIR [--server-name NAME]... [--client-name NAME] [--force]

smartproxy-server is the DMZ part of the SmartProxy for OFTP2. It accepts tunnels from
smartproxy-client on the tunnel port, receives its whole security configuration over them (it
holds none of its own) and, while a client is connected, admits OFTP2 partners on the partner
port from that configuration and relays verified sessions inside. It runs in the foreground
(systemd supervises it: Type=notify, SIGTERM drains, SIGHUP reloads the tunnel certificate
files and the license file, SIGUSR1/SIGUSR2 make logging more/less verbose).

Options compatible with the original product:
  -h           print this help and exit
  -v           print the version and exit
  -i [ip]:port tunnel listener for smartproxy-client (default any address, port 2878)
  -L           print this host's Proxy ID and exit
  -l file      license file (default ` + defaultLicenseFile + `); a license pushed by the
               client replaces it
  -V           print the license validity and exit; exit status 1 when not valid

Further options:
`

// stringList is a repeatable flag; each value may also hold a comma-separated list.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// parseArgs parses the daemon's command line. -h, -v, -L and -V skip the checks that only the
// daemon needs.
func parseArgs(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("smartproxy-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var tunnelAddr string
	var allow stringList
	fs.BoolVar(&o.help, "h", false, "")
	fs.BoolVar(&o.version, "v", false, "")
	fs.StringVar(&tunnelAddr, "i", "", "")
	fs.BoolVar(&o.printProxyID, "L", false, "")
	fs.StringVar(&o.licenseFile, "l", defaultLicenseFile, "")
	fs.BoolVar(&o.printLicense, "V", false, "")
	fs.StringVar(&o.tunnelCert, "tunnel-cert", filepath.Join(defaultTunnelDir, "server.pem"), "PEM `FILE` with the server's tunnel certificate chain; SIGHUP reloads it")
	fs.StringVar(&o.tunnelKey, "tunnel-key", filepath.Join(defaultTunnelDir, "server-key.pem"), "PEM `FILE` with the private key of --tunnel-cert")
	fs.StringVar(&o.tunnelCA, "tunnel-ca", filepath.Join(defaultTunnelDir, "tunnel-ca.pem"), "PEM `FILE` with the tunnel CA client certificates must chain to")
	fs.Var(&allow, "tunnel-allow-client", "accept only this client `ID` (certificate CN, URI or DNS SAN); repeatable; default: every certificate of the tunnel CA")
	o.daemon.Name = "smartproxy-server"
	checkDaemon := daemon.AddFlags(fs, &o.daemon, daemon.FlagDefaults{Admin: admin.DefaultAddr, Metrics: defaultMetricsAddr, PIDFile: pidFileName})
	fs.StringVar(&o.partnerListen, "partner-listen", "", "partner listener `ADDR` (host:port) instead of the configuration's partner_listen_address: for several DMZ servers sharing one configuration, each on an address of its own (docs/high-availability.md)")
	fs.StringVar(&o.drainTimeout, "drain-timeout", "30s", "on SIGTERM, how long open partner sessions may run on before they are ended with ESID 05 (`DURATION`)")
	o.usage = func(w io.Writer) {
		fmt.Fprint(w, usageText)
		fs.VisitAll(func(f *flag.Flag) {
			if len(f.Name) == 1 {
				return // described above
			}
			name, use := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s %s\n        %s", f.Name, name, use)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			o.help = true
			return o, nil
		}
		return nil, usagef("%v (see -h)", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (see -h)", fs.Arg(0))
	}
	if o.help || o.version {
		return o, nil
	}
	addr, err := tunnelListenAddr(tunnelAddr)
	if err != nil {
		return nil, usagef("-i: %v", err)
	}
	o.tunnelAddr = addr
	o.allowedClients = allow
	if o.partnerListen != "" {
		if _, _, err := net.SplitHostPort(o.partnerListen); err != nil {
			return nil, usagef("--partner-listen: %v", err)
		}
	}
	if err := checkDaemon(); err != nil {
		return nil, usagef("%v", err)
	}
	return o, nil
}

// tunnelListenAddr turns the -i argument into host:port: "" means any address on 2878, a bare
// address or "[v6]" gets port 2878, ":port" means any address on port.
func tunnelListenAddr(s string) (string, error) {
	def := strconv.Itoa(transport.DefaultPort)
	if s == "" {
		return ":" + def, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: an address alone.
		h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if net.ParseIP(h) == nil {
			return "", fmt.Errorf("%q is not [ip]:port", s)
		}
		return net.JoinHostPort(h, def), nil
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", fmt.Errorf("%q: port %q is not a number 0-65535", s, port)
	}
	return net.JoinHostPort(host, port), nil
}
