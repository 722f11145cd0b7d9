package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
	"smartproxy/tunnel"
)

// TestSeveralClients runs two clients on one server, as in high availability: both push the
// same configuration version and the server applies it once, without flapping; new sessions go
// to the tunnel with the fewest sessions; the admin status lists both tunnels; when one client
// goes, its session ends with ESID 05 while the other client's session stays open, and events
// and new sessions go on over the remaining client.
func TestSeveralClients(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	env := newEnv(t, p, cfg, envOptions{})
	a := env.client
	// The second client batches data; the first speaks as a client without capabilities.
	b := servertest.StartClient(t, servertest.ClientConfig{Addr: env.tunnel, PKI: p, Responder: env.responder.Addr, ClientID: "client-b",
		Capabilities: []string{"a_future_feature", tunnel.CapabilityDataBatches}})
	w := b.WaitWelcome(t)
	if w.GetConfigVersion() != 1 {
		t.Errorf("second client's Welcome.config_version = %d, want 1", w.GetConfigVersion())
	}
	if got := w.GetCapabilities(); !slices.Equal(got, []string{tunnel.CapabilityDataBatches}) {
		t.Errorf("second client's Welcome.capabilities = %q, want only %q", got, tunnel.CapabilityDataBatches)
	}
	if got := a.WaitWelcome(t).GetCapabilities(); len(got) != 0 {
		t.Errorf("first client's Welcome.capabilities = %q, want none (it announced none)", got)
	}
	// Both follow the same backend: the same version again is confirmed, not applied again.
	b.PushConfig(1, cfg)
	if ca := b.WaitApplied(t, 1); !ca.GetOk() {
		t.Fatalf("second client's version 1: %v", ca.GetErrors())
	}
	a.PushConfig(1, cfg)
	if ca := a.WaitApplied(t, 1); !ca.GetOk() {
		t.Fatalf("first client's version 1 again: %v", ca.GetErrors())
	}
	if n := countEvents(env.hook, EventConfigApplied); n != 1 {
		t.Errorf("config_applied logged %d times for one version pushed by two clients, want 1", n)
	}

	// Least sessions: the first session goes to one tunnel, the second to the other.
	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp1 := rawSession(t, env, leaf, "O0013PARTNER")
	rawSession(t, env, leaf, "O0013PARTNER")
	if na, nb := len(a.SessionOpens()), len(b.SessionOpens()); na != 1 || nb != 1 {
		t.Fatalf("sessions opened on the tunnels: %d and %d, want 1 and 1", na, nb)
	}
	ctx := context.Background()
	st, err := env.s.Admin().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]int{}
	for _, tun := range st.Tunnels {
		clients[tun.ClientID] = tun.OpenSessions
	}
	if len(st.Tunnels) != 2 || clients["servertest-client"] != 1 || clients["client-b"] != 1 {
		t.Errorf("admin status tunnels = %+v, want servertest-client and client-b with one session each", st.Tunnels)
	}

	// The first client goes: its session ends with ESID 05, the other's stays. rp1 went to the
	// first client's tunnel (the oldest wins a tie).
	if sessions, err := env.s.Admin().Sessions(ctx); err != nil || len(sessions) != 2 || sessions[0].ClientID != "servertest-client" {
		t.Fatalf("admin sessions = %+v, %v; want two, the first on servertest-client", sessions, err)
	}
	a.Stop()
	esid, err := rp1.ReadESID(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("partner of the lost client's session got ESID %s, want 05", esid.Reason)
	}
	env.logEntry(t, EventSessionEnded, func(e *logrus.Entry) bool { return e.Data["reason"] == "inside_tunnel_lost" })
	waitFor(t, "the lost client's session to end", func() bool { s, _ := env.s.Admin().Sessions(ctx); return len(s) == 1 })
	if s, _ := env.s.Admin().Sessions(ctx); len(s) != 1 || s[0].ClientID != "client-b" || s[0].State != "open" {
		t.Errorf("sessions after the first client went = %+v, want client-b's session open", s)
	}
	if env.s.PartnerAddr() == "" {
		t.Error("the partner listener closed while a client is still connected")
	}

	// Events and new sessions go over the remaining client: the news of the first client's
	// tunnel reaches the second, and a new partner is opened on it.
	b.WaitEvent(t, EventTunnelDisconnected, func(e *tunnelv1.Event) bool { return e.GetFields()["client_id"] == "servertest-client" })
	rawSession(t, env, leaf, "O0013PARTNER")
	if n := len(b.SessionOpens()); n != 2 {
		t.Errorf("sessions opened on the remaining tunnel: %d, want 2", n)
	}
}

// TestPartnerListenAddressOverride: Config.PartnerListenAddress (--partner-listen) binds the
// partner listener there, whatever address the shared configuration names.
func TestPartnerListenAddressOverride(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
	own := testnet.ReserveAddr(t)
	env := newEnv(t, p, cfg, envOptions{config: func(c *Config) { c.PartnerListenAddress = own }})
	if got := env.waitListener(t, true); got != own || got == cfg.GetPartnerListenAddress() {
		t.Fatalf("partner listener at %q with the configuration naming %q, want %q", got, cfg.GetPartnerListenAddress(), own)
	}
	expectSSRM(t, own, p)
	if _, err := New(Config{TunnelListener: env.s.cfg.TunnelListener, TunnelCredentials: env.s.cfg.TunnelCredentials, ProxyID: testProxyID,
		PartnerListenAddress: "127.0.0.1"}); err == nil {
		t.Error("New() with a partner listen address without a port = nil error")
	}
}
