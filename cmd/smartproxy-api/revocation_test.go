package main

import (
	"encoding/json"
	"regexp"
	"testing"

	"smartproxy/api/apiv1"
)

// TestRevocationCommands sets the revocation policy with the admin CLI: the proxy's setting and
// a partner's own policy reach the configuration document; "default" clears the partner's.
func TestRevocationCommands(t *testing.T) {
	dir := t.TempDir()
	mustCLI(t, dir, "init", "--client", "dmz-1")
	mustCLI(t, dir, "config", "set", "revocation", "hard")
	mustCLI(t, dir, "partner", "add", "--odette-id", "O0013SOFT", "--revocation", "soft")
	mustCLI(t, dir, "partner", "add", "--odette-id", "O0013OTHER")
	if _, _, err := cli(t, dir, "partner", "add", "--odette-id", "O0013BAD", "--revocation", "strict"); err == nil {
		t.Error("partner add --revocation strict succeeded, want an error")
	}
	if out := mustCLI(t, dir, "partner", "show", "O0013SOFT"); !regexp.MustCompile(`revocation:\s+soft`).MatchString(out) {
		t.Errorf("partner show = %q, want the partner's revocation soft", out)
	}
	doc := func() apiv1.ConfigDocument {
		t.Helper()
		var d apiv1.ConfigDocument
		if err := json.Unmarshal([]byte(mustCLI(t, dir, "export")), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := doc()
	if d.Revocation != apiv1.RevocationHard {
		t.Errorf("document revocation = %q, want hard", d.Revocation)
	}
	for _, p := range d.Partners {
		if want := map[string]apiv1.Revocation{"O0013SOFT": "soft", "O0013OTHER": ""}[p.OdetteID]; p.Revocation != want {
			t.Errorf("partner %s: revocation %q, want %q", p.OdetteID, p.Revocation, want)
		}
	}
	mustCLI(t, dir, "partner", "set", "O0013SOFT", "--revocation", "default")
	if p := doc().Partners[1]; p.OdetteID != "O0013SOFT" || p.Revocation != "" {
		t.Errorf("after --revocation default: %s revocation %q, want empty (the setting)", p.OdetteID, p.Revocation)
	}
}
