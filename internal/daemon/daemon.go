// Package daemon is the frame the three SmartProxy daemons run in (smartproxy-server,
// smartproxy-client and smartproxy-api serve): the logger with its run-time levels, the pid
// file, the Prometheus registry with the build, Go and process collectors, the loopback-only
// admin and metrics listeners, systemd notification and watchdog, the signal loop and the order
// of shutdown. Each daemon builds its own components between Start and Run and hands them to
// Run; nothing of this is written again in a cmd/ package.
//
// The life of a daemon:
//
//	Start: logger, levels, pid file, registry, admin and metrics listeners bound
//	   │   (the daemon builds its components with d.Log, d.Levels, d.Metrics)
//	Run:   Main, With and After started; admin and metrics served; "started"; READY
//	   │
//	   ├── SIGHUP ──────────► RELOADING ─► Reload() ─► READY with Reload's status
//	   ├── SIGUSR1/SIGUSR2 ─► Levels.Step(+1/-1): more/less verbose, the change logged
//	   │
//	   ├── ctx ends (SIGINT/SIGTERM, which main turns into ctx's end)   ┐
//	   └── Main returns by itself (its error is Run's result)          ┴► STOPPING
//	         ─► Main's context ends (With's too) ─► Main has returned
//	         ─► After's context ends (they saw everything Main did until its end)
//	         ─► After have returned ─► admin and metrics listeners shut down (5 s, then closed)
//	         ─► watchdog ends ─► every goroutine has ended ─► Run returns
//	Close: pid file released, log file closed
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"smartproxy/internal/buildinfo"
	"smartproxy/internal/diaghttp"
	"smartproxy/internal/logging"
	"smartproxy/internal/pidfile"
	"smartproxy/internal/sdnotify"
)

// ShutdownTimeout bounds the graceful shutdown of the admin and metrics listeners; their
// remaining connections are closed after it.
const ShutdownTimeout = 5 * time.Second

// Options are what every daemon has, from its common flags.
type Options struct {
	// Name is the program's name ("smartproxy-server"): the prefix of the daily log files, the
	// owner the pid file names and the start and stop log lines.
	Name string
	// Log configures the logger. If its Prefix is empty, Name is used.
	Log logging.Options
	// PIDFile, if not empty, is claimed for the daemon's lifetime; it is refused while another
	// live process holds it.
	PIDFile string
	// AdminAddr is the address of the admin listener (loopback only); empty disables it. Run
	// serves Parts.Admin on it.
	AdminAddr string
	// MetricsAddr is the address of the Prometheus /metrics listener (loopback only); empty
	// disables it.
	MetricsAddr string
	// Pprof serves Go's runtime profiles at /debug/pprof/ on the metrics listener.
	Pprof bool
}

// Daemon is one running daemon between Start and Close. Its exported fields are immutable.
type Daemon struct {
	// Log is the daemon's logger; its level belongs to Levels.
	Log *logrus.Logger
	// Levels owns the global and per-session log levels (SIGUSR1, SIGUSR2, the admin API).
	Levels *logging.Levels
	// Metrics is the registry served at /metrics, with smartproxy_build_info and the Go and
	// process collectors registered.
	Metrics *prometheus.Registry

	opts      Options
	logCloser io.Closer
	pid       *pidfile.File
	adminLn   net.Listener // nil when disabled or served (Serve closes it)
	metricsLn net.Listener // likewise
}

// Start sets up what every daemon needs before its own components: the logger, the pid file,
// the registry and the admin and metrics listeners, which are bound here so that a taken port
// fails the start before anything else runs. Close undoes it.
func Start(opts Options) (*Daemon, error) {
	if opts.Log.Prefix == "" {
		opts.Log.Prefix = opts.Name
	}
	for _, a := range []struct{ flag, addr string }{{"--admin", opts.AdminAddr}, {"--metrics", opts.MetricsAddr}} {
		if a.addr == "" {
			continue
		}
		if err := diaghttp.CheckLoopback(a.addr); err != nil {
			return nil, fmt.Errorf("%s: %w", a.flag, err)
		}
	}
	if opts.Pprof && opts.MetricsAddr == "" {
		return nil, errors.New("--pprof: the profiles are served on the --metrics listener, which is disabled")
	}
	log, logCloser, err := logging.New(opts.Log)
	if err != nil {
		return nil, err
	}
	d := &Daemon{Log: log, Levels: logging.NewLevels(log), Metrics: prometheus.NewRegistry(), opts: opts, logCloser: logCloser}
	d.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())
	if opts.PIDFile != "" {
		if d.pid, err = pidfile.Claim(opts.PIDFile, opts.Name, log); err != nil {
			d.Close()
			return nil, err
		}
	}
	if opts.AdminAddr != "" {
		if d.adminLn, err = net.Listen("tcp", opts.AdminAddr); err != nil {
			d.Close()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	if opts.MetricsAddr != "" {
		if d.metricsLn, err = net.Listen("tcp", opts.MetricsAddr); err != nil {
			d.Close()
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
	}
	return d, nil
}

// Close closes listeners that Run did not serve, releases the pid file and closes the log.
// Call it (deferred) after Start, whether Run ran or not.
func (d *Daemon) Close() error {
	for _, ln := range []*net.Listener{&d.adminLn, &d.metricsLn} {
		if *ln != nil {
			(*ln).Close()
			*ln = nil
		}
	}
	if d.pid != nil {
		d.pid.Release()
		d.pid = nil
	}
	return d.logCloser.Close()
}

// Server is served on a listener until Shutdown: admin.Server, http.Server. Serve's error after
// Shutdown is not reported.
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Parts are a daemon's own components, for Run.
type Parts struct {
	// Main is the daemon's work. It runs until its context ends; if it returns by itself the
	// daemon stops, and its error is Run's result. It must not be nil.
	Main func(context.Context) error
	// With run beside Main on Main's context (a certificate file watcher).
	With []func(context.Context) error
	// After run beside Main but their context ends only once Main has returned: work that must
	// see everything Main did until its end (the backend relay takes the events that arrive
	// while the tunnel shuts down).
	After []func(context.Context) error
	// Admin, if not nil, is served on the admin listener; it must be nil when Options.AdminAddr
	// is empty.
	Admin Server
	// Reload is SIGHUP's work, between systemd's RELOADING and READY; it returns READY's status
	// line. If nil, a SIGHUP is logged as having nothing to reload.
	Reload func() string
	// Healthy is asked before each systemd watchdog ping; a daemon that is stuck stops pinging
	// and systemd restarts it. If nil, the daemon counts as healthy while it runs.
	Healthy func() bool
	// Ready is the status line given to systemd with READY once everything runs.
	Ready string
	// Fields are added to the "started" log line, which also names the admin and metrics
	// addresses and the pid file.
	Fields logrus.Fields
}

// Run runs the daemon's parts until ctx ends or Main returns, then stops them in order (see the
// package comment) and returns when every goroutine it started has ended. The result is Main's
// error, else the first error of With or After.
func (d *Daemon) Run(ctx context.Context, p Parts) error {
	if p.Admin != nil && d.adminLn == nil {
		return errors.New("daemon: an admin server without an admin listener")
	}
	// Signals are caught from the start: systemd may send SIGHUP as soon as READY arrives, and an
	// uncaught SIGHUP, SIGUSR1 or SIGUSR2 would end the process.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(signals)
	// The components' contexts keep ctx's values but not its end: the signal loop decides when
	// each of them stops.
	base := context.WithoutCancel(ctx)
	mainCtx, stopMain := context.WithCancel(base)
	defer stopMain()
	afterCtx, stopAfter := context.WithCancel(base)
	defer stopAfter()
	auxCtx, stopAux := context.WithCancel(base)
	defer stopAux()

	var g, after errgroup.Group
	mainDone := make(chan error, 1)
	g.Go(func() error { mainDone <- p.Main(mainCtx); return nil })
	for _, f := range p.With {
		g.Go(func() error { return f(mainCtx) })
	}
	for _, f := range p.After {
		after.Go(func() error { return f(afterCtx) })
	}
	fields := logrus.Fields{}
	var servers []Server
	serve := func(s Server, ln net.Listener, what string) {
		fields[what+"_addr"] = ln.Addr().String()
		servers = append(servers, s)
		g.Go(func() error {
			if err := s.Serve(ln); err != nil && auxCtx.Err() == nil {
				d.Log.WithError(err).Error(what + " listener failed")
			}
			return nil
		})
	}
	if p.Admin != nil {
		serve(p.Admin, d.adminLn, "admin")
		d.adminLn = nil
	}
	if d.metricsLn != nil {
		h := diaghttp.Handler(diaghttp.Config{Registry: d.Metrics, Pprof: d.opts.Pprof})
		serve(&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, d.metricsLn, "metrics")
		d.metricsLn = nil
	}
	g.Go(func() error {
		if err := sdnotify.Watchdog(auxCtx, p.Healthy); err != nil {
			d.Log.WithError(err).Warn("systemd watchdog")
		}
		return nil
	})
	if d.opts.PIDFile != "" {
		fields["pid_file"] = d.opts.PIDFile
	}
	d.Log.WithFields(fields).WithFields(p.Fields).Info("started")
	sdnotify.Ready(p.Ready)

	result := d.loop(ctx, signals, mainDone, p.Reload)
	sdnotify.Stopping()
	stopMain()
	if err := <-mainDone; err != nil && result == nil {
		result = err
	}
	stopAfter()
	if err := after.Wait(); err != nil && result == nil {
		result = err
	}
	stopAux()
	shutCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(shutCtx)
	}
	if err := g.Wait(); err != nil && result == nil {
		result = err
	}
	d.Log.Info(d.opts.Name + " stopped")
	return result
}

// loop is the signal loop: it returns when ctx ends (nil) or Main returns (Main's result, which
// it puts back for Run).
func (d *Daemon) loop(ctx context.Context, signals <-chan os.Signal, mainDone chan error, reload func() string) error {
	for {
		select {
		case <-ctx.Done():
			d.Log.Info("shutdown requested: stopping")
			return nil
		case err := <-mainDone:
			mainDone <- err // Run reads it again
			return err
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP:
				if reload == nil {
					d.Log.Info("SIGHUP: nothing to reload")
					continue
				}
				sdnotify.Reloading()
				sdnotify.Ready(reload())
			case syscall.SIGUSR1:
				d.Levels.Step(+1, "SIGUSR1")
			case syscall.SIGUSR2:
				d.Levels.Step(-1, "SIGUSR2")
			}
		}
	}
}
