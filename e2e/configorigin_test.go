package e2e

import (
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"smartproxy/client"
	"smartproxy/client/configfile"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// TestConfigOriginSwitch switches a running pair from a client with a local file (versions are
// the file's modification time in milliseconds) to a client following the backend (versions
// are revisions, far smaller) without restarting the server: the backend's configuration
// replaces the file's at once and later revisions follow.
func TestConfigOriginSwitch(t *testing.T) {
	fx := newFixture(t)
	s := startSystem(t, fx, systemOptions{})
	fileVersion := strconv.FormatUint(s.server.Policy().Version, 10)
	s.serverLog.wait(t, "server", "config_applied", map[string]string{"config_version": fileVersion})

	loader, err := configfile.NewLoader(s.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot.Origin != client.OriginFile || res.Snapshot.Version < 1_000_000_000_000 {
		t.Fatalf("file snapshot origin %q version %d, want file and a millisecond timestamp", res.Snapshot.Origin, res.Snapshot.Version)
	}
	// The same configuration as the backend would give it, at revision 3, with the partner
	// disabled so that the switch is visible in what the server enforces.
	backendSnap := func(rev uint64, partnerEnabled bool) *client.Snapshot {
		snap := *res.Snapshot
		snap.Version, snap.Origin, snap.Source = rev, client.OriginBackend, "backend revision "+strconv.FormatUint(rev, 10)
		snap.Security = proto.Clone(res.Snapshot.Security).(*tunnelv1.SecurityConfig)
		for _, p := range snap.Security.GetPartners() {
			if p.GetOdetteId() == partnerID {
				p.Enabled = partnerEnabled
			}
		}
		return &snap
	}

	s.client.stop()
	rc := s.startClientWith(t, s.tunnelAddr, backendSnap(3, false))
	s.serverLog.wait(t, "server", "config_origin_changed", map[string]string{"config_version": "3", "old_config_version": fileVersion,
		"config_origin": client.OriginBackend, "old_config_origin": client.OriginFile})
	s.serverLog.wait(t, "server", "config_applied", map[string]string{"config_version": "3"})
	if p := s.server.Policy().Partners[partnerID]; p == nil || p.Enabled {
		t.Errorf("partner %s after the switch: %+v, want disabled as the backend's revision says", partnerID, p)
	}

	// The next revision follows although the server once held a far higher file version.
	if err := rc.c.SetConfig(backendSnap(4, true)); err != nil {
		t.Fatal(err)
	}
	s.serverLog.wait(t, "server", "config_applied", map[string]string{"config_version": "4"})
	if p := s.server.Policy().Partners[partnerID]; p == nil || !p.Enabled {
		t.Errorf("partner %s at revision 4: %+v, want enabled", partnerID, p)
	}
	if n := len(s.serverLog.entries("config_origin_changed", nil)); n != 1 {
		t.Errorf("%d config_origin_changed events, want 1", n)
	}
}
