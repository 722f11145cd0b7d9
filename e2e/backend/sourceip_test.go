package backend_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"

	"smartproxy/backend/store"
)

// TestOutgoingSourceIPUnavailable sets, through the backend, an outgoing source address that is
// not an address of the DMZ host (192.0.2.10, TEST-NET-1: nothing is sent, the bind fails): the
// server refuses that configuration version as a whole, the previous one stays in force so that
// partners keep getting in, and the critical event outgoing_source_ip_unavailable reaches the
// backend through the client. An address of the host (127.0.0.2) is then accepted.
func TestOutgoingSourceIPUnavailable(t *testing.T) {
	s := newSystem(t)
	s.importLicense()
	s.cli("partner", "add", "--odette-id", partnerID, "--password", partnerPassword)
	s.startBackend()
	s.startServer()
	s.startClient()
	s.server.WaitLog(t, listenerOpened, 1)
	p := s.partner(partnerID)
	s.waitOutcome(t, "the partner", p, partnerID, partnerPassword, admitted)

	s.cli("config", "set", "outgoing_source_ip", "192.0.2.10")
	s.server.WaitLog(t, regexp.MustCompile(`event=outgoing_source_ip_unavailable .*reason=not_local_address`), 1)
	s.server.WaitLog(t, regexp.MustCompile(`event=config_rejected`), 1)
	ctx := context.Background()
	var evs []store.Event
	waitFor(t, "the critical event in the backend", func() bool {
		var err error
		evs, err = s.api.store.Events(ctx, store.EventFilter{Name: "outgoing_source_ip_unavailable", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs) > 0
	})
	if evs[0].Severity != "critical" {
		t.Errorf("outgoing_source_ip_unavailable stored with severity %q, want critical", evs[0].Severity)
	}
	m := regexp.MustCompile(`configuration version (\d+) refused; version (\d+) stays in force: outgoing_source_ip`).FindStringSubmatch(s.server.Stderr.String())
	if m == nil {
		t.Fatal("the server did not log which version it refused and which stays in force")
	}
	if regexp.MustCompile(`configuration version ` + m[1] + ` in force`).MatchString(s.server.Stderr.String()) {
		t.Errorf("the server applied version %s with 192.0.2.10, want it refused as a whole", m[1])
	}
	// The previous version stays in force: the partner still gets in.
	s.waitOutcome(t, "the partner after the refused version", p, partnerID, partnerPassword, admitted)

	s.cli("config", "set", "outgoing_source_ip", "127.0.0.2")
	refused, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	inForce := regexp.MustCompile(`configuration version (\d+) in force`)
	waitFor(t, "a version after the refused one in force", func() bool {
		for _, v := range inForce.FindAllStringSubmatch(s.server.Stderr.String(), -1) {
			if n, _ := strconv.Atoi(v[1]); n > refused {
				return true
			}
		}
		return false
	})
	s.waitOutcome(t, "the partner with 127.0.0.2 as source address", p, partnerID, partnerPassword, admitted)
}
