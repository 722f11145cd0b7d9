package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"smartproxy/admin"
	"smartproxy/internal/buildinfo"
	"smartproxy/internal/daemon"
	"smartproxy/internal/license"
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
	d, err := daemon.Start(o.daemon.LogTo(stderr))
	if err != nil {
		return err
	}
	defer d.Close()
	proxyID, err := license.ProxyID()
	if err != nil {
		return fmt.Errorf("proxy ID: %w", err)
	}
	creds, err := transport.NewCertSource(transport.CertSourceConfig{
		CertFile: o.tunnelCert, KeyFile: o.tunnelKey, CAFile: o.tunnelCA, Logger: d.Log,
	})
	if err != nil {
		return fmt.Errorf("tunnel certificate: %w", err)
	}
	tunnelLn, err := net.Listen("tcp", o.tunnelAddr)
	if err != nil {
		return fmt.Errorf("tunnel listener: %w", err)
	}
	defer tunnelLn.Close() // the server closes it when it runs
	var svc *admin.Service // set below, before Run registers it on the tunnel port
	srv, err := server.New(server.Config{
		TunnelListener: tunnelLn, TunnelCredentials: creds, AllowedClients: o.allowedClients,
		RegisterTunnelServices: func(r grpc.ServiceRegistrar) { admin.Register(r, svc) },
		ProxyID:                proxyID, LicensePath: o.licenseFile, Version: buildinfo.Version(),
		Logger: d.Log, Levels: d.Levels, Metrics: d.Metrics, DrainTimeout: drain,
		PartnerListenAddress: o.partnerListen,
	})
	if err != nil {
		return err
	}
	if svc, err = admin.NewService(srv.Admin(), d.Log); err != nil {
		return err
	}
	parts := daemon.Parts{
		Main:   srv.Run,
		Reload: func() string { reload(d.Log, creds, srv); return "reloaded" },
		Ready:  fmt.Sprintf("tunnel listener on %s; waiting for a client", tunnelLn.Addr()),
		Fields: logrus.Fields{"tunnel_addr": tunnelLn.Addr().String(), "proxy_id": proxyID},
	}
	if o.daemon.AdminAddr != "" {
		if parts.Admin, err = admin.New(admin.Config{Backend: srv.Admin(), Logger: d.Log, Health: srv.Health()}); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	return d.Run(ctx, parts)
}

// reload re-reads the tunnel certificate files and the license (SIGHUP). Files that do not
// load leave the previous ones in use.
func reload(log logrus.FieldLogger, creds *transport.CertSource, srv *server.Server) {
	if changed, err := creds.Reload(); err != nil {
		log.WithError(err).Error("SIGHUP: tunnel certificate files not reloaded; the previous ones stay in use")
	} else {
		log.WithField("changed", changed).Info("SIGHUP: tunnel certificate files reloaded")
	}
	if err := srv.ReloadLicense(); err != nil {
		log.WithError(err).Warn("SIGHUP: license reloaded; it is not valid")
	}
}
