package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"

	"smartproxy/admin"
	"smartproxy/apiclient"
	"smartproxy/client"
	"smartproxy/client/backendsync"
	"smartproxy/client/configfile"
	"smartproxy/internal/buildinfo"
	"smartproxy/internal/diaghttp"
	"smartproxy/internal/logging"
	"smartproxy/internal/pidfile"
	"smartproxy/internal/sdnotify"
	"smartproxy/tunnel/transport"
)

// Event names of the daemon's own log lines.
const (
	eventConfigReloaded = "config_reloaded"
	eventConfigRefused  = "config_reload_refused"
	eventConfigWarning  = "config_warning"
)

// runDaemon runs the client until ctx ends (SIGTERM, SIGINT), then ends its sessions in order
// and returns when everything it started has ended.
func runDaemon(ctx context.Context, o *options, stderr io.Writer) error {
	log, logCloser, err := logging.New(logging.Options{
		Format: o.logFormat, Level: o.logLevel, Dir: o.logDir, Retention: *o.logRetention, Prefix: "smartproxy-client", Output: stderr,
	})
	if err != nil {
		return err
	}
	defer logCloser.Close()
	levels := logging.NewLevels(log)

	if o.pidFile != "" {
		pf, err := pidfile.Claim(o.pidFile, "smartproxy-client", log)
		if err != nil {
			return err
		}
		defer pf.Release()
	}
	// The configuration source: the backend (-U) or the local file (--config). A local file is
	// checked first, before anything else is set up.
	var (
		loader *configfile.Loader
		syncer *backendsync.Syncer
		snap   *client.Snapshot
		source string
	)
	if o.backend == nil {
		if loader, err = configfile.NewLoader(o.configFile, nil); err != nil {
			return err
		}
		res, err := loader.Load()
		if err != nil {
			return err
		}
		logWarnings(log, res.Warnings)
		snap, source = res.Snapshot, loader.Path()
	}
	creds, err := transport.NewCertSource(transport.CertSourceConfig{
		CertFile: o.tunnelCert, KeyFile: o.tunnelKey, CAFile: o.tunnelCA, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("tunnel certificate: %w", err)
	}
	// The health parts: the tunnel, and the backend sync when there is a backend.
	parts := []string{admin.HealthClientTunnel}
	if o.backend != nil {
		parts = append(parts, admin.HealthClientBackend)
	}
	health := admin.NewHealth(log, parts...)
	if o.backend != nil {
		if syncer, err = newSyncer(o, log, health); err != nil {
			return err
		}
		log.AddHook(syncer.Hook())
		source = o.backend.String()
		log.WithFields(logrus.Fields{"backend": source, "state_dir": o.stateDir}).Info("configuration from the backend")
		sdnotify.Status("waiting for the configuration from " + source)
		if snap, err = syncer.Initial(ctx); err != nil {
			syncer.Spool().Close()
			if ctx.Err() != nil {
				log.Info("stopped before a configuration arrived")
				return nil
			}
			return err
		}
	}
	closeSyncer := func() {
		if syncer != nil {
			syncer.Spool().Close()
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
	ccfg := client.Config{
		Servers:     o.servers,
		ServerName:  o.serverName,
		SourceIP:    o.sourceIP,
		Credentials: creds,
		Streams:     o.streams,
		Version:     buildinfo.Version(),
		Config:      snap,
		Logger:      log,
		Levels:      levels,
		Metrics:     reg,
		Health:      health,
	}
	if syncer != nil {
		ccfg.Observer = syncer
	}
	c, err := client.New(ccfg)
	if err != nil {
		closeSyncer()
		return err
	}

	var adminSrv *admin.Server
	var adminLn net.Listener
	if o.adminAddr != "" {
		if adminSrv, err = admin.New(admin.Config{Backend: c.Admin(), Logger: log, Health: health}); err == nil {
			adminLn, err = adminSrv.Listen(o.adminAddr)
		}
		if err != nil {
			closeSyncer()
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	var metricsSrv *http.Server
	var metricsLn net.Listener
	if o.metricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", o.metricsAddr); err != nil {
			if adminLn != nil {
				adminLn.Close()
			}
			closeSyncer()
			return fmt.Errorf("metrics listener: %w", err)
		}
		metricsSrv = &http.Server{Handler: diaghttp.Handler(diaghttp.Config{Registry: reg, Pprof: o.pprof}), ReadHeaderTimeout: 10 * time.Second}
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	// The backend synchronisation stops only after the client has: the client's last events
	// (a server's Event frames that arrive while the tunnel shuts down) still reach the spool.
	syncCtx, stopSync := context.WithCancel(context.Background())
	defer stopSync()
	var wg sync.WaitGroup
	runErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); runErr <- c.Run(runCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); creds.Run(runCtx) }()
	if syncer != nil {
		// Run closes the spool when it returns.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := syncer.Run(syncCtx, c); err != nil {
				log.WithError(err).Error("backend synchronisation failed")
			}
		}()
	}
	if adminSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, admin.ErrServerClosed) {
				log.WithError(err).Error("admin listener failed")
			}
		}()
	}
	if metricsSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := metricsSrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.WithError(err).Error("metrics listener failed")
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); sdnotify.Watchdog(runCtx, nil) }()

	fields := logrus.Fields{"servers": o.servers.String(), "config_source": source, "config_version": snap.Version,
		"internal_server": snap.Internal.Address}
	if adminLn != nil {
		fields["admin_addr"] = adminLn.Addr().String()
	}
	if metricsLn != nil {
		fields["metrics_addr"] = metricsLn.Addr().String()
	}
	if o.pidFile != "" {
		fields["pid_file"] = o.pidFile
	}
	log.WithFields(fields).Info("started")
	sdnotify.Ready(fmt.Sprintf("connecting to %s; configuration version %d", o.servers.String(), snap.Version))

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(signals)
	var result error
loop:
	for {
		select {
		case <-ctx.Done():
			sdnotify.Stopping()
			log.Info("shutdown requested: ending sessions")
			break loop
		case err := <-runErr:
			runErr <- err // consumed again below
			result = err
			break loop
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP:
				sdnotify.Reloading()
				reload(log, loader, c, creds)
				sdnotify.Ready(fmt.Sprintf("reloaded; configuration version %d", c.Current().Version))
			case syscall.SIGUSR1:
				levels.Step(+1, "SIGUSR1")
			case syscall.SIGUSR2:
				levels.Step(-1, "SIGUSR2")
			}
		}
	}
	stopRun()
	if err := <-runErr; err != nil && result == nil {
		result = err
	}
	stopSync()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if adminSrv != nil {
		adminSrv.Shutdown(shutCtx)
	}
	if metricsSrv != nil {
		metricsSrv.Shutdown(shutCtx)
	}
	wg.Wait()
	log.Info("stopped")
	return result
}

// reload re-reads the tunnel certificate files and, with a local configuration file, that file
// (SIGHUP). A file that does not load is refused with every problem logged; the configuration
// in force stays.
func reload(log logrus.FieldLogger, loader *configfile.Loader, c *client.Client, creds *transport.CertSource) {
	if changed, err := creds.Reload(); err != nil {
		log.WithError(err).Error("SIGHUP: tunnel certificate files not reloaded; the previous ones stay in use")
	} else {
		log.WithField("changed", changed).Info("SIGHUP: tunnel certificate files reloaded")
	}
	if loader == nil {
		log.Info("SIGHUP: the configuration comes from the backend, which the client follows continuously")
		return
	}
	res, err := loader.Load()
	if err != nil {
		fields := logrus.Fields{"event": eventConfigRefused, "config_file": loader.Path(), "config_version": c.Current().Version}
		var ce *configfile.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				log.WithFields(fields).WithFields(logrus.Fields{"field": p.Field, "error": p.Error()}).Error("SIGHUP: configuration problem")
			}
		}
		log.WithFields(fields).WithError(err).Error("SIGHUP: configuration file refused; the configuration in force stays")
		return
	}
	logWarnings(log, res.Warnings)
	if !res.Changed {
		log.WithField("config_version", res.Snapshot.Version).Info("SIGHUP: configuration unchanged")
		return
	}
	if err := c.SetConfig(res.Snapshot); err != nil {
		log.WithError(err).WithField("event", eventConfigRefused).Error("SIGHUP: configuration not used")
		return
	}
	log.WithFields(logrus.Fields{"event": eventConfigReloaded, "config_version": res.Snapshot.Version}).
		Info("SIGHUP: configuration reloaded")
}

func logWarnings(log logrus.FieldLogger, warnings []string) {
	for _, w := range warnings {
		log.WithField("event", eventConfigWarning).Warn("configuration: " + w)
	}
}

// newSyncer creates the API client and the Syncer for -U.
func newSyncer(o *options, log logrus.FieldLogger, health *admin.Health) (*backendsync.Syncer, error) {
	api, err := apiclient.New(apiclient.Config{
		BaseURL:   o.backend.full(),
		Token:     apiclient.Token(o.token.Reveal()),
		CAFile:    o.apiCA,
		PinSHA256: o.apiFingerprint,
		Logger:    log,
		UserAgent: "smartproxy-client/" + buildinfo.Version(),
	})
	if err != nil {
		return nil, fmt.Errorf("-U: %w", err)
	}
	s, err := backendsync.New(backendsync.Config{API: api, StateDir: o.stateDir, Logger: log, Health: health})
	if err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	return s, nil
}
