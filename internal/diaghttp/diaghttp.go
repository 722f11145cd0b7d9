// Package diaghttp is the handler of the daemons' loopback-only diagnostics listener
// (--metrics): Prometheus metrics at /metrics and, when enabled, Go's runtime profiles at
// /debug/pprof/.
//
// The profiles show where the process spends CPU and memory in the field (see
// docs/operations.md, "Profiling"). They are off unless the operator enables them: a CPU profile
// costs a few per cent while it runs and a heap or goroutine dump can be large, so they are
// served only on purpose and only on the loopback listener.
package diaghttp

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config says what the diagnostics handler serves.
type Config struct {
	// Registry is served at /metrics. It must not be nil.
	Registry *prometheus.Registry
	// Pprof serves net/http/pprof's handlers under /debug/pprof/. If false, those paths
	// answer 404.
	Pprof bool
}

// Handler returns the diagnostics handler.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	if cfg.Pprof {
		// The same routes net/http/pprof registers on http.DefaultServeMux, which the daemons
		// do not use.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// CheckLoopback reports an error when addr ("host:port") is not a loopback address: the
// daemons' unauthenticated listeners (metrics, admin) never serve another host. "localhost"
// counts as loopback; an empty host (all interfaces) does not.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to serve on %q, which is not a loopback address", addr)
	}
	return nil
}
