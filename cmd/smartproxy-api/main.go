// Command smartproxy-api is the reference backend of the SmartProxy for
// OFTP2: the HTTPS API that smartproxy-client polls for the proxy's
// configuration and reports events to, and the admin commands that change
// that configuration. Both work on the same SQLite database file, also at the
// same time: a change made with an admin command reaches a waiting client
// within about a second.
//
//	smartproxy-api init [--client NAME]
//	smartproxy-api serve [--listen ADDR] [--cert FILE --key FILE] [--event-script PATH] ...
//	smartproxy-api fingerprint
//	smartproxy-api token create --client NAME | token list | token revoke ID
//	smartproxy-api partner add --odette-id ID [...] | list | show | enable | disable | remove | set
//	smartproxy-api ca add FILE | ca list | ca remove ID
//	smartproxy-api crl-url add URL | crl-url list | crl-url remove ID|URL
//	smartproxy-api crl import FILE [--url URL] | crl list | crl remove ID
//	smartproxy-api ignore add --substring TEXT [...] | ignore list | ignore remove ID
//	smartproxy-api config set KEY VALUE... | config unset KEY... | config show | config keys
//	smartproxy-api route add --name NAME [...] | route list | route remove NAME
//	smartproxy-api license import FILE | license show
//	smartproxy-api events list [--since T] [--name NAME] [--limit N]
//	smartproxy-api status
//	smartproxy-api export [--with-secrets]
//
// Every command takes --data-dir DIR (default $STATE_DIRECTORY, else
// /var/lib/smartproxy-api) and --db FILE (default DIR/smartproxy-api.db).
// docs/backend.md is the operator's guide.
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
			fmt.Fprintln(os.Stderr, "smartproxy-api:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError is a command line that cannot be run as given.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitCode is 2 for a wrong command line, 1 for any other failure.
func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const usage = `usage: smartproxy-api COMMAND [ARGS] [--data-dir DIR] [--db FILE]

  init [--client NAME]               create the database, a TLS certificate and a first token
  serve [--listen ADDR] ...          run the HTTPS API (see serve -h)
  fingerprint                        print the SHA-256 fingerprint of the API's certificate
  token create --client NAME         create a token for a proxy client (shown once)
  token list | token revoke ID
  partner add --odette-id ID [...]   add a partner (see partner add -h)
  partner list | show ID | enable ID | disable ID | remove ID | set ID [...]
  ca add FILE | ca list | ca remove ID|FINGERPRINT
  crl-url add URL | crl-url list | crl-url remove ID|URL
  crl import FILE [--url URL] | crl list | crl remove ID
  ignore add --substring TEXT [--description TEXT] [--valid-from T] [--valid-until T]
  ignore list | ignore remove ID
  config set KEY VALUE [KEY VALUE...] | config unset KEY... | config show | config keys
  route add --name NAME --listen ADDR --partner-address ADDR --partner-odette-id ID [--server-name NAME]
  route list | route remove NAME
  license import FILE | license show
  events list [--since T] [--name NAME] [--limit N]
  user add NAME [--password-file FILE] | user passwd NAME [...] | user remove NAME | user list
  status                             proxy clients, their last reports and the database
  export [--with-secrets]            the configuration document a proxy client gets

Run a command with -h for its options. docs/backend.md is the operator's guide.
`

// run executes one command line. It returns only when everything it
// started has ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "-v", "-version", "--version", "version":
		return runVersion(stdout)
	case "init":
		return runInit(ctx, rest, stdout, stderr)
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "fingerprint":
		return runFingerprint(ctx, rest, stdout, stderr)
	}
	group, ok := groups[cmd]
	if !ok {
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", cmd)
	}
	if group.single != nil {
		return group.single(cliAudit(ctx, cmd, rest), rest, stdout, stderr)
	}
	if len(rest) == 0 {
		return usagef("%s: missing subcommand (%s)", cmd, group.names())
	}
	sub, ok := group.subs[rest[0]]
	if !ok {
		return usagef("%s: unknown subcommand %q (%s)", cmd, rest[0], group.names())
	}
	return sub(cliAudit(ctx, cmd+" "+rest[0], rest[1:]), rest[1:], stdout, stderr)
}
