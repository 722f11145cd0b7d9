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
	"runtime/debug"
	"syscall"
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

// version returns the software version from the build information: the module version, else
// the VCS revision (with "+dirty" for a modified tree), else "devel".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return "devel-" + rev
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
		fmt.Fprintln(stdout, "smartproxy-client", version())
		return nil
	}
	return errors.New("the tunnel to the DMZ server is not available in this build yet")
}
