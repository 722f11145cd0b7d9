package server

import (
	"context"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// TestOutgoingSourceIPCheck: a configuration whose outgoing_source_ip is an address of this host
// is applied; one with an address the host does not have (192.0.2.10, TEST-NET-1: the bind
// fails, nothing is sent) is refused as a whole with a critical event, the previous version
// stays in force and incoming sessions go on.
func TestOutgoingSourceIPCheck(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner(dialPartnerID)), envOptions{})
	c := env.client

	good := p.SecurityConfig(t, servertest.EnabledPartner(dialPartnerID))
	good.OutgoingSourceIp = "127.0.0.2"
	c.PushConfig(2, good)
	if a := c.WaitApplied(t, 2); !a.GetOk() {
		t.Fatalf("ConfigApplied(2) with outgoing_source_ip 127.0.0.2 = %v, want ok", a.GetErrors())
	}
	if got := env.s.Policy().OutgoingSourceIP.String(); got != "127.0.0.2" {
		t.Errorf("outgoing source IP in force = %s, want 127.0.0.2", got)
	}

	bad := p.SecurityConfig(t, servertest.EnabledPartner(dialPartnerID))
	bad.OutgoingSourceIp = "192.0.2.10"
	c.PushConfig(3, bad)
	a := c.WaitApplied(t, 3)
	if a.GetOk() || len(a.GetErrors()) != 1 || a.GetErrors()[0].GetField() != "outgoing_source_ip" ||
		!strings.Contains(a.GetErrors()[0].GetMessage(), "192.0.2.10") {
		t.Errorf("ConfigApplied(3) with outgoing_source_ip 192.0.2.10 = %v, want refused on outgoing_source_ip", a)
	}
	if v := env.s.Policy().Version; v != 2 {
		t.Errorf("version in force after the refusal = %d, want 2", v)
	}
	ev := c.WaitEvent(t, EventOutgoingSourceIPUnavailable, nil)
	if ev.GetSeverity() != tunnelv1.Severity_SEVERITY_CRITICAL || ev.GetFields()["source_ip"] != "192.0.2.10" || ev.GetFields()["config_version"] != "3" {
		t.Errorf("event %s = %v, want CRITICAL with source_ip 192.0.2.10 and config_version 3", EventOutgoingSourceIPUnavailable, ev)
	}
	c.WaitEvent(t, EventConfigRejected, func(ev *tunnelv1.Event) bool { return ev.GetFields()["config_version"] == "3" })
	if en := env.logEntry(t, EventOutgoingSourceIPUnavailable, nil); en.Level != logrus.WarnLevel {
		t.Errorf("log level of %s = %v, want warning", EventOutgoingSourceIPUnavailable, en.Level)
	}

	// Incoming sessions keep working under version 2.
	path, sum := writeFile(t, t.TempDir(), "after.bin", randomBytes(t, 4096))
	res, err := sendFiles(t, env.s.PartnerAddr(), p.Partner(t, dialPartnerID, nil), partnerTLS(p), dialPartnerID, nil,
		endpoint.OutgoingFile{Path: path, DatasetName: "AFTER"})
	if err != nil || res.Err() != nil {
		t.Fatalf("incoming session after the refused version: %v / %v", err, res.Err())
	}
	results, err := env.responder.WaitResults(context.Background(), 1)
	if err != nil || len(results[0].Result.Received) != 1 || results[0].Result.Received[0].SHA256 != sum {
		t.Errorf("responder results = %v, %v; want the file with sha256 %s", results, err, sum)
	}
}
