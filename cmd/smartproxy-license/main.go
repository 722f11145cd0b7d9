// Command smartproxy-license issues, inspects and signs SmartProxy licenses;
// it is a tool for the vendor and for developers, not for the DMZ host.
//
//	smartproxy-license keygen --out FILE [--key-id ID]
//	smartproxy-license issue --proxy-id ID --customer NAME --days N (--key FILE [--key-id ID] | --dev)
//	                         [--max-sessions N] [--features a,b] [--not-before RFC3339] --out FILE [--force]
//	smartproxy-license inspect [--proxy-id ID] FILE
//
// keygen writes a new Ed25519 signing key (PKCS #8 PEM, mode 0600) and prints
// the "keyid:base64" line to compile into release builds. issue signs a
// license; --dev uses the development key, which only development builds
// accept. inspect prints a license and whether the keys compiled into this
// binary verify it; it exits with status 1 when they do not, or when the
// license is not valid now (for --proxy-id, if given). docs/license.md
// describes the file format and the release build settings.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "smartproxy-license:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError is a command line that cannot be run as given.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const usage = `usage:
  smartproxy-license keygen --out FILE [--key-id ID]
  smartproxy-license issue --proxy-id ID --customer NAME --days N (--key FILE [--key-id ID] | --dev)
                           [--max-sessions N] [--features a,b] [--not-before RFC3339] --out FILE [--force]
  smartproxy-license inspect [--proxy-id ID] FILE
Run a subcommand with -h for its options.
`

// run executes one command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no subcommand")
	}
	switch args[0] {
	case "keygen":
		return runKeygen(args[1:], stdout, stderr)
	case "issue":
		return runIssue(args[1:], stdout, stderr)
	case "inspect":
		return runInspect(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usagef("unknown subcommand %q", args[0])
}

// parseFlags parses args with fs, allowing flags after positional
// arguments, and returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
