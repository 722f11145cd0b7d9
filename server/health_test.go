package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"smartproxy/admin"
	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/server/servertest"
)

// TestHealth checks the server's gRPC health on both ports, with a Go health client and with
// grpcurl: NOT_SERVING without a client, SERVING once a client has pushed a configuration and
// the partner listener is open, NOT_SERVING again when the license is removed (the tunnel part
// stays SERVING), each change logged.
func TestHealth(t *testing.T) {
	grpcurl := proctest.Grpcurl(t)
	p := servertest.NewPKI(t)
	env := newEnv(t, p, nil, envOptions{noClient: true, logLevel: logrus.InfoLevel})

	adm, err := admin.New(admin.Config{Backend: env.s.Admin(), Health: env.s.Health()})
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- adm.Serve(adminLn) }()
	t.Cleanup(func() { adm.Close(); <-served })

	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": p.TunnelCA.CertPEM, "client.pem": p.TunnelClient.CertPEM, "client-key.pem": p.TunnelClient.KeyPEM}
	for name, data := range files {
		if err := pki.WriteFile(filepath.Join(dir, name), data, pki.KeyFileMode); err != nil {
			t.Fatal(err)
		}
	}
	tlsArgs := []string{"-cacert", filepath.Join(dir, "ca.pem"), "-cert", filepath.Join(dir, "client.pem"),
		"-key", filepath.Join(dir, "client-key.pem"), "-servername", "localhost"}

	plainCC, err := grpc.NewClient("passthrough:///"+adminLn.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plainCC.Close()
	tlsCC, err := grpc.NewClient("passthrough:///"+env.tunnel, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{p.TunnelClient.TLS}, RootCAs: p.TunnelCA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsCC.Close()
	ports := []struct {
		name string
		cc   *grpc.ClientConn
		args []string // grpcurl's arguments before the method
	}{
		{"admin port", plainCC, []string{"-plaintext", adminLn.Addr().String()}},
		{"tunnel port", tlsCC, append(tlsArgs, env.tunnel)},
	}

	// check compares every service's status on both ports, through Go and through grpcurl,
	// waiting (bounded) for the state to settle.
	check := func(step string, want map[string]healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, port := range ports {
			for svc, w := range want {
				var got healthpb.HealthCheckResponse_ServingStatus
				waitFor(t, fmt.Sprintf("%s: %s health of %q = %s", step, port.name, svc, w), func() bool {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					r, err := healthpb.NewHealthClient(port.cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
					if err != nil {
						t.Fatalf("%s: %s Check(%q) = %v", step, port.name, svc, err)
					}
					got = r.GetStatus()
					return got == w
				})
				args := append(append([]string{"-d", fmt.Sprintf(`{"service":%q}`, svc)}, port.args...), "grpc.health.v1.Health/Check")
				out, err := proctest.RunGrpcurl(t, grpcurl, args...)
				if err != nil {
					t.Fatalf("%s: grpcurl %s = %v:\n%s", step, strings.Join(args, " "), err, out)
				}
				if !strings.Contains(out, fmt.Sprintf(`"status": %q`, w.String())) {
					t.Errorf("%s: grpcurl %s on the %s: %s, want %s", step, svc, port.name, strings.TrimSpace(out), w)
				}
			}
		}
	}
	const (
		serving    = healthpb.HealthCheckResponse_SERVING
		notServing = healthpb.HealthCheckResponse_NOT_SERVING
	)

	check("no client", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": notServing, admin.HealthServerTunnel: notServing, admin.HealthServerPartners: notServing})

	c := env.startClient(t, nil)
	check("client without configuration", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": notServing, admin.HealthServerTunnel: serving, admin.HealthServerPartners: notServing})

	c.PushConfig(1, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")))
	if a := c.WaitApplied(t, 1); !a.GetOk() {
		t.Fatal(a.GetErrors())
	}
	env.waitListener(t, true)
	check("configured", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": serving, admin.HealthServerTunnel: serving, admin.HealthServerPartners: serving})

	if err := os.Remove(env.licPath); err != nil {
		t.Fatal(err)
	}
	if err := env.s.ReloadLicense(); err == nil {
		t.Fatal("ReloadLicense() without a license file = nil, want an error")
	}
	check("license removed", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": notServing, admin.HealthServerTunnel: serving, admin.HealthServerPartners: notServing})

	// Every change was logged, with the reason of a NOT_SERVING part.
	var changes []string
	for _, e := range env.hook.AllEntries() {
		if e.Data["event"] == "health_changed" {
			changes = append(changes, fmt.Sprintf("%v=%v", e.Data["service"], e.Data["status"]))
			if e.Data["service"] == admin.HealthServerPartners && e.Data["status"] == "NOT_SERVING" && e.Data["reason"] == nil {
				t.Errorf("NOT_SERVING logged without a reason: %v", e.Data)
			}
		}
	}
	want := []string{
		"smartproxy.server.tunnel=SERVING",
		"smartproxy.server.partners=SERVING", "=SERVING",
		"smartproxy.server.partners=NOT_SERVING", "=NOT_SERVING",
	}
	if got := strings.Join(changes, " "); got != strings.Join(want, " ") {
		t.Errorf("logged health changes:\n got %s\nwant %s", got, strings.Join(want, " "))
	}
}
