package main

import (
	"context"
	"fmt"
	"github.com/sirupsen/logrus"
	"io"
	"net"
	"net/http"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/backend/webadmin"
	"smartproxy/internal/buildinfo"
	"smartproxy/internal/daemon"
	"smartproxy/internal/logging"
)

// Defaults of serve.
const (
	// DefaultListen is the API's default listen address.
	DefaultListen = ":8443"
	// DefaultMetrics is the default address of the Prometheus /metrics listener.
	DefaultMetrics = "127.0.0.1:2883"
)

// serveOptions is the parsed command line of serve.
type serveOptions struct {
	common
	listen, certFile, keyFile string
	hosts                     listFlag
	events                    backend.EscalatorConfig
	crl                       backend.FetcherConfig
	webAdmin                  bool
	daemon                    daemon.Options
}

// parseServe parses serve's command line.
func parseServe(args []string, stderr io.Writer) (*serveOptions, error) {
	fs, c := newFlags("serve", "serve [--listen ADDR] [--cert FILE --key FILE] [--host NAME]... [--event-script PATH] [--metrics ADDR] ...", stderr)
	o := &serveOptions{daemon: daemon.Options{Name: "smartproxy-api", Log: logging.Options{Output: stderr}}}
	fs.StringVar(&o.listen, "listen", DefaultListen, "address of the HTTPS API")
	fs.StringVar(&o.certFile, "cert", "", "PEM certificate chain of the API (default: a self-signed one generated in DATA-DIR/tls)")
	fs.StringVar(&o.keyFile, "key", "", "PEM private key of --cert")
	fs.Var(&o.hosts, "host", "extra DNS name or IP address for a generated certificate (repeatable)")
	fs.StringVar(&o.events.Script, "event-script", "", "executable run for escalated events, with the event in SMARTPROXY_EVENT_* variables")
	fs.DurationVar(&o.events.Timeout, "event-script-timeout", 30*time.Second, "time after which a run of the event script is killed")
	fs.IntVar(&o.events.Concurrency, "event-script-concurrency", 4, "runs of the event script at the same time")
	scriptSeverity := fs.String("event-script-severity", "warning", "least severity that runs the event script: debug, info, warning, error or critical")
	fs.DurationVar(&o.crl.Interval, "crl-interval", time.Hour, "how often each CRL is downloaded again (earlier when its nextUpdate comes first)")
	fs.Int64Var(&o.crl.MaxSize, "crl-max-size", 256<<20, "largest CRL downloaded, in bytes")
	fs.DurationVar(&o.crl.Timeout, "crl-timeout", 2*time.Minute, "time allowed for one CRL download")
	checkDaemon := daemon.AddFlags(fs, &o.daemon, daemon.FlagDefaults{Admin: daemon.NoAdmin, Metrics: DefaultMetrics})
	fs.BoolVar(&o.webAdmin, "web-admin", true, "serve the web admin below /admin/ (log in with a user from \"user add\")")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return nil, err
	}
	o.common = *c
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, usagef("serve: --cert and --key go together")
	}
	if o.events.Concurrency <= 0 || o.events.Timeout <= 0 || o.crl.Interval <= 0 || o.crl.MaxSize <= 0 || o.crl.Timeout <= 0 {
		return nil, usagef("serve: counts, sizes and durations must be positive")
	}
	if o.events.MinSeverity = apiv1.Severity(*scriptSeverity); !o.events.MinSeverity.Valid() {
		return nil, usagef("serve: --event-script-severity %q is not debug, info, warning, error or critical", *scriptSeverity)
	}
	if err := checkDaemon(); err != nil {
		return nil, usagef("serve: %v", err)
	}
	return o, nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	return runDaemon(ctx, o, stdout)
}

// runDaemon runs the API until ctx ends (SIGTERM, SIGINT) and returns when everything it
// started has ended.
func runDaemon(ctx context.Context, o *serveOptions, stdout io.Writer) error {
	d, err := daemon.Start(o.daemon)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer d.Close()
	st, err := store.Open(ctx, o.dbPath(), store.Options{Logger: d.Log})
	if err != nil {
		return err
	}
	defer st.Close()
	certs, generated, err := loadCertificate(o)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// The web admin's "fetch now" runs the server's CRL downloader, and its dashboard reads the
	// tunnel states the server received; both exist once backend.New has returned.
	var srv *backend.Server
	var admin http.Handler
	if o.webAdmin {
		if admin, err = webadmin.New(webadmin.Config{Store: st, Logger: d.Log,
			FetchCRL: func(ctx context.Context, id int64) error { return srv.FetchCRL(ctx, id) },
			Tunnel:   func(id int64) (backend.TunnelReport, bool) { return srv.Tunnel(id) }}); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	srv, err = backend.New(backend.Config{Store: st, Logger: d.Log, TLSConfig: certs.TLSConfig(), Events: o.events, CRL: o.crl,
		Admin: admin, Metrics: d.Metrics})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer ln.Close() // Run closes it when it runs
	leaf := certs.Leaf()
	fmt.Fprintf(stdout, "smartproxy-api listening on https://%s\nTLS certificate SHA-256 fingerprint: %s\n", ln.Addr(), backend.Fingerprint(leaf))
	if admin != nil {
		fmt.Fprintf(stdout, "web admin: https://%s%s\n", ln.Addr(), webadmin.Path)
	}
	return d.Run(ctx, daemon.Parts{
		Main:    func(ctx context.Context) error { return srv.Run(ctx, ln) },
		Healthy: func() bool { return storeHealthy(st) },
		Reload:  func() string { reloadCertificate(d.Log, certs); return "reloaded" },
		Ready:   "serving on " + ln.Addr().String(),
		Fields: logrus.Fields{"version": buildinfo.Version(), "listen": ln.Addr().String(), "database": st.Path(),
			"certificate": o.certFile, "generated": generated, "sha256": backend.Fingerprint(leaf),
			"certificate_till": leaf.NotAfter.UTC().Format(time.RFC3339), "event_script": o.events.Script},
	})
}

// loadCertificate loads --cert and --key, or the self-signed certificate in the data
// directory, generated on first use (generated true).
func loadCertificate(o *serveOptions) (certs *backend.CertificateFiles, generated bool, err error) {
	if o.certFile == "" {
		if o.certFile, o.keyFile, generated, err = backend.EnsureSelfSigned(o.dataDir, o.hosts, time.Now()); err != nil {
			return nil, false, fmt.Errorf("TLS certificate: %w", err)
		}
	}
	certs, err = backend.LoadCertificateFiles(o.certFile, o.keyFile)
	return certs, generated, err
}

// reloadCertificate loads the TLS certificate files again (SIGHUP); files that do not load leave
// the previous certificate in use.
func reloadCertificate(log logrus.FieldLogger, certs *backend.CertificateFiles) {
	if err := certs.Reload(); err != nil {
		log.WithError(err).Error("SIGHUP: TLS certificate files not reloaded; the previous ones stay in use")
		return
	}
	log.WithField("sha256", backend.Fingerprint(certs.Leaf())).Info("SIGHUP: TLS certificate files reloaded")
}

// storeHealthy reports whether the database answers, for the systemd watchdog.
func storeHealthy(st *store.Store) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := st.Revision(ctx)
	return err == nil
}
