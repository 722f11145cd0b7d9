package backend

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus collectors. All names start with smartproxy_api_.
type metrics struct {
	requests     *prometheus.CounterVec // route, code
	authFailures *prometheus.CounterVec // reason
	crlFetches   *prometheus.CounterVec // result
	events       *prometheus.CounterVec // result: stored, duplicate
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_api_requests_total", Help: "HTTPS requests by route (the pattern they matched, \"unmatched\" for none) and status code."}, []string{"route", "code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_api_auth_failures_total", Help: "API requests refused for their bearer token (401), by reason."}, []string{"reason"}),
		crlFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_api_crl_fetches_total", Help: "CRL downloads by result: updated, not_modified, unchanged, rejected or failed."}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_api_events_total", Help: "Events posted by proxy clients, by result: stored, or duplicate (already stored, not stored again)."}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.authFailures, m.crlFetches, m.events} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// request counts one answered request. pattern is the ServeMux pattern it matched.
func (m *metrics) request(pattern string, code int) {
	if pattern == "" || pattern == "/" {
		pattern = "unmatched"
	}
	m.requests.WithLabelValues(pattern, strconv.Itoa(code)).Inc()
}
