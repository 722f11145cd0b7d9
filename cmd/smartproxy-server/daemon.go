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
	"google.golang.org/grpc"

	"smartproxy/admin"
	"smartproxy/internal/buildinfo"
	"smartproxy/internal/diaghttp"
	"smartproxy/internal/license"
	"smartproxy/internal/logging"
	"smartproxy/internal/pidfile"
	"smartproxy/internal/sdnotify"
	"smartproxy/server"
	"smartproxy/tunnel/transport"
)

// runDaemon runs the DMZ daemon until ctx ends (SIGTERM, SIGINT), then drains and returns when
// everything it started has ended.
func runDaemon(ctx context.Context, o *options, stderr io.Writer) error {
	drain, err := time.ParseDuration(o.drainTimeout)
	if err != nil || drain <= 0 {
		return usagef("--drain-timeout %q: want a positive duration such as 30s", o.drainTimeout)
	}
	log, logCloser, err := logging.New(logging.Options{
		Format: o.logFormat, Level: o.logLevel, Dir: o.logDir, Retention: *o.logRetention, Prefix: "smartproxy-server", Output: stderr,
	})
	if err != nil {
		return err
	}
	defer logCloser.Close()
	levels := logging.NewLevels(log)

	if o.pidFile != "" {
		pf, err := pidfile.Claim(o.pidFile, "smartproxy-server", log)
		if err != nil {
			return err
		}
		defer pf.Release()
	}

	proxyID, err := license.ProxyID()
	if err != nil {
		return fmt.Errorf("proxy ID: %w", err)
	}
	creds, err := transport.NewCertSource(transport.CertSourceConfig{
		CertFile: o.tunnelCert, KeyFile: o.tunnelKey, CAFile: o.tunnelCA, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("tunnel certificate: %w", err)
	}
	tunnelLn, err := net.Listen("tcp", o.tunnelAddr)
	if err != nil {
		return fmt.Errorf("tunnel listener: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())

	var svc *admin.Service // set below, before Run registers it on the tunnel port
	srv, err := server.New(server.Config{
		TunnelListener:         tunnelLn,
		TunnelCredentials:      creds,
		AllowedClients:         o.allowedClients,
		RegisterTunnelServices: func(r grpc.ServiceRegistrar) { admin.Register(r, svc) },
		ProxyID:                proxyID,
		LicensePath:            o.licenseFile,
		Version:                buildinfo.Version(),
		Logger:                 log,
		Levels:                 levels,
		Metrics:                reg,
		DrainTimeout:           drain,
		PartnerListenAddress:   o.partnerListen,
	})
	if err != nil {
		tunnelLn.Close()
		return err
	}
	if svc, err = admin.NewService(srv.Admin(), log); err != nil {
		tunnelLn.Close()
		return err
	}

	var adminSrv *admin.Server
	var adminLn net.Listener
	if o.adminAddr != "" {
		if adminSrv, err = admin.New(admin.Config{Backend: srv.Admin(), Logger: log, Health: srv.Health()}); err == nil {
			adminLn, err = adminSrv.Listen(o.adminAddr)
		}
		if err != nil {
			tunnelLn.Close()
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	var metricsSrv *http.Server
	var metricsLn net.Listener
	if o.metricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", o.metricsAddr); err != nil {
			tunnelLn.Close()
			if adminLn != nil {
				adminLn.Close()
			}
			return fmt.Errorf("metrics listener: %w", err)
		}
		metricsSrv = &http.Server{Handler: diaghttp.Handler(diaghttp.Config{Registry: reg, Pprof: o.pprof}), ReadHeaderTimeout: 10 * time.Second}
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	var wg sync.WaitGroup
	runErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); runErr <- srv.Run(runCtx) }()
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
	wdCtx, stopWD := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); sdnotify.Watchdog(wdCtx, nil) }()

	fields := logrus.Fields{"tunnel_addr": tunnelLn.Addr().String(), "proxy_id": proxyID}
	if adminLn != nil {
		fields["admin_addr"] = adminLn.Addr().String()
	}
	if metricsLn != nil {
		fields["metrics_addr"] = metricsLn.Addr().String()
	}
	if o.pidFile != "" {
		fields["pid_file"] = o.pidFile
	}
	log.WithFields(fields).Info("listening")
	sdnotify.Ready(fmt.Sprintf("tunnel listener on %s; waiting for a client", tunnelLn.Addr()))

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(signals)
	var result error
loop:
	for {
		select {
		case <-ctx.Done():
			sdnotify.Stopping()
			log.Info("shutdown requested: draining")
			break loop
		case err := <-runErr:
			runErr <- err // consumed again below
			result = err
			break loop
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP:
				sdnotify.Reloading()
				if changed, err := creds.Reload(); err != nil {
					log.WithError(err).Error("SIGHUP: tunnel certificate files not reloaded; the previous ones stay in use")
				} else {
					log.WithField("changed", changed).Info("SIGHUP: tunnel certificate files reloaded")
				}
				if err := srv.ReloadLicense(); err != nil {
					log.WithError(err).Warn("SIGHUP: license reloaded; it is not valid")
				}
				sdnotify.Ready("reloaded")
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
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if adminSrv != nil {
		adminSrv.Shutdown(shutCtx)
	}
	if metricsSrv != nil {
		metricsSrv.Shutdown(shutCtx)
	}
	stopWD()
	wg.Wait()
	return result
}
