package daemon

import (
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// parseFlags runs AddFlags on a fresh flag set with args and returns the options and the check's
// error.
func parseFlags(t *testing.T, d FlagDefaults, args ...string) (Options, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o Options
	check := AddFlags(fs, &o, d)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	return o, check()
}

func TestAddFlags(t *testing.T) {
	d := FlagDefaults{Admin: "127.0.0.1:2880", Metrics: "127.0.0.1:2881", PIDFile: "test.pid"}
	o, err := parseFlags(t, d)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if o.Log.Level != logrus.InfoLevel || o.Log.Format != "text" || o.AdminAddr != d.Admin || o.MetricsAddr != d.Metrics ||
		filepath.Base(o.PIDFile) != "test.pid" || !filepath.IsAbs(o.PIDFile) {
		t.Errorf("defaults = %+v, want info, text, the default addresses and test.pid beside the binary", o)
	}
	o, err = parseFlags(t, d, "--log-level", "debug", "--log-format", "json", "--pid-file=", "--admin=", "--metrics", "[::1]:9", "--pprof",
		"--log-max-files", "3")
	if err != nil {
		t.Fatalf("all set: %v", err)
	}
	if o.Log.Level != logrus.DebugLevel || o.Log.Format != "json" || o.PIDFile != "" || o.AdminAddr != "" || o.MetricsAddr != "[::1]:9" ||
		!o.Pprof || o.Log.Retention.MaxFiles != 3 {
		t.Errorf("all set = %+v", o)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--admin", "0.0.0.0:2880"}, "--admin"},
		{[]string{"--metrics", "192.0.2.1:2881"}, "--metrics"},
		{[]string{"--metrics=", "--pprof"}, "--pprof"},
	} {
		if _, err := parseFlags(t, d, tt.args...); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one naming %s", tt.args, err, tt.want)
		}
	}
	// Without an admin service there is no --admin, and without a default no PID file.
	if _, err := parseFlags(t, FlagDefaults{Admin: NoAdmin, Metrics: d.Metrics}, "--admin", "127.0.0.1:1"); err == nil {
		t.Error("--admin accepted by a daemon without an admin service")
	}
	if o, err := parseFlags(t, FlagDefaults{Admin: NoAdmin}); err != nil || o.PIDFile != "" || o.MetricsAddr != "" {
		t.Errorf("no defaults: %+v, %v; want no PID file and no metrics listener", o, err)
	}
}
