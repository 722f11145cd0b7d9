package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"smartproxy/admin"
	"smartproxy/internal/backoff"
)

// outageRestart stops the system's server, keeps the tunnel port closed for outage, binds it
// again and starts a new server, and returns how long after the restart (the port reachable
// again) the client's tunnel was up and the partner listener open (the client had pushed its
// configuration).
func outageRestart(t testing.TB, sys *system, outage time.Duration) (tunnelUp, listenerOpen time.Duration) {
	t.Helper()
	sys.stopServer()
	// The outage is the scenario itself, not a wait for an event: the client must not be
	// able to reach any server for this long.
	time.Sleep(outage)
	ln, err := net.Listen("tcp", sys.tunnelAddr)
	if err != nil {
		t.Fatalf("bind the tunnel port again: %v", err)
	}
	restart := time.Now()
	sys.startServer(t, ln)
	hs := sys.server.Health().Server()
	deadline := restart.Add(time.Minute)
	for tunnelUp == 0 || listenerOpen == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the restart: tunnel up after %v, listener open after %v (0: not yet)", tunnelUp, listenerOpen)
		}
		if tunnelUp == 0 {
			r, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: admin.HealthServerTunnel})
			if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				tunnelUp = time.Since(restart)
			}
		}
		if listenerOpen == 0 && sys.server.PartnerAddr() != "" {
			listenerOpen = time.Since(restart)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return tunnelUp, listenerOpen
}

// TestReconnectAfterOutage stops the DMZ server for 3 s, so that the client backs off several
// times up to its (short, configured) cap, and starts a new one on the same port: the tunnel
// must be back, with the configuration pushed, within 5 s of the restart. The default cap is
// measured by BenchmarkReconnectAfterOutage (docs/benchmarks.md).
func TestReconnectAfterOutage(t *testing.T) {
	fx := newFixture(t)
	cap := time.Second
	sys := startSystem(t, fx, systemOptions{backoff: &backoff.Exponential{Base: 100 * time.Millisecond, Cap: cap}})
	sys.partnerAddr(t)
	tunnelUp, listenerOpen := outageRestart(t, sys, 3*time.Second)
	t.Logf("after a 3s outage with a %v cap: tunnel up %v, partner listener open %v after the restart", cap, tunnelUp, listenerOpen)
	if listenerOpen > 5*time.Second {
		t.Errorf("partner listener open %v after the restart, want within 5s", listenerOpen)
	}
	// The client's health followed its tunnel: up, down during the outage, up again.
	var changes []string
	for _, e := range sys.clientLog.entries("health_changed", map[string]string{"service": admin.HealthClientTunnel}) {
		changes = append(changes, fmt.Sprint(e.Data["status"]))
	}
	if got, want := strings.Join(changes, " "), "SERVING NOT_SERVING SERVING"; got != want {
		t.Errorf("client tunnel health changes logged: %q, want %q", got, want)
	}
	sys.mu.Lock()
	hs := sys.client.health.Server()
	sys.mu.Unlock()
	if r, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("client overall health = %v, %v, want SERVING", r, err)
	}
}

// BenchmarkReconnectAfterOutage measures, for a 20 s outage of the DMZ server, how long after
// the restart the tunnel is up again and the partner listener open: with the default backoff
// (3 s cap, reset after 10 s up) and, side by side, with the former one (30 s cap, reset after
// 60 s up). Each iteration takes the outage plus the reconnect:
//
//	go test -run '^$' -bench BenchmarkReconnectAfterOutage -benchtime 3x ./e2e/
func BenchmarkReconnectAfterOutage(b *testing.B) {
	const outage = 20 * time.Second
	for _, bc := range []struct {
		name string
		bo   backoff.Exponential
	}{
		{"default", backoff.Exponential{}},
		{"former_30s_cap", backoff.Exponential{Base: 500 * time.Millisecond, Cap: 30 * time.Second, StableAfter: time.Minute}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fx := newFixture(b)
			sys := startSystem(b, fx, systemOptions{backoff: &bc.bo})
			sys.partnerAddr(b)
			var tunnel, listener, worst time.Duration
			for b.Loop() {
				tu, lo := outageRestart(b, sys, outage)
				tunnel += tu
				listener += lo
				worst = max(worst, lo)
			}
			n := time.Duration(b.N)
			b.ReportMetric((tunnel / n).Seconds(), "s-tunnel-up")
			b.ReportMetric((listener / n).Seconds(), "s-listener-open")
			b.ReportMetric(worst.Seconds(), "s-worst-listener-open")
		})
	}
}
