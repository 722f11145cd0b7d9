package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"smartproxy/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open creates a database in a new temporary directory.
func open(t *testing.T) *Store {
	t.Helper()
	return openPath(t, filepath.Join(t.TempDir(), "api.db"), Options{Create: true})
}

func openPath(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tables returns the names of the tables in the database.
func tables(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.r.Query(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

var wantTables = []string{"admin_login_failures", "admin_sessions", "admin_users", "allowed_networks", "audit_log", "certificate_bindings", "clients", "config_status", "crl_blobs",
	"crl_chunks", "crl_urls", "crls", "events", "ignore_rules", "license_status", "licenses", "partners", "revision",
	"routes", "schema_version", "settings", "tokens", "trusted_cas"}

func TestMigrateFresh(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if diff := cmp.Diff(wantTables, tables(t, s)); diff != "" {
		t.Errorf("tables (-want +got):\n%s", diff)
	}
	v, err := s.SchemaVersion(ctx)
	if err != nil || v != SchemaVersion() {
		t.Errorf("SchemaVersion() = %d, %v, want %d", v, err, SchemaVersion())
	}
	var mode string
	if err := s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v, want wal", mode, err)
	}
	var fk int
	if err := s.r.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys on a reader = %d, %v, want 1", fk, err)
	}
	st, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("database file mode = %v, want 0600", st.Mode().Perm())
	}
	// Readers cannot write.
	if _, err := s.r.Exec(`DELETE FROM partners`); err == nil {
		t.Error("a write on a read-only connection succeeded")
	}
}

func TestMigrateRerun(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "api.db")
	s := openPath(t, path, Options{Create: true})
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013PARTNER", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openPath(t, path, Options{})
	var n int
	if err := s2.r.QueryRow(`SELECT count(*) FROM schema_version`).Scan(&n); err != nil || n != SchemaVersion() {
		t.Errorf("schema_version rows after a second Open = %d, %v, want %d", n, err, SchemaVersion())
	}
	if _, err := s2.Partner(ctx, "O0013PARTNER"); err != nil {
		t.Errorf("partner after reopening: %v", err)
	}
	// Migrating again is a no-op.
	if err := s2.migrate(ctx); err != nil {
		t.Errorf("migrate() again = %v", err)
	}
}

func TestMigrateNewerDatabaseRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "api.db")
	s := openPath(t, path, Options{Create: true})
	if _, err := s.w.Exec(`INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future', ?)`,
		SchemaVersion()+1, ts(time.Now())); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(ctx, path, Options{})
	var se *SchemaError
	if !errors.As(err, &se) || se.Database != SchemaVersion()+1 || se.Binary != SchemaVersion() {
		t.Fatalf("Open(newer database) = %v, want *SchemaError{%d, %d}", err, SchemaVersion()+1, SchemaVersion())
	}
	if !strings.Contains(err.Error(), "newer than this binary") {
		t.Errorf("error %q does not explain", err)
	}
}

func TestMigrationFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	bad := append(ms, migration{version: len(ms) + 1, name: "broken",
		sql: `CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);`})
	if err := s.applyMigrations(ctx, bad); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("applyMigrations(broken) = %v, want an error naming the migration", err)
	}
	if v, _ := s.SchemaVersion(ctx); v != len(ms) {
		t.Errorf("schema version after a failed migration = %d, want %d", v, len(ms))
	}
	if got := tables(t, s); len(got) != len(wantTables) {
		t.Errorf("tables after a failed migration = %v, want the table of the failed step rolled back", got)
	}
}

func TestOpenMissing(t *testing.T) {
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "none.db"), Options{})
	if !errors.Is(err, ErrNoDatabase) {
		t.Errorf("Open(missing) = %v, want ErrNoDatabase", err)
	}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	tok, info, err := s.CreateToken(ctx, "dmz-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != tokenLen {
		t.Errorf("token %q has the wrong form", tok)
	}
	c, err := s.Authenticate(ctx, tok)
	if err != nil || c.Name != "dmz-1" {
		t.Fatalf("Authenticate(new token) = %+v, %v, want client dmz-1", c, err)
	}
	// The token is not stored, only its hash.
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM tokens WHERE hash = ? OR hint = ?`, []byte(tok), tok).Scan(&n); err != nil || n != 0 {
		t.Errorf("token stored in plain text: %d rows, %v", n, err)
	}
	tok2, _, err := s.CreateToken(ctx, "dmz-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token, reason string
	}{
		{tok, "revoked token"},
		{TokenPrefix + strings.Repeat("A", 43), "unknown token"},
		{"", "malformed token"},
		{"'; DROP TABLE tokens; --", "malformed token"},
		{tok + "x", "malformed token"},
	}
	for _, tc := range tests {
		_, err := s.Authenticate(ctx, tc.token)
		var ae *AuthError
		if !errors.As(err, &ae) || ae.Reason != tc.reason {
			t.Errorf("Authenticate(%q) = %v, want reason %q", tc.token, err, tc.reason)
		}
	}
	if c, err := s.Authenticate(ctx, tok2); err != nil || c.Name != "dmz-1" {
		t.Errorf("Authenticate(second token) = %v, want still valid", err)
	}
	list, err := s.Tokens(ctx)
	if err != nil || len(list) != 2 || list[0].RevokedAt.IsZero() || !list[1].RevokedAt.IsZero() {
		t.Errorf("Tokens() = %+v, %v, want the first revoked, the second valid", list, err)
	}
	if err := s.RevokeToken(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeToken(999) = %v, want ErrNotFound", err)
	}
	for _, name := range []string{"", "a b", "'; DROP TABLE clients; --", strings.Repeat("x", 65)} {
		if _, _, err := s.CreateToken(ctx, name); err == nil {
			t.Errorf("CreateToken(%q) succeeded, want an invalid name", name)
		}
	}
	if got := tables(t, s); len(got) != len(wantTables) {
		t.Errorf("tables = %v", got)
	}
}

func TestSettings(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	ca, err := pki.NewCA("Company CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "edi.company.example"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(pki.Request{CommonName: "other.company.example"})
	if err != nil {
		t.Fatal(err)
	}
	good := []SettingChange{
		{"partner_listen_address", "127.0.0.1:6619"},
		{"company_certificate", string(leaf.CertPEM)},
		{"company_key", string(leaf.KeyPEM)},
		{"internal_server.address", "oftp.internal:3305"},
		{"limits.max_sessions", "500"},
		{"limits.per_ip_rate", "2.5"},
		{"limits.handshake_timeout", "10s"},
		{"log_level", "WARNING"},
		{"outgoing_source_ip", "192.0.2.10"},
		{"proxy_protocol.allowed_sources", "10.0.0.5, 2001:db8::/64"},
	}
	if err := s.SetSettings(ctx, good); err != nil {
		t.Fatalf("SetSettings(good) = %v", err)
	}
	got, err := s.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.PartnerListenAddress != "127.0.0.1:6619" || got.Limits.MaxSessions != 500 || got.Limits.PerIPRate != 2.5 ||
		got.Limits.HandshakeTimeout != 10*time.Second || got.LogLevel != "warn" || got.CompanyKeyPEM != string(leaf.KeyPEM) ||
		got.InternalServer.Address != "oftp.internal:3305" || strings.Join(got.ProxyProtocolSources, " ") != "10.0.0.5 2001:db8::/64" {
		t.Errorf("Settings() = %+v", got)
	}
	rev, _ := s.Revision(ctx)
	bad := []struct {
		name    string
		changes []SettingChange
		field   string
	}{
		{"unknown key", []SettingChange{{"nope", "1"}}, "nope"},
		{"address without port", []SettingChange{{"partner_listen_address", "0.0.0.0"}}, "partner_listen_address"},
		{"listen on a name", []SettingChange{{"partner_listen_address", "localhost:6619"}}, "partner_listen_address"},
		{"port 0 to connect", []SettingChange{{"internal_server.address", "10.0.0.1:0"}}, "internal_server.address"},
		{"negative duration", []SettingChange{{"limits.ssid_timeout", "-1s"}}, "limits.ssid_timeout"},
		{"not a number", []SettingChange{{"limits.max_sessions", "many"}}, "limits.max_sessions"},
		{"credit too high", []SettingChange{{"limits.max_credit", "1000"}}, "limits.max_credit"},
		{"buffer too small", []SettingChange{{"limits.max_buffer_size", "127"}}, "limits.max_buffer_size"},
		{"NaN rate", []SettingChange{{"limits.per_ip_rate", "NaN"}}, "limits.per_ip_rate"},
		{"log level", []SettingChange{{"log_level", "loud"}}, "log_level"},
		{"source IP", []SettingChange{{"outgoing_source_ip", "'; DROP TABLE settings; --"}}, "outgoing_source_ip"},
		{"proxy protocol source name", []SettingChange{{"proxy_protocol.allowed_sources", "10.0.0.5,lb.example"}}, "proxy_protocol.allowed_sources"},
		{"proxy protocol host bits", []SettingChange{{"proxy_protocol.allowed_sources", "10.0.0.1/29"}}, "proxy_protocol.allowed_sources"},
		{"key of another certificate", []SettingChange{{"company_key", string(other.KeyPEM)}}, "company_key"},
		{"certificate without its key", []SettingChange{{"company_certificate", string(other.CertPEM)}}, "company_key"},
		{"CA as company certificate", []SettingChange{{"company_certificate", string(ca.CertPEM)}}, "company_certificate"},
		{"garbage key", []SettingChange{{"company_key", "'; DROP TABLE settings; --"}}, "company_key"},
		{"NUL", []SettingChange{{"internal_server.tls.server_name", "a\x00b"}}, "internal_server.tls.server_name"},
		{"twice", []SettingChange{{"log_level", "info"}, {"log_level", "debug"}}, "log_level"},
		// One bad value spoils the whole command.
		{"good and bad", []SettingChange{{"log_level", "debug"}, {"limits.max_sessions", "-1"}}, "limits.max_sessions"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := s.SetSettings(ctx, tc.changes)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Errorf("SetSettings(%v) = %v, want a ValidationError for %s", tc.changes, err, tc.field)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error %q repeats key material", err)
			}
		})
	}
	after, _ := s.Settings(ctx)
	if diff := cmp.Diff(got, after); diff != "" {
		t.Errorf("settings changed by refused commands (-before +after):\n%s", diff)
	}
	if r, _ := s.Revision(ctx); r != rev {
		t.Errorf("revision after refused commands = %d, want %d", r, rev)
	}
	// Both together rotate the identity; an unchanged value does not bump the revision.
	if err := s.SetSettings(ctx, []SettingChange{{"company_certificate", string(other.CertPEM)}, {"company_key", string(other.KeyPEM)}}); err != nil {
		t.Errorf("rotating certificate and key together = %v", err)
	}
	rev, _ = s.Revision(ctx)
	if err := s.SetSettings(ctx, []SettingChange{{"log_level", "warn"}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Revision(ctx); r != rev {
		t.Errorf("revision after setting the same value = %d, want %d", r, rev)
	}
	// "" removes a setting.
	if err := s.SetSettings(ctx, []SettingChange{{"log_level", ""}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Settings(ctx); got.LogLevel != "" {
		t.Errorf("log_level after unset = %q", got.LogLevel)
	}
}

// sqlStrings are hostile texts stored (or refused) verbatim.
var sqlStrings = []string{
	"'; DROP TABLE partners; --",
	`Robert'); DELETE FROM partners; --`,
	`"quoted" 'single' ` + "`back`",
	"1 OR 1=1",
	"ü ß 漢字 \\ % _",
}

func TestPartnersSQLMetacharacters(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for i, text := range sqlStrings {
		p := Partner{OdetteID: "O00" + string(rune('A'+i)), Name: text, Enabled: true,
			CertificateBindings: []CertificateBinding{{SubjectSerialNumber: text}}}
		if err := s.AddPartner(ctx, p); err != nil {
			t.Fatalf("AddPartner(name %q) = %v", text, err)
		}
		got, err := s.Partner(ctx, p.OdetteID)
		if err != nil || got.Name != text || got.CertificateBindings[0].SubjectSerialNumber != text {
			t.Errorf("Partner() = %+v, %v, want name and serial %q", got, err, text)
		}
	}
	// A lenient Odette ID may itself contain quotes and semicolons.
	id := "';DROP TABLE partners;--"
	if err := s.AddPartner(ctx, Partner{OdetteID: id, Charset: "lenient"}); err != nil {
		t.Fatalf("AddPartner(lenient %q) = %v", id, err)
	}
	if got, err := s.Partner(ctx, id); err != nil || got.OdetteID != id {
		t.Errorf("Partner(%q) = %+v, %v", id, got, err)
	}
	refused := []Partner{
		{OdetteID: "'; DROP TABLE partners; --"},                    // 26 characters, and strict
		{OdetteID: "O0013", Name: "a\x00b"},                         // NUL
		{OdetteID: "O0013", Password: "'; DROP TABLE partners; --"}, // too long
		{OdetteID: "O0013", AllowedNetworks: []string{"'; DROP TABLE partners; --"}},
		{OdetteID: "O0013", CertificateBindings: []CertificateBinding{{SHA256Fingerprint: "'; DROP TABLE partners; --"}}},
		{OdetteID: "O0013", CertificateBindings: []CertificateBinding{{Subject: "'; DROP TABLE partners; --"}}},
		{OdetteID: "O0013", Direction: "'; DROP TABLE partners; --"},
		{OdetteID: "O0013", AllowedNetworks: []string{"10.0.0.1/8"}},
		{OdetteID: "O0013", MaxCredit: 1000},
		{OdetteID: "O0013", MaxBufferSize: 100},
	}
	for _, p := range refused {
		err := s.AddPartner(ctx, p)
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("AddPartner(%+v) = %v, want a ValidationError", p, err)
		}
	}
	list, err := s.Partners(ctx)
	if err != nil || len(list) != len(sqlStrings)+1 {
		t.Errorf("Partners() = %d, %v, want %d", len(list), err, len(sqlStrings)+1)
	}
	if got := tables(t, s); len(got) != len(wantTables) {
		t.Errorf("tables = %v", got)
	}
}

func TestPartnerUpdate(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013PARTNER", Enabled: true, AllowedNetworks: []string{"192.0.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013PARTNER"}); !errors.Is(err, ErrConflict) {
		t.Errorf("AddPartner(twice) = %v, want ErrConflict", err)
	}
	fp := strings.Repeat("AB:", 31) + "AB"
	err := s.UpdatePartner(ctx, "O0013PARTNER", func(p *Partner) error {
		p.Enabled = false
		p.CertificateBindings = append(p.CertificateBindings, CertificateBinding{SHA256Fingerprint: fp, Subject: "CN=x,O=Y"})
		p.AllowedNetworks = append(p.AllowedNetworks, "2001:db8::/32")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Partner(ctx, "O0013PARTNER")
	if err != nil {
		t.Fatal(err)
	}
	want := Partner{OdetteID: "O0013PARTNER", Direction: "both", Charset: "strict",
		CertificateBindings: []CertificateBinding{{SHA256Fingerprint: strings.Repeat("ab", 32), Subject: "CN=x,O=Y"}},
		AllowedNetworks:     []string{"192.0.2.0/24", "2001:db8::/32"}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Partner{}, "CreatedAt", "UpdatedAt")); diff != "" {
		t.Errorf("partner after update (-want +got):\n%s", diff)
	}
	// A failed update changes nothing.
	err = s.UpdatePartner(ctx, "O0013PARTNER", func(p *Partner) error {
		p.Enabled = true
		p.AllowedNetworks = append(p.AllowedNetworks, "bogus")
		return nil
	})
	if err == nil {
		t.Fatal("UpdatePartner(bogus network) succeeded")
	}
	again, _ := s.Partner(ctx, "O0013PARTNER")
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("partner changed by a failed update:\n%s", diff)
	}
	if err := s.UpdatePartner(ctx, "NOBODY", func(*Partner) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdatePartner(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.RemovePartner(ctx, "O0013PARTNER"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.r.QueryRow(`SELECT (SELECT count(*) FROM certificate_bindings) + (SELECT count(*) FROM allowed_networks)`).Scan(&n); err != nil || n != 0 {
		t.Errorf("bindings and networks left after removal: %d, %v", n, err)
	}
	if err := s.RemovePartner(ctx, "O0013PARTNER"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemovePartner(again) = %v, want ErrNotFound", err)
	}
}

// TestRevisionAcrossHandles changes the database through a second Store on
// the same file, as the admin CLI in another process does, and expects
// WaitRevision on the first to return once PollRevision has seen it.
func TestRevisionAcrossHandles(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	path := filepath.Join(t.TempDir(), "api.db")
	api := openPath(t, path, Options{Create: true})
	cli := openPath(t, path, Options{})
	done := make(chan error, 1)
	go func() { done <- api.PollRevision(ctx, 20*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("PollRevision() = %v", err)
		}
	}()
	rev, err := api.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Changes that are not part of the configuration do not bump it.
	if _, _, err := cli.CreateToken(ctx, "dmz"); err != nil {
		t.Fatal(err)
	}
	if r, _ := cli.Revision(ctx); r != rev {
		t.Errorf("revision after a token was created = %d, want %d", r, rev)
	}
	if err := cli.AddPartner(ctx, Partner{OdetteID: "O0013NEW", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	got, err := api.WaitRevision(wctx, rev)
	if err != nil || got <= rev {
		t.Fatalf("WaitRevision(%d) = %d, %v, want a newer revision", rev, got, err)
	}
	// A change through the same Store wakes a waiter at once, without polling.
	waiting := make(chan int64, 1)
	go func() {
		r, _ := api.WaitRevision(wctx, got)
		waiting <- r
	}()
	if err := api.RemovePartner(ctx, "O0013NEW"); err != nil {
		t.Fatal(err)
	}
	if r := <-waiting; r <= got {
		t.Errorf("WaitRevision(%d) after a local change = %d", got, r)
	}
	// A waiter whose context ends gets the context's error.
	short, scancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer scancel()
	cur, _ := api.Revision(ctx)
	if _, err := api.WaitRevision(short, cur); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitRevision(no change) = %v, want DeadlineExceeded", err)
	}
}

func TestCRLStoreAndStream(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	body := make([]byte, 3*crlChunkSize+17)
	rand.Read(body)
	now := time.Now().UTC().Truncate(time.Second)
	c, changed, err := s.PutCRL(ctx, NewCRL{URL: "http://crl.example/ca.crl", Issuer: "CN=CA", Source: "download",
		DER: body, Entries: 3, Number: "7", ThisUpdate: now, NextUpdate: now.Add(time.Hour)})
	if err != nil || !changed {
		t.Fatalf("PutCRL() = %v, %v", changed, err)
	}
	if c.Size != int64(len(body)) || c.chunks != 4 || c.Number != "7" || !c.NextUpdate.Equal(now.Add(time.Hour)) {
		t.Errorf("PutCRL() = %+v", c)
	}
	got, err := s.ReadCRL(ctx, c.ID)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("ReadCRL() = %d bytes, %v, want the stored %d", len(got), err, len(body))
	}
	// The same body again changes nothing, not even the revision.
	rev, _ := s.Revision(ctx)
	if _, changed, err := s.PutCRL(ctx, NewCRL{URL: "http://crl.example/ca.crl", Issuer: "CN=CA", Source: "download",
		DER: body, ThisUpdate: now}); err != nil || changed {
		t.Errorf("PutCRL(same) = %v, %v, want unchanged", changed, err)
	}
	if r, _ := s.Revision(ctx); r != rev {
		t.Errorf("revision after the same CRL = %d, want %d", r, rev)
	}
	// An older CRL is refused.
	var stale *StaleCRLError
	if _, _, err := s.PutCRL(ctx, NewCRL{URL: "http://crl.example/ca.crl", Issuer: "CN=CA", Source: "download",
		DER: []byte("older"), ThisUpdate: now.Add(-time.Hour)}); !errors.As(err, &stale) {
		t.Errorf("PutCRL(older) = %v, want *StaleCRLError", err)
	}
	// A reader of the old version fails once the CRL is replaced under it.
	_, r, err := s.OpenCRL(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 10)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	c2, changed, err := s.PutCRL(ctx, NewCRL{URL: "http://crl.example/ca.crl", Issuer: "CN=CA", Source: "download",
		DER: []byte("newer"), ThisUpdate: now.Add(time.Minute)})
	if err != nil || !changed || c2.ID != c.ID {
		t.Fatalf("PutCRL(newer) = %+v, %v, %v, want the same id replaced", c2, changed, err)
	}
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrCRLChanged) {
		t.Errorf("reading a replaced CRL = %v, want ErrCRLChanged", err)
	}
	var blobs, chunks int
	s.r.QueryRow(`SELECT (SELECT count(*) FROM crl_blobs), (SELECT count(*) FROM crl_chunks)`).Scan(&blobs, &chunks)
	if blobs != 1 || chunks != 1 {
		t.Errorf("after replacement: %d blobs, %d chunks, want 1 and 1 (the old version deleted)", blobs, chunks)
	}
	if err := s.RemoveCRL(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	s.r.QueryRow(`SELECT (SELECT count(*) FROM crl_blobs) + (SELECT count(*) FROM crl_chunks)`).Scan(&blobs)
	if blobs != 0 {
		t.Errorf("%d blob rows left after RemoveCRL", blobs)
	}
}

func TestCRLURLs(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.AddCRLURL(ctx, "http://crl.example/a.crl"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddCRLURL(ctx, "http://crl.example/a.crl"); !errors.Is(err, ErrConflict) {
		t.Errorf("AddCRLURL(twice) = %v, want ErrConflict", err)
	}
	for _, u := range []string{"ftp://x/a.crl", "/a.crl", "http://user:pw@x/a.crl", "'; DROP TABLE crl_urls; --"} {
		if _, err := s.AddCRLURL(ctx, u); err == nil {
			t.Errorf("AddCRLURL(%q) succeeded", u)
		}
	}
	n, err := s.ReportCRLURLs(ctx, "dmz", []string{"http://crl.example/a.crl", "http://crl.example/b.crl?x='1'", "http://crl.example/b.crl?x='1'"})
	if err != nil || n != 2 {
		t.Errorf("ReportCRLURLs() = %d, %v, want 2 new", n, err)
	}
	if n, err := s.ReportCRLURLs(ctx, "dmz", []string{"http://crl.example/c.crl", "gopher://x"}); err == nil || n != 0 {
		t.Errorf("ReportCRLURLs(with a bad URL) = %d, %v, want an error", n, err)
	}
	list, err := s.CRLURLs(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("CRLURLs() = %+v, %v, want 2 (nothing of the refused report)", list, err)
	}
	if !list[0].Configured || !list[0].Reported || list[1].Configured || !list[1].Reported || list[1].ReportedBy != "dmz" ||
		list[1].URL != "http://crl.example/b.crl?x='1'" {
		t.Errorf("CRLURLs() = %+v", list)
	}
	at := time.Now()
	if err := s.RecordFetch(ctx, list[1].ID, FetchResult{At: at, Status: "failed", Err: "connection refused"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordFetch(ctx, list[0].ID, FetchResult{At: at, Status: "updated", ETag: `"e1"`, LastModified: "Mon, 02 Jan 2006 15:04:05 GMT"}); err != nil {
		t.Fatal(err)
	}
	list, _ = s.CRLURLs(ctx)
	if list[1].Failures != 1 || list[1].LastError != "connection refused" || list[0].ETag != `"e1"` || list[0].LastSuccessAt.IsZero() {
		t.Errorf("after RecordFetch: %+v", list)
	}
	if _, err := s.RemoveCRLURL(ctx, "http://crl.example/a.crl"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveCRLURL(ctx, "http://crl.example/a.crl"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveCRLURL(again) = %v, want ErrNotFound", err)
	}
}

func TestIgnoreRules(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	s := openPath(t, filepath.Join(t.TempDir(), "api.db"), Options{Create: true, Now: func() time.Time { return clock }})
	r, err := s.AddIgnoreRule(ctx, IgnoreRule{Substring: "'; DROP TABLE ignore_rules; --", Description: `say "hi"`,
		ValidUntil: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	open, err := s.AddIgnoreRule(ctx, IgnoreRule{Substring: "partner_unknown"})
	if err != nil {
		t.Fatal(err)
	}
	bad := []IgnoreRule{
		{Substring: ""},
		{Substring: "   "},
		{Substring: "x", ValidFrom: now.Add(time.Hour), ValidUntil: now},
		{Substring: "x", ValidFrom: now, ValidUntil: now},
		{Substring: "x", ValidUntil: now.Add(-time.Second)},
		{Substring: "a\x00b"},
	}
	rev, _ := s.Revision(ctx)
	for _, b := range bad {
		if _, err := s.AddIgnoreRule(ctx, b); err == nil {
			t.Errorf("AddIgnoreRule(%+v) succeeded", b)
		}
	}
	if r, _ := s.Revision(ctx); r != rev {
		t.Errorf("revision changed by refused rules")
	}
	list, _ := s.IgnoreRules(ctx)
	if len(list) != 2 || list[0].Substring != r.Substring || list[0].Description != `say "hi"` {
		t.Fatalf("IgnoreRules() = %+v", list)
	}
	removed, err := s.RemoveExpiredIgnoreRules(ctx, now.Add(30*time.Minute))
	if err != nil || len(removed) != 0 {
		t.Errorf("RemoveExpiredIgnoreRules(before expiry) = %v, %v", removed, err)
	}
	removed, err = s.RemoveExpiredIgnoreRules(ctx, now.Add(time.Hour))
	if err != nil || len(removed) != 1 || removed[0].ID != r.ID {
		t.Errorf("RemoveExpiredIgnoreRules(at expiry) = %+v, %v, want rule %d", removed, err, r.ID)
	}
	list, _ = s.IgnoreRules(ctx)
	if len(list) != 1 || list[0].ID != open.ID {
		t.Errorf("IgnoreRules() after expiry = %+v, want only rule %d", list, open.ID)
	}
	if _, err := s.RemoveIgnoreRule(ctx, open.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveIgnoreRule(ctx, open.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveIgnoreRule(again) = %v, want ErrNotFound", err)
	}
}

func TestEventsDedup(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, _, err := s.CreateToken(ctx, "dmz"); err != nil {
		t.Fatal(err)
	}
	var clientID int64
	if err := s.r.QueryRow(`SELECT id FROM clients WHERE name = 'dmz'`).Scan(&clientID); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	evs := []Event{
		{ID: "e1", Time: t0, Severity: "critical", Name: "partner_unknown", SessionID: 1 << 63, Message: "'; DROP TABLE events; --",
			Fields: map[string]string{"k": `"v"`}, Source: "server"},
		{ID: "e2", Time: t0.Add(time.Second), Severity: "info", Name: "tunnel_up", Source: "client"},
		{ID: "e1", Time: t0, Severity: "critical", Name: "partner_unknown", Source: "server"},
	}
	fresh, dups, err := s.AddEvents(ctx, clientID, evs)
	if err != nil || len(fresh) != 2 || dups != 1 {
		t.Fatalf("AddEvents() = %d fresh, %d duplicates, %v, want 2 and 1", len(fresh), dups, err)
	}
	fresh, dups, err = s.AddEvents(ctx, clientID, evs[:2])
	if err != nil || len(fresh) != 0 || dups != 2 {
		t.Errorf("AddEvents(again) = %d fresh, %d duplicates, %v, want 0 and 2", len(fresh), dups, err)
	}
	got, err := s.Events(ctx, EventFilter{})
	if err != nil || len(got) != 2 {
		t.Fatalf("Events() = %v, %v", got, err)
	}
	if got[0].Message != evs[0].Message || got[0].SessionID != 1<<63 || got[0].Fields["k"] != `"v"` || !got[0].Time.Equal(t0) ||
		got[0].Client != "dmz" {
		t.Errorf("Events()[0] = %+v", got[0])
	}
	if got, _ := s.Events(ctx, EventFilter{Name: "tunnel_up"}); len(got) != 1 || got[0].ID != "e2" {
		t.Errorf("Events(name) = %+v", got)
	}
	if got, _ := s.Events(ctx, EventFilter{Since: t0.Add(time.Millisecond)}); len(got) != 1 || got[0].ID != "e2" {
		t.Errorf("Events(since) = %+v", got)
	}
	if _, _, err := s.AddEvents(ctx, clientID, []Event{{ID: "e3", Name: "x", Severity: "info", Message: "a\x00b", Time: t0}}); err == nil {
		t.Error("AddEvents(NUL in message) succeeded")
	}
	if _, _, err := s.AddEvents(ctx, clientID, []Event{{ID: "e4", Name: "x", Severity: "loud", Time: t0}}); err == nil {
		t.Error("AddEvents(bad severity) succeeded (the schema's CHECK should refuse it)")
	}
	var n int
	s.r.QueryRow(`SELECT count(*) FROM events`).Scan(&n)
	if n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
}

func TestReadOnlySnapshotConsistent(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013A", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := s.Revision(ctx)
	if snap.Revision != rev || len(snap.Partners) != 1 {
		t.Errorf("Snapshot() = revision %d, %d partners, want %d and 1", snap.Revision, len(snap.Partners), rev)
	}
}
