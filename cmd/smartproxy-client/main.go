// Command smartproxy-client is the internal part of the SmartProxy for OFTP2: it dials the DMZ
// server, pushes the security configuration to it and forwards the OFTP2 sessions the server
// admits to the internal OFTP2 server. Run it with -h for its options; docs/operations.md
// describes its operation and docs/configuration.md its configuration file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"smartproxy/client/configfile"
	"smartproxy/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "smartproxy-client:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run executes one command line and returns when everything it started has ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	switch {
	case o.help:
		o.usage(stdout)
		return nil
	case o.version:
		fmt.Fprintln(stdout, "smartproxy-client", buildinfo.Version())
		return nil
	case o.check:
		return runCheck(o.configFile, stdout)
	}
	return runDaemon(ctx, o, stderr)
}

// runCheck loads the configuration file as the daemon would and prints a summary and every
// warning (--check). An invalid file is an error naming every problem.
func runCheck(path string, stdout io.Writer) error {
	l, err := configfile.NewLoader(path, nil)
	if err != nil {
		return err
	}
	res, err := l.Load()
	if err != nil {
		return err
	}
	s := res.Snapshot
	sec := s.Security
	enabled := 0
	for _, p := range sec.GetPartners() {
		if p.GetEnabled() {
			enabled++
		}
	}
	fmt.Fprintf(stdout, "%s: valid\n", l.Path())
	fmt.Fprintf(stdout, "  version:          %d\n", s.Version)
	fmt.Fprintf(stdout, "  sha256:           %x\n", s.Digest)
	fmt.Fprintf(stdout, "  partners:         %d (%d enabled)\n", len(sec.GetPartners()), enabled)
	fmt.Fprintf(stdout, "  trusted CAs:      %d\n", len(sec.GetTrustedCaCertificates()))
	fmt.Fprintf(stdout, "  CRLs:             %d\n", len(sec.GetCrls()))
	fmt.Fprintf(stdout, "  internal server:  %s", s.Internal.Address)
	if s.Internal.TLS != nil {
		fmt.Fprintf(stdout, " (TLS, server name %s)", s.Internal.TLS.ServerName)
	}
	fmt.Fprintln(stdout)
	if ip := sec.GetOutgoingSourceIp(); ip != "" {
		fmt.Fprintf(stdout, "  outgoing from:    %s\n", ip)
	}
	for _, r := range sec.GetOutgoingRoutes() {
		fmt.Fprintf(stdout, "  route %s: listen %s -> partner %s at %s\n", r.GetName(), r.GetListenAddress(), r.GetPartnerOdetteId(), r.GetPartnerAddress())
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stdout, "  warning: %s\n", w)
	}
	return nil
}
