package client

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's Prometheus collectors. All names start with smartproxy_client_.
type metrics struct {
	tunnels       prometheus.Gauge
	tunnelConns   *prometheus.CounterVec // result: up, failed
	rtt           prometheus.Histogram
	sessions      prometheus.Gauge
	opens         *prometheus.CounterVec // result: accepted or the refusal's event name
	bytes         *prometheus.CounterVec // direction: to_internal, from_internal
	toInternal    prometheus.Counter     // bytes{direction="to_internal"}
	fromInternal  prometheus.Counter     // bytes{direction="from_internal"}
	configVersion prometheus.Gauge
	configResults *prometheus.CounterVec // result: applied, rejected
	events        *prometheus.CounterVec // severity of server events
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_client_tunnels", Help: "Tunnel streams established to the server."}),
		tunnelConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_client_tunnel_handshakes_total", Help: "Tunnel stream handshakes (Hello/Welcome), by result."}, []string{"result"}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "smartproxy_client_tunnel_rtt_seconds", Help: "Round-trip time of Ping/Pong on the tunnel streams.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_client_sessions", Help: "Open OFTP2 sessions."}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_client_session_opens_total", Help: "Incoming sessions by result: accepted or the refusal's event name."}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_client_relayed_bytes_total", Help: "OFTP2 exchange buffer bytes relayed, by direction."}, []string{"direction"}),
		configVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smartproxy_client_config_version", Help: "Configuration version in force in the client."}),
		configResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_client_config_results_total", Help: "ConfigApplied answers from the server, by result."}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smartproxy_client_server_events_total", Help: "Events received from the server, by severity."}, []string{"severity"}),
	}
	m.toInternal = m.bytes.WithLabelValues("to_internal")
	m.fromInternal = m.bytes.WithLabelValues("from_internal")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.tunnels, m.tunnelConns, m.rtt, m.sessions, m.opens, m.bytes, m.configVersion, m.configResults, m.events} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
