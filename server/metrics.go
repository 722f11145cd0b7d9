package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. All names start with smartproxy_server_.
type metrics struct {
	sessions      prometheus.Gauge
	handshakes    prometheus.Gauge
	admissions    *prometheus.CounterVec // result: accepted or the refusal's event name
	bytes         *prometheus.CounterVec // direction: from_partner, to_partner
	buffers       *prometheus.CounterVec // direction: from_partner, to_partner
	violations    *prometheus.CounterVec // side: partner, inside; command
	tunnels       prometheus.Gauge
	configVersion prometheus.Gauge
	configResults *prometheus.CounterVec // result: applied, rejected, stale
	licenseValid  prometheus.Gauge
	listenerOpen  prometheus.Gauge
	eventsDropped prometheus.Counter
	// eventsSuppressed counts security events not logged one by one (summarised).
	eventsSuppressed prometheus.Counter
	crlReports       prometheus.Counter
	windowStalls     prometheus.Counter
	tunnelRTT        prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_server_partner_sessions", Help: "Open partner connections (admitted or being admitted)."}),
		handshakes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_server_partner_handshakes", Help: "Partner connections in TLS handshake or SSID exchange."}),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_server_partner_admissions_total", Help: "Partner connections by admission result: accepted or the refusal's event name."}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_server_relayed_bytes_total", Help: "OFTP2 exchange buffer bytes relayed, by direction."}, []string{"direction"}),
		buffers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_server_relayed_buffers_total", Help: "OFTP2 exchange buffers relayed, by direction."}, []string{"direction"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_server_protocol_violations_total", Help: "OFTP2 validator violations, by the side that sent the command and the command."}, []string{"side", "command"}),
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_server_tunnels", Help: "Connected client tunnels."}),
		configVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_server_config_version", Help: "Configuration version in force; 0 before the first."}),
		configResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_server_config_snapshots_total", Help: "Configuration snapshots received, by result."}, []string{"result"}),
		licenseValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_server_license_valid", Help: "1 when the installed license is valid, else 0."}),
		listenerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_server_partner_listener_open", Help: "1 while the partner listener accepts connections."}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smartproxy_server_tunnel_events_dropped_total", Help: "Event frames not sent because the queue to the tunnel was full (the log line was written)."}),
		eventsSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smartproxy_server_security_events_suppressed_total", Help: "Security events past their source's threshold, counted in partner_refusals_suppressed summaries instead of logged one by one."}),
		crlReports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smartproxy_server_crl_url_reports_total", Help: "CRL distribution point URLs reported to the client."}),
		windowStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smartproxy_server_tunnel_window_stalls_total", Help: "Writes to a tunnel session that waited for the client's credit (backpressure)."}),
		tunnelRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "smartproxy_server_tunnel_rtt_seconds", Help: "Round-trip time of tunnel Ping frames.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sessions, m.handshakes, m.admissions, m.bytes, m.buffers, m.violations,
		m.tunnels, m.configVersion, m.configResults, m.licenseValid, m.listenerOpen, m.eventsDropped, m.eventsSuppressed, m.crlReports,
		m.windowStalls, m.tunnelRTT} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// tunnelMetrics feeds one tunnel's multiplexer counters into the server's metrics and its
// round-trip time into the tunnel's status. Its methods are called with the mux's lock held and
// only touch atomics and Prometheus collectors.
type tunnelMetrics struct {
	m  *metrics
	tc *tunnelConn
}

func (t tunnelMetrics) DataSent(int)        {}
func (t tunnelMetrics) DataReceived(int)    {}
func (t tunnelMetrics) SessionStarted(bool) {}
func (t tunnelMetrics) SessionEnded(error)  {}
func (t tunnelMetrics) WindowStall()        { t.m.windowStalls.Inc() }
func (t tunnelMetrics) RTT(d time.Duration) {
	t.tc.lastRTT.Store(int64(d))
	t.m.tunnelRTT.Observe(d.Seconds())
}
