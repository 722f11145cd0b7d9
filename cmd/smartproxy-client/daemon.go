package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/sirupsen/logrus"

	"smartproxy/admin"
	"smartproxy/apiclient"
	"smartproxy/client"
	"smartproxy/client/backendsync"
	"smartproxy/client/configfile"
	"smartproxy/internal/buildinfo"
	"smartproxy/internal/daemon"
	"smartproxy/internal/event"
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
	d, err := daemon.Start(o.daemon.LogTo(stderr))
	if err != nil {
		return err
	}
	defer d.Close()
	log := d.Log
	// The configuration source: the local file (--config), checked before anything else is set
	// up, or the backend (-U).
	var loader *configfile.Loader
	var snap *client.Snapshot
	source := o.configFile
	if o.backend == nil {
		if loader, snap, err = loadConfig(log, o.configFile); err != nil {
			return err
		}
		source = loader.Path()
	}
	creds, err := transport.NewCertSource(transport.CertSourceConfig{
		CertFile: o.tunnelCert, KeyFile: o.tunnelKey, CAFile: o.tunnelCA, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("tunnel certificate: %w", err)
	}
	health := admin.NewHealth(log, healthParts(o)...)
	var syncer *backendsync.Syncer
	if o.backend != nil {
		source = o.backend.String()
		if syncer, snap, err = startSyncer(ctx, o, log, health); syncer == nil || snap == nil {
			return err // nil when stopped before a configuration arrived
		}
		defer syncer.Spool().Close() // Run closes it too; this is for a failed start
	}
	ccfg := client.Config{Servers: o.servers, ServerName: o.serverName, SourceIP: o.sourceIP, Credentials: creds,
		Streams: o.streams, Version: buildinfo.Version(), Config: snap, Logger: log, Levels: d.Levels, Metrics: d.Metrics, Health: health}
	parts := daemon.Parts{With: []func(context.Context) error{func(ctx context.Context) error { creds.Run(ctx); return nil }}}
	if syncer != nil {
		ccfg.Observer = syncer
	}
	c, err := client.New(ccfg)
	if err != nil {
		return err
	}
	if syncer != nil {
		parts.After = append(parts.After, func(ctx context.Context) error { return syncer.Run(ctx, c) })
	}
	parts.Main = c.Run
	parts.Reload = func() string {
		reload(log, loader, c, creds)
		return fmt.Sprintf("reloaded; configuration version %d", c.Current().Version)
	}
	parts.Ready = fmt.Sprintf("connecting to %s; configuration version %d", o.servers.String(), snap.Version)
	parts.Fields = logrus.Fields{"servers": o.servers.String(), "config_source": source, "config_version": snap.Version, "internal_server": snap.Internal.Address}
	if o.daemon.AdminAddr != "" {
		if parts.Admin, err = admin.New(admin.Config{Backend: c.Admin(), Logger: log, Health: health}); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	return d.Run(ctx, parts)
}

// healthParts are the parts of the health service: the tunnel, and the backend synchronisation
// when there is a backend.
func healthParts(o *options) []string {
	if o.backend != nil {
		return []string{admin.HealthClientTunnel, admin.HealthClientBackend}
	}
	return []string{admin.HealthClientTunnel}
}

// loadConfig loads the local configuration file (--config) and logs its warnings.
func loadConfig(log logrus.FieldLogger, path string) (*configfile.Loader, *client.Snapshot, error) {
	loader, err := configfile.NewLoader(path, nil)
	if err != nil {
		return nil, nil, err
	}
	res, err := loader.Load()
	if err != nil {
		return nil, nil, err
	}
	logWarnings(log, nil, res.Warnings)
	return loader, res.Snapshot, nil
}

// startSyncer creates the backend synchronisation (-U) and waits for the first configuration
// (from the backend or the cached one). It returns a nil snapshot and error when ctx ended
// first, and closes the spool whenever it returns no snapshot.
func startSyncer(ctx context.Context, o *options, log *logrus.Logger, health *admin.Health) (*backendsync.Syncer, *client.Snapshot, error) {
	syncer, err := newSyncer(o, log, health)
	if err != nil {
		return nil, nil, err
	}
	log.WithFields(logrus.Fields{"backend": o.backend.String(), "state_dir": o.stateDir}).Info("configuration from the backend")
	sdnotify.Status("waiting for the configuration from " + o.backend.String())
	snap, err := syncer.Initial(ctx)
	if err != nil {
		syncer.Spool().Close()
		if ctx.Err() != nil {
			log.Info("stopped before a configuration arrived")
			return nil, nil, nil
		}
		return nil, nil, err
	}
	return syncer, snap, nil
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
	refused := func(msg string) event.Event {
		return event.New(eventConfigRefused, msg).With("config_file", loader.Path()).
			With("config_version", strconv.FormatUint(c.Current().Version, 10))
	}
	if err != nil {
		var ce *configfile.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				c.Events().Emit(log, refused("SIGHUP: configuration problem").With("field", p.Field).With("error", p.Error()))
			}
		}
		c.Events().Emit(log, refused("SIGHUP: configuration file refused; the configuration in force stays").With("error", err.Error()))
		return
	}
	logWarnings(log, c.Events(), res.Warnings)
	if !res.Changed {
		log.WithField("config_version", res.Snapshot.Version).Info("SIGHUP: configuration unchanged")
		return
	}
	if err := c.SetConfig(res.Snapshot); err != nil {
		c.Events().Emit(log, refused("SIGHUP: configuration not used").With("error", err.Error()))
		return
	}
	log.WithFields(logrus.Fields{"event": eventConfigReloaded, "config_version": res.Snapshot.Version}).
		Info("SIGHUP: configuration reloaded")
}

// logWarnings emits a configuration file's warnings; em may be nil (the log line only).
func logWarnings(log logrus.FieldLogger, em *event.Emitter, warnings []string) {
	for _, w := range warnings {
		em.Emit(log, event.New(eventConfigWarning, "configuration: "+w))
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
