// Package buildinfo tells the software version of the running binary, for -v output, logs, the
// tunnel's Hello and Welcome frames and the smartproxy_build_info metric.
//
// A release build (`make release VERSION=x.y.z`) stamps the version, the commit and the build
// date with -ldflags -X into the variables below; any other build derives them from the module
// and VCS information that the go command records.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Build-time settings, set with -ldflags -X by `make release` (only string variables can be).
// They are never changed at run time.
var (
	// version is the release version, e.g. "0.2.0".
	version = ""
	// commit is the full VCS revision the release was built from.
	commit = ""
	// date is the build time, RFC 3339 in UTC.
	date = ""
)

// Version returns the software version: the release version stamped at build time, else the
// module version, else "devel-" and the VCS revision (with "+dirty" for a modified tree), else
// "devel".
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return fromBuildInfo(bi)
}

// Commit returns the VCS revision the binary was built from: the one stamped at build time,
// else the one the go command recorded, else "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if rev := setting(bi, "vcs.revision"); rev != "" {
			return rev
		}
	}
	return "unknown"
}

// Date returns the build date stamped at build time, else the commit time the go command
// recorded, else "unknown".
func Date() string {
	if date != "" {
		return date
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if t := setting(bi, "vcs.time"); t != "" {
			return t
		}
	}
	return "unknown"
}

// String is the -v line after the program name: version, commit and date.
func String() string {
	return Version() + " (commit " + Commit() + ", built " + Date() + ", " + runtime.Version() + ")"
}

// Collector returns the smartproxy_build_info gauge: always 1, with the version, commit, build
// date and Go version as labels, so that a dashboard can tell which build runs where.
func Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "smartproxy_build_info",
		Help: "Build of the running binary (always 1): version, commit, build date and Go version.",
		ConstLabels: prometheus.Labels{
			"version": Version(), "commit": Commit(), "date": Date(), "goversion": runtime.Version(),
		},
	}, func() float64 { return 1 })
}

func setting(bi *debug.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := setting(bi, "vcs.revision"), setting(bi, "vcs.modified") == "true"
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
