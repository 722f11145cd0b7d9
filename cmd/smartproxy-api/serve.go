package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/backend/webadmin"
	"smartproxy/internal/buildinfo"
	"smartproxy/internal/logging"
	"smartproxy/internal/pidfile"
	"smartproxy/internal/sdnotify"
)

// DefaultListen is the API's default listen address.
const DefaultListen = ":8443"

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("serve", "serve [--listen ADDR] [--cert FILE --key FILE] [--host NAME]... [--event-script PATH] ...", stderr)
	listen := fs.String("listen", DefaultListen, "address of the HTTPS API")
	certFile := fs.String("cert", "", "PEM certificate chain of the API (default: a self-signed one generated in DATA-DIR/tls)")
	keyFile := fs.String("key", "", "PEM private key of --cert")
	var hosts listFlag
	fs.Var(&hosts, "host", "extra DNS name or IP address for a generated certificate (repeatable)")
	script := fs.String("event-script", "", "executable run for escalated events, with the event in SMARTPROXY_EVENT_* variables")
	scriptTimeout := fs.Duration("event-script-timeout", 30*time.Second, "time after which a run of the event script is killed")
	scriptConc := fs.Int("event-script-concurrency", 4, "runs of the event script at the same time")
	scriptSeverity := fs.String("event-script-severity", "warning", "least severity that runs the event script: debug, info, warning, error or critical")
	crlInterval := fs.Duration("crl-interval", time.Hour, "how often each CRL is downloaded again (earlier when its nextUpdate comes first)")
	crlMax := fs.Int64("crl-max-size", 256<<20, "largest CRL downloaded, in bytes")
	crlTimeout := fs.Duration("crl-timeout", 2*time.Minute, "time allowed for one CRL download")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logDir := fs.String("log-dir", "", "write logs to daily files in this directory instead of stderr")
	retention := logging.AddRetentionFlags(fs)
	webAdmin := fs.Bool("web-admin", true, "serve the web admin below /admin/ (log in with a user from \"user add\")")
	pidPath := fs.String("pid-file", "", "write the process ID to this file (refused while another live process holds it)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	if (*certFile == "") != (*keyFile == "") {
		return usagef("serve: --cert and --key go together")
	}
	if *scriptConc <= 0 || *scriptTimeout <= 0 || *crlInterval <= 0 || *crlMax <= 0 || *crlTimeout <= 0 {
		return usagef("serve: counts, sizes and durations must be positive")
	}
	sev := apiv1.Severity(*scriptSeverity)
	if !sev.Valid() {
		return usagef("serve: --event-script-severity %q is not debug, info, warning, error or critical", *scriptSeverity)
	}
	level, err := logging.ParseLevel(*logLevel)
	if err != nil {
		return usagef("serve: --log-level: %v", err)
	}
	log, closer, err := logging.New(logging.Options{Format: *logFormat, Level: level, Dir: *logDir, Retention: *retention, Prefix: "smartproxy-api", Output: stderr})
	if err != nil {
		return usagef("serve: %v", err)
	}
	defer closer.Close()
	if *pidPath != "" {
		pf, err := pidfile.Claim(*pidPath, "smartproxy-api", log)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer pf.Release()
	}

	st, err := store.Open(ctx, c.dbPath(), store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	generated := false
	if *certFile == "" {
		if *certFile, *keyFile, generated, err = backend.EnsureSelfSigned(c.dataDir, hosts, time.Now()); err != nil {
			return fmt.Errorf("serve: TLS certificate: %w", err)
		}
	}
	certs, err := backend.LoadCertificateFiles(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// The web admin's "fetch now" runs the server's CRL downloader, and its
	// dashboard reads the tunnel states the server received; both exist once
	// backend.New has returned.
	var srv *backend.Server
	var admin http.Handler
	if *webAdmin {
		if admin, err = webadmin.New(webadmin.Config{Store: st, Logger: log,
			FetchCRL: func(ctx context.Context, id int64) error { return srv.FetchCRL(ctx, id) },
			Tunnel:   func(id int64) (backend.TunnelReport, bool) { return srv.Tunnel(id) }}); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	srv, err = backend.New(backend.Config{
		Store:     st,
		Logger:    log,
		TLSConfig: certs.TLSConfig(),
		Events: backend.EscalatorConfig{Script: *script, Timeout: *scriptTimeout, Concurrency: *scriptConc,
			MinSeverity: sev},
		CRL:   backend.FetcherConfig{Interval: *crlInterval, MaxSize: *crlMax, Timeout: *crlTimeout},
		Admin: admin,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	leaf := certs.Leaf()
	log.WithFields(map[string]any{
		"version":          buildinfo.Version(),
		"listen":           ln.Addr().String(),
		"database":         st.Path(),
		"certificate":      *certFile,
		"generated":        generated,
		"sha256":           backend.Fingerprint(leaf),
		"certificate_till": leaf.NotAfter.UTC().Format(time.RFC3339),
		"event_script":     *script,
	}).Info("smartproxy-api serving")
	fmt.Fprintf(stdout, "smartproxy-api listening on https://%s\nTLS certificate SHA-256 fingerprint: %s\n", ln.Addr(), backend.Fingerprint(leaf))
	if admin != nil {
		fmt.Fprintf(stdout, "web admin: https://%s%s\n", ln.Addr(), webadmin.Path)
	}
	sdnotify.Ready("serving on " + ln.Addr().String())
	wctx, stopWatchdog := context.WithCancel(ctx)
	watchdog := make(chan error, 1)
	go func() {
		watchdog <- sdnotify.Watchdog(wctx, func() bool {
			_, err := st.Revision(wctx)
			return err == nil
		})
	}()
	err = srv.Run(ctx, ln)
	sdnotify.Stopping()
	stopWatchdog()
	if werr := <-watchdog; werr != nil {
		log.WithError(werr).Warn("systemd watchdog")
	}
	log.Info("smartproxy-api stopped")
	return err
}
