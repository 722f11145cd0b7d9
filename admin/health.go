package admin

import (
	"sync"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Named health services: each reports one part of a daemon. The overall status (service "")
// is SERVING only while every named part of the daemon is.
const (
	// HealthServerPartners is SERVING while smartproxy-server's partner listener is open (a
	// client tunnel is up and has pushed a valid configuration) and a valid license is
	// installed: while partner sessions can be admitted.
	HealthServerPartners = "smartproxy.server.partners"
	// HealthServerTunnel is SERVING while at least one client tunnel is connected to
	// smartproxy-server.
	HealthServerTunnel = "smartproxy.server.tunnel"
	// HealthClientTunnel is SERVING while smartproxy-client has at least one tunnel stream up.
	HealthClientTunnel = "smartproxy.client.tunnel"
	// HealthClientBackend is SERVING while smartproxy-client's last configuration poll of the
	// backend succeeded.
	HealthClientBackend = "smartproxy.client.backend"
)

// Health is a daemon's gRPC health service with named parts. Every part starts NOT_SERVING;
// the daemon reports each part with Set, and every change of a part or of the overall status
// is logged. One Health may be registered on several gRPC servers (the admin port and the
// tunnel port), which then answer alike. Health is safe for concurrent use.
type Health struct {
	srv *health.Server
	log logrus.FieldLogger

	mu      sync.Mutex
	parts   map[string]string // part → why it is not serving, "" when serving; owned by mu
	overall bool              // owned by mu
}

// NewHealth returns a Health with the named parts, all NOT_SERVING, logging to log (nil:
// nothing is logged).
func NewHealth(log logrus.FieldLogger, parts ...string) *Health {
	h := &Health{srv: health.NewServer(), log: loggerOrDiscard(log), parts: make(map[string]string, len(parts))}
	h.srv.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for _, p := range parts {
		h.parts[p] = "starting"
		h.srv.SetServingStatus(p, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// Server returns the gRPC health service to register.
func (h *Health) Server() *health.Server { return h.srv }

// Set reports one part: serving, or not serving for the reason why. A part NewHealth was not
// given is added.
func (h *Health) Set(part string, serving bool, why string) {
	if serving {
		why = ""
	} else if why == "" {
		why = "not serving"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old, known := h.parts[part]
	if known && old == why {
		return
	}
	h.parts[part] = why
	h.srv.SetServingStatus(part, servingStatus(serving))
	f := logrus.Fields{"event": "health_changed", "service": part, "status": servingStatus(serving).String()}
	if !serving {
		f["reason"] = why
	}
	if !known || (old == "") != serving {
		h.log.WithFields(f).Info("health status changed")
	}
	all := true
	for _, w := range h.parts {
		if w != "" {
			all = false
		}
	}
	if all != h.overall {
		h.overall = all
		h.srv.SetServingStatus("", servingStatus(all))
		h.log.WithFields(logrus.Fields{"event": "health_changed", "service": "", "status": servingStatus(all).String()}).Info("overall health status changed")
	}
}

func servingStatus(serving bool) healthpb.HealthCheckResponse_ServingStatus {
	if serving {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}
