package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"smartproxy/internal/diaghttp"
	"smartproxy/internal/logging"
)

// FlagDefaults are one daemon's defaults for the flags every daemon shares (AddFlags).
type FlagDefaults struct {
	// Admin is the default of --admin; NoAdmin leaves the flag out (a daemon without an admin
	// service).
	Admin string
	// Metrics is the default of --metrics.
	Metrics string
	// PIDFile is the name of the default PID file, beside the binary; empty: no PID file unless
	// --pid-file names one.
	PIDFile string
}

// NoAdmin as FlagDefaults.Admin leaves --admin out.
const NoAdmin = "-"

// AddFlags registers on fs the flags every daemon shares, writing into o: --log-level,
// --log-format, --log-dir, --log-max-age, --log-max-files, --pid-file, --metrics, --pprof and,
// unless d.Admin is NoAdmin, --admin. After fs.Parse, the returned function checks them and
// fills in what depends on them (the log level, the retention, the default PID file); each
// error names its flag, for the caller to report as a usage error.
func AddFlags(fs *flag.FlagSet, o *Options, d FlagDefaults) (check func() error) {
	level := fs.String("log-level", "info", "log `LEVEL`: error, warn, info, debug or trace; SIGUSR1/SIGUSR2 change it at run time")
	fs.StringVar(&o.Log.Format, "log-format", "text", "log `FORMAT`: text or json")
	fs.StringVar(&o.Log.Dir, "log-dir", "", "write logs to daily files in `DIR` instead of stderr")
	retention := logging.AddRetentionFlags(fs)
	pidHelp := "PID `FILE`, refused while another live process holds it"
	if d.PIDFile != "" {
		pidHelp += " (default: " + d.PIDFile + " beside the binary); --pid-file= disables it"
	}
	fs.StringVar(&o.PIDFile, "pid-file", "", pidHelp)
	if d.Admin != NoAdmin {
		fs.StringVar(&o.AdminAddr, "admin", d.Admin, "`ADDR` of the admin gRPC service (status, sessions, log level; loopback only); empty disables it")
	}
	fs.StringVar(&o.MetricsAddr, "metrics", d.Metrics, "`ADDR` of the Prometheus /metrics endpoint (loopback only); empty disables it")
	fs.BoolVar(&o.Pprof, "pprof", false, "serve Go runtime profiles at /debug/pprof/ on the --metrics listener (see docs/operations.md)")
	return func() error {
		var err error
		if o.Log.Level, err = logging.ParseLevel(*level); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		if f := o.Log.Format; f != "text" && f != "json" {
			return fmt.Errorf("--log-format %q: want text or json", f)
		}
		o.Log.Retention = *retention
		for _, a := range []struct{ flag, v string }{{"--admin", o.AdminAddr}, {"--metrics", o.MetricsAddr}} {
			if a.v == "" {
				continue
			}
			if err := diaghttp.CheckLoopback(a.v); err != nil {
				return fmt.Errorf("%s: %w", a.flag, err)
			}
		}
		if o.Pprof && o.MetricsAddr == "" {
			return errors.New("--pprof: the profiles are served on the --metrics listener, which is disabled")
		}
		if d.PIDFile != "" && !flagSet(fs, "pid-file") {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("--pid-file: cannot find the binary's directory for the default: %w", err)
			}
			o.PIDFile = filepath.Join(filepath.Dir(exe), d.PIDFile)
		}
		return nil
	}
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// LogTo returns o with its log written to w (where no --log-dir sends it to files).
func (o Options) LogTo(w io.Writer) Options {
	o.Log.Output = w
	return o
}
