package store

import (
	"context"
	"errors"
	"testing"
)

// TestRevocationPolicy stores the proxy's revocation setting and a partner's own policy,
// refuses other values, and writes both into the configuration document's source types.
func TestRevocationPolicy(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.SetSettings(ctx, []SettingChange{{Key: "revocation", Value: "HARD"}}); err != nil {
		t.Fatalf("set revocation hard: %v", err)
	}
	if err := s.SetSettings(ctx, []SettingChange{{Key: "revocation", Value: "maybe"}}); err == nil {
		t.Error("set revocation maybe: accepted, want an error")
	}
	st, err := s.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revocation != "hard" {
		t.Errorf("Settings().Revocation = %q, want hard (lower case)", st.Revocation)
	}

	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013SOFT", Enabled: true, Revocation: "soft"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013DEFAULT", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	var ie *ValidationError
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013BAD", Revocation: "strict"}); !errors.As(err, &ie) || ie.Field != "partners.revocation" {
		t.Errorf("AddPartner(revocation strict) = %v, want an invalid partners.revocation", err)
	}
	if err := s.UpdatePartner(ctx, "O0013DEFAULT", func(p *Partner) error { p.Revocation = "hard"; return nil }); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"O0013SOFT": "soft", "O0013DEFAULT": "hard"} {
		p, err := s.Partner(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Revocation != want || string(p.APIPartner().Revocation) != want {
			t.Errorf("partner %s: revocation %q (API %q), want %q", id, p.Revocation, p.APIPartner().Revocation, want)
		}
	}
}
