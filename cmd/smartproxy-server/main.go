// Command smartproxy-server is the DMZ part of the SmartProxy for OFTP2. It accepts tunnels
// from smartproxy-client, receives the whole security configuration over them and, while a
// client is connected, admits OFTP2 partners and relays verified sessions inside. Run it with -h
// for its options; docs/operations.md describes its operation.
//
// It also provides the PKI helper for the tunnel certificates:
//
//	smartproxy-server pki init --dir DIR [--server-name NAME]... [--client-name NAME] [--force]
//
// writes a tunnel CA and the server and client tunnel certificates into DIR (see docs/pki.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"smartproxy/internal/buildinfo"
	"smartproxy/internal/license"
	"smartproxy/internal/pki"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "smartproxy-server:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// run executes one command line. It returns only when everything it started has ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "pki" {
		return runPKI(ctx, args[1:], stdout, stderr)
	}
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	switch {
	case o.help:
		o.usage(stdout)
		return nil
	case o.version:
		fmt.Fprintln(stdout, "smartproxy-server", buildinfo.String())
		return nil
	case o.printProxyID:
		id, err := license.ProxyID()
		if err != nil {
			return fmt.Errorf("proxy ID: %w", err)
		}
		fmt.Fprintln(stdout, id)
		return nil
	case o.printLicense:
		return printLicense(o.licenseFile, stdout)
	}
	return runDaemon(ctx, o, stderr)
}

// errLicenseInvalid is returned by -V for a license that is not valid (exit status 1).
var errLicenseInvalid = errors.New("license not valid")

// printLicense prints the validity of the license file at path (-V).
func printLicense(path string, stdout io.Writer) error {
	id, err := license.ProxyID()
	if err != nil {
		return fmt.Errorf("proxy ID: %w", err)
	}
	lic, loadErr := license.Load(path, license.TrustedKeys())
	st := license.StatusOf(lic, loadErr, id, time.Now())
	fmt.Fprintf(stdout, "license file: %s\nproxy id:     %s\n", path, st.ProxyID)
	if st.Customer != "" {
		fmt.Fprintf(stdout, "customer:     %s\n", st.Customer)
	}
	if !st.NotAfter.IsZero() {
		fmt.Fprintf(stdout, "valid until:  %s\n", st.NotAfter.UTC().Format(time.RFC3339))
	}
	if st.MaxSessions > 0 {
		fmt.Fprintf(stdout, "max sessions: %d\n", st.MaxSessions)
	}
	if !st.Valid {
		fmt.Fprintf(stdout, "status:       NOT VALID: %s\n", st.Reason)
		return errLicenseInvalid
	}
	fmt.Fprintln(stdout, "status:       valid")
	return nil
}

// runPKI executes `pki SUBCOMMAND ...`.
func runPKI(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: smartproxy-server pki init --dir DIR [--server-name NAME]... [--client-name NAME] [--force]")
		return &usageError{"pki: missing subcommand (want init)"}
	}
	switch args[0] {
	case "init":
		return runPKIInit(args[1:], stdout, stderr)
	}
	return &usageError{fmt.Sprintf("pki: unknown subcommand %q (want init)", args[0])}
}

func runPKIInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("smartproxy-server pki init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dir         = fs.String("dir", "", "directory to write the tunnel CA and certificates into (required; created with mode 0700)")
		clientName  = fs.String("client-name", "", "common name of the client certificate (default \"smartproxy-client\")")
		force       = fs.Bool("force", false, "replace existing files")
		serverNames stringList
	)
	fs.Var(&serverNames, "server-name", "extra DNS name or IP address of the server certificate (repeatable or comma-separated); localhost, 127.0.0.1, ::1 and the host name are always included")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smartproxy-server pki init --dir DIR [--server-name NAME]... [--client-name NAME] [--force]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("pki init: unexpected argument %q", fs.Arg(0))}
	}
	if *dir == "" {
		return &usageError{"pki init: --dir is required"}
	}
	files, err := pki.Init(*dir, pki.InitOptions{
		ServerNames: serverNames,
		ClientName:  *clientName,
		Overwrite:   *force,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d files:\n", len(files))
	for _, f := range files {
		mode := "0644"
		if f.Secret {
			mode = "0600"
		}
		fmt.Fprintf(stdout, "  %s  (%s)  %s\n", f.Path, mode, f.Purpose)
	}
	return nil
}
