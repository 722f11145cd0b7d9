// Command smartproxy-server is the DMZ part of the SmartProxy for OFTP2.
//
// For now it provides the PKI helper only:
//
//	smartproxy-server pki init --dir DIR [--server-name NAME]... [--client-name NAME] [--force]
//
// writes a tunnel CA and the server and client tunnel certificates into DIR
// (see docs/pki.md). Running it without the pki subcommand fails with a clear
// error until the daemon is built.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

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

// usageError marks errors caused by a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// errNoDaemon is returned for every command line that would start the
// daemon.
var errNoDaemon = errors.New("the DMZ daemon is not built yet; only `smartproxy-server pki init --dir DIR` is available")

// run executes one command line. It returns only when everything it started
// has ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "pki" {
		return runPKI(ctx, args[1:], stdout, stderr)
	}
	return errNoDaemon
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

// stringList is a repeatable string flag; each value may also hold a
// comma-separated list.
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
