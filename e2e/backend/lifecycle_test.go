package backend_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"smartproxy/backend/store"
)

var (
	listenerOpened = regexp.MustCompile(`event=partner_listener_opened`)
	configApplied  = regexp.MustCompile(`event=config_applied`)
	licenseValid   = regexp.MustCompile(`event=license_updated`)
	crlReceived    = regexp.MustCompile(`crls=1 event=config_received`)
)

func esid(code int) func(outcome) bool {
	return func(o outcome) bool { return !o.admitted && o.esid == code }
}

// refusedAtTLS is a refusal of the partner's certificate in the TLS handshake (the alert
// names the certificate), not one of the limits, which close the connection before TLS.
func refusedAtTLS(o outcome) bool {
	return !o.admitted && o.esid < 0 && strings.Contains(o.detail, "certificate")
}

// TestPartnerLifecycle drives the DMZ through the backend's admin CLI: a partner added with the
// CLI can connect through the DMZ, disabled it is refused at its next connection, enabled again
// it is admitted, and once its certificate is revoked in the CRL that the backend's downloader
// fetches from the CA's distribution point (learnt from the DMZ's report), it is refused at
// TLS while another partner of the same CA is still admitted. The license, too, comes from the
// backend.
func TestPartnerLifecycle(t *testing.T) {
	s := newSystem(t)
	s.importLicense()
	s.startBackend()
	s.startServer()
	s.startClient()
	s.server.WaitLog(t, listenerOpened, 1)
	s.server.WaitLog(t, licenseValid, 1)

	p := s.partner(partnerID)
	other := s.partner(otherID)
	t.Run("unknown partner refused", func(t *testing.T) {
		s.waitOutcome(t, "a partner the backend does not know", p, partnerID, partnerPassword, esid(3))
	})
	t.Run("added with the CLI", func(t *testing.T) {
		s.cli("partner", "add", "--odette-id", partnerID, "--name", "Partner AG", "--password", partnerPassword)
		s.cli("partner", "add", "--odette-id", otherID, "--name", "Other GmbH", "--password", otherPassword)
		s.waitOutcome(t, "the added partner", p, partnerID, partnerPassword, admitted)
		s.waitOutcome(t, "the second partner", other, otherID, otherPassword, admitted)
	})
	t.Run("disabled", func(t *testing.T) {
		s.cli("partner", "disable", partnerID)
		s.waitOutcome(t, "the disabled partner", p, partnerID, partnerPassword, esid(3))
		if o := s.probe(other, otherID, otherPassword); !o.admitted {
			t.Errorf("the other partner: %v, want admitted", o)
		}
		s.cli("partner", "enable", partnerID)
		s.waitOutcome(t, "the enabled partner", p, partnerID, partnerPassword, admitted)
	})
	t.Run("revoked", func(t *testing.T) {
		// The partner's connections made the DMZ report the distribution point; the backend's
		// downloader fetched the (empty) CRL and the client pushed it.
		waitFor(t, "the partner CA's CRL in the DMZ's configuration", func() bool {
			return strings.Contains(s.cli("crl-url", "list"), s.crl.url) && crlReceived.MatchString(s.client.Stderr.String())
		})
		s.crl.set(s.partnerCRL(serial(t, p)))
		o := s.waitOutcome(t, "the revoked partner", p, partnerID, partnerPassword, refusedAtTLS)
		t.Logf("revoked partner: %v", o)
		if o := s.probe(other, otherID, otherPassword); !o.admitted {
			t.Errorf("the other partner of the same CA: %v, want admitted", o)
		}
	})
	t.Run("backend records", func(t *testing.T) {
		ctx := context.Background()
		evs, err := s.api.store.Events(ctx, store.EventFilter{Name: "partner_unknown", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Error("no partner_unknown event of the DMZ server in the backend's store")
		}
		for _, ev := range evs {
			if ev.Source != "server" || ev.Client != "proxy-1" {
				t.Errorf("event %s: source %q client %q, want server events of proxy-1", ev.ID, ev.Source, ev.Client)
			}
		}
		// The client's reports: the server's license state and its answer to the newest
		// configuration, with the revision in force.
		rev, err := s.api.store.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the client's reports for the newest revision", func() bool {
			clients, err := s.api.store.Clients(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(clients) == 1 && clients[0].Config != nil && clients[0].Config.Revision == rev
		})
		clients, err := s.api.store.Clients(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := clients[0]
		if c.License == nil || !c.License.Valid || c.License.ProxyID != s.proxyID() {
			t.Errorf("license status in the backend = %+v, want the valid license of proxy %s", c.License, s.proxyID())
		}
		if !c.Config.Applied || len(c.Config.Errors) != 0 {
			t.Errorf("config status in the backend = %+v, want revision %d applied", c.Config, rev)
		}
	})
}

// TestBackendOutage stops the backend, restarts the DMZ server (which then holds nothing) and
// the client: the client configures the server from its state directory. Events raised during
// the outage — by partners the DMZ refuses, before and after a restart of the client and a
// SIGKILL of it — reach the backend once it is back: each exactly once (counted by id and by
// the partner's address in the backend's store).
func TestBackendOutage(t *testing.T) {
	s := newSystem(t)
	s.importLicense()
	s.cli("partner", "add", "--odette-id", partnerID, "--password", partnerPassword)
	s.startBackend()
	s.startServer()
	s.startClient()
	s.server.WaitLog(t, listenerOpened, 1)
	p := s.partner(partnerID)
	stranger := s.partner(strangerID)
	s.waitOutcome(t, "the partner", p, partnerID, partnerPassword, admitted)

	s.stopBackend()
	var addrs []string
	raise := func(n int) {
		t.Helper()
		for range n {
			// Each refusal from its own source: the server logs (and forwards) the first
			// refusals of a source one by one and summarises the rest.
			o := s.probeFrom(net.IPv4(127, 0, 1, byte(len(addrs)+1)), stranger, strangerID, "X")
			if o.admitted || o.esid != 3 {
				t.Fatalf("unknown partner: %v, want ESID 03", o)
			}
			addrs = append(addrs, o.local)
		}
	}
	raise(5)
	// Restart both daemons while the backend is down.
	s.client.Stop(t)
	s.server.Stop(t)
	s.startServer()
	s.startClient()
	s.client.WaitLog(t, regexp.MustCompile(`event=config_cached`), 1)
	s.server.WaitLog(t, listenerOpened, 1)
	s.waitOutcome(t, "the partner, configured from the client's state directory", p, partnerID, partnerPassword, admitted)
	raise(5)
	// Kill the client without warning once the last events are on its disk.
	waitFor(t, "the events in the client's spool", func() bool { return spoolHolds(t, s.path("client-state"), "partner_unknown", addrs[len(addrs)-1]) })
	s.client.Kill()
	s.startClient()
	s.client.WaitLog(t, regexp.MustCompile(`event=config_cached`), 1)
	s.waitOutcome(t, "the partner after the client's SIGKILL", p, partnerID, partnerPassword, admitted)
	raise(3)

	s.startBackend()
	ctx := context.Background()
	var evs []store.Event
	// Wait for every event; on a timeout the checks below name the missing ones.
	deadline := time.Now().Add(waitTimeout)
	for {
		var err error
		evs, err = s.api.store.Events(ctx, store.EventFilter{Name: "partner_unknown", Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) >= len(addrs) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v the backend holds %d of the %d outage events", waitTimeout, len(evs), len(addrs))
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the backend's store; no notification exists
	}
	byAddr := make(map[string]int)
	byID := make(map[string]int)
	for _, ev := range evs {
		byAddr[ev.RemoteAddr]++
		byID[ev.ID]++
	}
	for id, n := range byID {
		if n != 1 {
			t.Errorf("event id %s stored %d times, want once", id, n)
		}
	}
	for _, a := range addrs {
		if n := byAddr[a]; n != 1 {
			t.Errorf("the refusal of %s is in the backend %d times, want exactly once", a, n)
		}
	}
	if len(evs) != len(addrs) {
		t.Errorf("backend holds %d partner_unknown events, want %d (one per refused connection)", len(evs), len(addrs))
	}
	t.Logf("%d events raised during the outage, %d stored once each", len(addrs), len(evs))
}

// spoolHolds reports whether a spool segment of the client's state directory holds a complete
// record of the event name raised for the connection from remote. It reads the records (length,
// CRC-32C, JSON; client/spool): another event of the same connection (partner_crl_missing comes
// first) must not count, or the client could be killed while the awaited one is still in flight.
func spoolHolds(t testing.TB, state, name, remote string) bool {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(state, "spool", "seg-*.log"))
	for _, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			continue
		}
		for len(data) >= 8 {
			n := int(binary.BigEndian.Uint32(data[0:4]))
			if n == 0 || len(data) < 8+n {
				break // a record being written
			}
			var ev struct {
				Name       string `json:"name"`
				RemoteAddr string `json:"remote_addr"`
			}
			if json.Unmarshal(data[8:8+n], &ev) == nil && ev.Name == name && ev.RemoteAddr == remote {
				return true
			}
			data = data[8+n:]
		}
	}
	return false
}
