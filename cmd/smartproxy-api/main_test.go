package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testwait"
)

// binaries holds smartproxy-api, built once for the tests that run it as a process.
var binaries = proctest.NewBinaries("smartproxy/cmd/smartproxy-api")

// TestMain removes the built binary and checks for leaked goroutines.
func TestMain(m *testing.M) { os.Exit(binaries.Main(m)) }

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cli runs one command line against the data directory dir.
func cli(t *testing.T, dir string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append(args, "--data-dir", dir), &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustCLI runs a command line that must succeed.
func mustCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, err := cli(t, dir, args...)
	if err != nil {
		t.Fatalf("smartproxy-api %s = %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// failCLI runs a command line that must fail without changing the
// configuration, and returns the error text.
func failCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	before := exportDoc(t, dir)
	_, _, err := cli(t, dir, args...)
	if err == nil {
		t.Fatalf("smartproxy-api %s succeeded, want an error", strings.Join(args, " "))
	}
	if after := exportDoc(t, dir); after != before {
		t.Errorf("smartproxy-api %s failed but changed the configuration:\nbefore %s\nafter  %s", strings.Join(args, " "), before, after)
	}
	return err.Error()
}

// exportDoc returns the exported configuration without its revision.
func exportDoc(t *testing.T, dir string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"export", "--with-secrets", "--data-dir", dir}, &out, io.Discard); err != nil {
		t.Fatalf("export: %v", err)
	}
	var doc apiv1.ConfigDocument
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("export is not a configuration document: %v", err)
	}
	doc.Revision = 0
	b, _ := json.Marshal(doc)
	return string(b)
}

var tokenRE = regexp.MustCompile(`(?m)^spt_[A-Za-z0-9_-]{43}$`)

// initDir creates a data directory with a database and returns it with the
// first token.
func initDir(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	out := mustCLI(t, dir, "init", "--client", "dmz-1")
	token := tokenRE.FindString(out)
	if token == "" {
		t.Fatalf("init printed no token:\n%s", out)
	}
	return dir, token
}

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(dir, DBFileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageErrors(t *testing.T) {
	dir, _ := initDir(t)
	tests := [][]string{
		{},
		{"nothing"},
		{"partner"},
		{"partner", "fly"},
		{"partner", "add"},
		{"partner", "add", "--odette-id", "O1", "--max-credit", "x"},
		{"token", "revoke", "abc"},
		{"partner", "show"},
		{"config", "set", "log_level"},
		{"route", "add", "--name", "x"},
		{"ignore", "add", "--substring", "x", "--valid-until", "tomorrow"},
		{"serve", "--cert", "a.pem"},
		{"serve", "--event-script-severity", "loud"},
	}
	for _, args := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(args, "--data-dir", dir), &out, &errOut)
		if len(args) == 0 {
			err = run(context.Background(), nil, &out, &errOut)
		}
		if err == nil || exitCode(err) != 2 {
			t.Errorf("smartproxy-api %q = %v (exit %d), want a usage error (exit 2)", args, err, exitCode(err))
		}
	}
	if _, _, err := cli(t, dir, "partner", "add", "-h"); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("partner add -h = %v, want flag.ErrHelp", err)
	}
	// A command on a data directory without database explains what to do.
	_, _, err := cli(t, t.TempDir(), "partner", "list")
	if err == nil || !strings.Contains(err.Error(), "init") || exitCode(err) != 1 {
		t.Errorf("partner list without database = %v, want a hint to run init", err)
	}
}

func TestInitAndTokens(t *testing.T) {
	dir, token := initDir(t)
	st := openStore(t, dir)
	ctx := context.Background()
	if c, err := st.Authenticate(ctx, token); err != nil || c.Name != "dmz-1" {
		t.Fatalf("the token init printed does not authenticate: %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, DBFileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("database mode = %v, %v, want 0600", info.Mode().Perm(), err)
	}
	if info, err := os.Stat(filepath.Join(dir, backend.GeneratedKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("generated key: %v", err)
	}
	msg := failCLI(t, dir, "init")
	if !strings.Contains(msg, "exists already") {
		t.Errorf("init again: %q", msg)
	}
	second := strings.TrimSpace(mustCLI(t, dir, "token", "create", "--client", "dmz-2"))
	if !tokenRE.MatchString(second) {
		t.Fatalf("token create printed %q", second)
	}
	list := mustCLI(t, dir, "token", "list")
	if !strings.Contains(list, "dmz-1") || !strings.Contains(list, "dmz-2") || strings.Contains(list, token) || strings.Contains(list, second) {
		t.Errorf("token list shows:\n%s", list)
	}
	tokens, _ := st.Tokens(ctx)
	mustCLI(t, dir, "token", "revoke", itoa(tokens[1].ID))
	if _, err := st.Authenticate(ctx, second); err == nil {
		t.Error("a revoked token still authenticates")
	}
	if msg := failCLI(t, dir, "token", "revoke", "999"); !strings.Contains(msg, "not found") {
		t.Errorf("revoke unknown: %q", msg)
	}
	failCLI(t, dir, "token", "create", "--client", "'; DROP TABLE clients; --")
	// The fingerprint command shows the generated certificate's.
	out := mustCLI(t, dir, "fingerprint")
	cert := loadCert(t, filepath.Join(dir, backend.GeneratedCertFile))
	if !strings.HasPrefix(out, backend.Fingerprint(cert)) {
		t.Errorf("fingerprint = %q, want %s", out, backend.Fingerprint(cert))
	}
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertificatesPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func itoa(n int64) string { return big.NewInt(n).String() }

func TestPartnerCommands(t *testing.T) {
	dir, _ := initDir(t)
	ca, err := pki.NewCA("Partner CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "edi.partner.example", SerialNumber: "O0013PARTNER"})
	if err != nil {
		t.Fatal(err)
	}
	certFile := writeFile(t, dir, "partner.pem", pki.EncodeCertPEM(leaf.Cert))
	pwFile := writeFile(t, dir, "pw", []byte("SECRET\n"))
	mustCLI(t, dir, "partner", "add", "--odette-id", "O0013PARTNER", "--name", "Partner AG", "--password-file", pwFile,
		"--serial", "O0013PARTNER", "--certificate", certFile, "--subject", "CN=edi.partner.example",
		"--network", "192.0.2.0/24", "--network", "2001:db8::/32", "--direction", "incoming", "--charset", "lenient",
		"--max-credit", "64", "--max-buffer", "4096")
	st := openStore(t, dir)
	ctx := context.Background()
	p, err := st.Partner(ctx, "O0013PARTNER")
	if err != nil {
		t.Fatal(err)
	}
	want := store.CertificateBinding{SubjectSerialNumber: "O0013PARTNER", SHA256Fingerprint: store.Fingerprint(leaf.Cert), Subject: "CN=edi.partner.example"}
	if p.Name != "Partner AG" || p.Password != "SECRET" || !p.Enabled || p.Direction != "incoming" || p.Charset != "lenient" ||
		p.MaxCredit != 64 || p.MaxBufferSize != 4096 || len(p.AllowedNetworks) != 2 || len(p.CertificateBindings) != 1 ||
		p.CertificateBindings[0] != want {
		t.Errorf("stored partner = %+v", p)
	}
	show := mustCLI(t, dir, "partner", "show", "O0013PARTNER")
	if strings.Contains(show, "SECRET") || !strings.Contains(show, "(set)") || !strings.Contains(show, want.SHA256Fingerprint) {
		t.Errorf("partner show:\n%s", show)
	}
	if list := mustCLI(t, dir, "partner", "list"); !strings.Contains(list, "O0013PARTNER") || !strings.Contains(list, "enabled") {
		t.Errorf("partner list:\n%s", list)
	}
	mustCLI(t, dir, "partner", "disable", "O0013PARTNER")
	if p, _ := st.Partner(ctx, "O0013PARTNER"); p.Enabled {
		t.Error("partner still enabled after disable")
	}
	mustCLI(t, dir, "partner", "enable", "O0013PARTNER")
	mustCLI(t, dir, "partner", "set", "O0013PARTNER", "--clear-password", "--clear-networks", "--clear-bindings",
		"--fingerprint", strings.Repeat("ab", 32), "--name", "Renamed", "--direction", "both")
	p, _ = st.Partner(ctx, "O0013PARTNER")
	if p.Password != "" || len(p.AllowedNetworks) != 0 || len(p.CertificateBindings) != 1 || p.CertificateBindings[0].SHA256Fingerprint != strings.Repeat("ab", 32) ||
		p.Name != "Renamed" || p.Direction != "both" || !p.Enabled {
		t.Errorf("partner after set = %+v", p)
	}
	for _, args := range [][]string{
		{"partner", "add", "--odette-id", "O0013PARTNER"},                        // exists
		{"partner", "add", "--odette-id", "o0013 lower"},                         // strict charset
		{"partner", "add", "--odette-id", "O2", "--network", "300.0.0.0/8"},      // bad CIDR
		{"partner", "add", "--odette-id", "O2", "--password", "TOOLONGPASSWORD"}, // > 8
		{"partner", "add", "--odette-id", "O2", "--certificate", certFile, "--fingerprint", strings.Repeat("ab", 32)},
		{"partner", "add", "--odette-id", "O2", "--certificate", filepath.Join(dir, "missing.pem")},
		{"partner", "add", "--odette-id", "O2", "--direction", "sideways"},
		{"partner", "set", "O0013PARTNER", "--network", "10.0.0.1/8"},
		{"partner", "set", "NOBODY", "--name", "x"},
		{"partner", "remove", "NOBODY"},
	} {
		failCLI(t, dir, args...)
	}
	mustCLI(t, dir, "partner", "remove", "O0013PARTNER")
	if list, _ := st.Partners(ctx); len(list) != 0 {
		t.Errorf("partners after remove = %d", len(list))
	}
}

// pkiFixture writes a CA, a second CA, a leaf and CRLs into dir.
type pkiFixture struct {
	ca, other       *pki.CA
	caFile, bothPEM string
	leafFile        string
	crlFile         string
	foreignCRL      string
}

func newPKI(t *testing.T, dir string) pkiFixture {
	t.Helper()
	ca, err := pki.NewCA("Partner CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("Other CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "leaf"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	crl, err := ca.CRL([]pki.RevokedCert{{SerialNumber: big.NewInt(5)}}, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.CRL(nil, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return pkiFixture{
		ca: ca, other: other,
		caFile:     writeFile(t, dir, "ca.der", ca.Cert.Raw),
		bothPEM:    writeFile(t, dir, "both.pem", append(pki.EncodeCertPEM(ca.Cert), pki.EncodeCertPEM(other.Cert)...)),
		leafFile:   writeFile(t, dir, "leaf.pem", pki.EncodeCertPEM(leaf.Cert)),
		crlFile:    writeFile(t, dir, "ca.crl.pem", pki.EncodeCRLPEM(crl)),
		foreignCRL: writeFile(t, dir, "other.crl", foreign),
	}
}

func TestCAAndCRLCommands(t *testing.T) {
	dir, _ := initDir(t)
	fx := newPKI(t, dir)
	st := openStore(t, dir)
	ctx := context.Background()
	// No trusted CA yet: a CRL cannot be verified.
	if msg := failCLI(t, dir, "crl", "import", fx.crlFile); !strings.Contains(msg, "ca add") {
		t.Errorf("crl import without CA: %q", msg)
	}
	failCLI(t, dir, "ca", "add", fx.leafFile) // not a CA
	mustCLI(t, dir, "ca", "add", fx.bothPEM)
	if list, _ := st.CAs(ctx); len(list) != 2 {
		t.Fatalf("CAs after adding a PEM with two = %d", len(list))
	}
	failCLI(t, dir, "ca", "add", fx.caFile) // DER, and stored already
	if out := mustCLI(t, dir, "ca", "list"); !strings.Contains(out, "CN=Partner CA") || !strings.Contains(out, "CN=Other CA") {
		t.Errorf("ca list:\n%s", out)
	}
	out := mustCLI(t, dir, "crl", "import", fx.crlFile, "--url", "http://crl.example/partner.crl")
	if !strings.Contains(out, "1 entries") {
		t.Errorf("crl import: %q", out)
	}
	if again := mustCLI(t, dir, "crl", "import", fx.crlFile, "--url", "http://crl.example/partner.crl"); !strings.Contains(again, "stored already") {
		t.Errorf("crl import again: %q", again)
	}
	crls, _ := st.CRLs(ctx)
	if len(crls) != 1 || crls[0].URL != "http://crl.example/partner.crl" || crls[0].Source != "import" {
		t.Errorf("CRLs = %+v", crls)
	}
	mustCLI(t, dir, "ca", "remove", store.Fingerprint(fx.other.Cert)[:16])
	failCLI(t, dir, "crl", "import", fx.foreignCRL) // its CA is gone
	failCLI(t, dir, "crl", "import", fx.leafFile)   // not a CRL
	if list := mustCLI(t, dir, "crl", "list"); !strings.Contains(list, "crl-") || !strings.Contains(list, "CN=Partner CA") {
		t.Errorf("crl list:\n%s", list)
	}
	mustCLI(t, dir, "crl", "remove", backend.CRLID(crls[0].ID))
	// CRL URLs.
	mustCLI(t, dir, "crl-url", "add", "http://crl.example/partner.crl")
	failCLI(t, dir, "crl-url", "add", "http://crl.example/partner.crl")
	failCLI(t, dir, "crl-url", "add", "ldap://crl.example/cn=x")
	if _, err := st.ReportCRLURLs(ctx, "dmz-1", []string{"http://crl.example/reported.crl"}); err != nil {
		t.Fatal(err)
	}
	list := mustCLI(t, dir, "crl-url", "list")
	if !strings.Contains(list, "configured") || !strings.Contains(list, "reported by dmz-1") || !strings.Contains(list, "not fetched yet") {
		t.Errorf("crl-url list:\n%s", list)
	}
	mustCLI(t, dir, "crl-url", "remove", "http://crl.example/reported.crl")
	mustCLI(t, dir, "crl-url", "remove", "1")
	if urls, _ := st.CRLURLs(ctx); len(urls) != 0 {
		t.Errorf("CRL URLs after remove = %+v", urls)
	}
}

func TestIgnoreCommands(t *testing.T) {
	dir, _ := initDir(t)
	st := openStore(t, dir)
	ctx := context.Background()
	mustCLI(t, dir, "ignore", "add", "--substring", "remote_addr=198.51.100.7", "--description", "monitoring probe", "--valid-until", "8h")
	mustCLI(t, dir, "ignore", "add", "--substring", "scanner", "--valid-from", "2099-01-01T00:00:00Z")
	for _, args := range [][]string{
		{"ignore", "add", "--substring", "x", "--valid-from", "2h", "--valid-until", "1h"},                                     // end before start
		{"ignore", "add", "--substring", "x", "--valid-from", "2026-01-01T00:00:00Z", "--valid-until", "2026-01-01T00:00:00Z"}, // empty window
		{"ignore", "add", "--substring", "x", "--valid-until", "-1h"},                                                          // already over
		{"ignore", "add", "--substring", "   "},
		{"ignore", "remove", "999"},
	} {
		failCLI(t, dir, args...)
	}
	rules, _ := st.IgnoreRules(ctx)
	if len(rules) != 2 {
		t.Fatalf("rules = %+v, want the 2 valid ones", rules)
	}
	list := mustCLI(t, dir, "ignore", "list")
	if !strings.Contains(list, "active") || !strings.Contains(list, "pending") || !strings.Contains(list, `"remote_addr=198.51.100.7"`) {
		t.Errorf("ignore list:\n%s", list)
	}
	mustCLI(t, dir, "ignore", "remove", itoa(rules[0].ID))
	if rules, _ := st.IgnoreRules(ctx); len(rules) != 1 {
		t.Errorf("rules after remove = %d", len(rules))
	}
}

func TestConfigCommands(t *testing.T) {
	dir, _ := initDir(t)
	ca, err := pki.NewCA("Company CA")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ca.Issue(pki.Request{CommonName: "a.company.example"})
	b, _ := ca.Issue(pki.Request{CommonName: "b.company.example"})
	aCert, aKey := writeFile(t, dir, "a.pem", a.CertPEM), writeFile(t, dir, "a.key", a.KeyPEM)
	bCert, bKey := writeFile(t, dir, "b.pem", b.CertPEM), writeFile(t, dir, "b.key", b.KeyPEM)
	mustCLI(t, dir, "config", "set", "company_certificate", aCert, "company_key", aKey, "partner_listen_address", ":6619",
		"internal_server.address", "127.0.0.1:3305", "limits.max_sessions", "200", "log_level", "debug")
	show := mustCLI(t, dir, "config", "show")
	if strings.Contains(show, "PRIVATE KEY") || !strings.Contains(show, "redacted") || !strings.Contains(show, "CN=a.company.example") ||
		!strings.Contains(show, "200") {
		t.Errorf("config show:\n%s", show)
	}
	for _, args := range [][]string{
		{"config", "set", "company_certificate", bCert},                        // key of a
		{"config", "set", "company_key", bKey},                                 // certificate of a
		{"config", "set", "company_certificate", aKey},                         // a key is no certificate
		{"config", "set", "company_key", filepath.Join(dir, "missing.key")},    // no file
		{"config", "set", "limits.max_credit", "0"},                            // 1-999
		{"config", "set", "log_level", "debug", "limits.max_sessions", "many"}, // one bad spoils all
		{"config", "set", "nope", "1"},
		{"config", "unset", "nope"},
	} {
		failCLI(t, dir, args...)
	}
	mustCLI(t, dir, "config", "set", "company_certificate", bCert, "company_key", bKey)
	var doc apiv1.ConfigDocument
	json.Unmarshal([]byte(exportDoc(t, dir)), &doc)
	if doc.CompanyIdentity.CertificateChainPEM != string(b.CertPEM) || string(doc.CompanyIdentity.PrivateKeyPEM) != string(b.KeyPEM) ||
		doc.Limits.MaxSessions != 200 || doc.LogLevel != "debug" {
		t.Errorf("exported document = %+v", doc)
	}
	mustCLI(t, dir, "config", "unset", "log_level", "limits.max_sessions")
	if show := mustCLI(t, dir, "config", "show"); !regexp.MustCompile(`(?m)^log_level +\(unset\)$`).MatchString(show) {
		t.Errorf("config show after unset:\n%s", show)
	}
	if keys := mustCLI(t, dir, "config", "keys"); !strings.Contains(keys, "company_key FILE") || !strings.Contains(keys, "limits.max_sessions VALUE") {
		t.Errorf("config keys:\n%s", keys)
	}
}

func TestRouteCommands(t *testing.T) {
	dir, _ := initDir(t)
	mustCLI(t, dir, "route", "add", "--name", "to-partner", "--listen", "127.0.0.1:7001", "--partner-address", "edi.partner.example:6619",
		"--partner-odette-id", "O0013PARTNER")
	failCLI(t, dir, "route", "add", "--name", "to-partner", "--listen", "127.0.0.1:7002", "--partner-address", "x:1", "--partner-odette-id", "O1")
	failCLI(t, dir, "route", "add", "--name", "'; DROP TABLE routes; --", "--listen", "127.0.0.1:7002", "--partner-address", "x:1", "--partner-odette-id", "O1")
	failCLI(t, dir, "route", "add", "--name", "r2", "--listen", "localhost:7002", "--partner-address", "x:1", "--partner-odette-id", "O1")
	failCLI(t, dir, "route", "add", "--name", "r2", "--listen", "127.0.0.1:7002", "--partner-address", "x", "--partner-odette-id", "O1")
	if list := mustCLI(t, dir, "route", "list"); !strings.Contains(list, "to-partner") || !strings.Contains(list, "edi.partner.example:6619") {
		t.Errorf("route list:\n%s", list)
	}
	mustCLI(t, dir, "route", "remove", "to-partner")
	failCLI(t, dir, "route", "remove", "to-partner")
}

func TestLicenseCommands(t *testing.T) {
	dir, _ := initDir(t)
	key, keyID := devkey.SigningKey()
	now := time.Now().UTC().Truncate(time.Second)
	file, err := license.Sign(license.License{ProxyID: "SPX-ABCD-EFGH-JKMN-PQRS", Customer: "ACME 'Quoted' AG",
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour)}, key, keyID)
	if err != nil {
		t.Fatal(err)
	}
	lf := writeFile(t, dir, "license.json", file)
	mustCLI(t, dir, "license", "import", lf)
	_, otherKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := license.Sign(license.License{ProxyID: "SPX-ABCD-EFGH-JKMN-PQRS", Customer: "EVIL",
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, otherKey, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if msg := failCLI(t, dir, "license", "import", writeFile(t, dir, "bad.json", forged)); !strings.Contains(msg, "signature") {
		t.Errorf("tampered license: %q", msg)
	}
	failCLI(t, dir, "license", "import", writeFile(t, dir, "garbage.json", []byte("'; DROP TABLE licenses; --")))
	show := mustCLI(t, dir, "license", "show")
	if !strings.Contains(show, "SPX-ABCD-EFGH-JKMN-PQRS") || !strings.Contains(show, "ACME 'Quoted' AG") || !strings.Contains(show, "not reported yet") {
		t.Errorf("license show:\n%s", show)
	}
	st := openStore(t, dir)
	l, err := st.LicenseFor(context.Background(), "SPX-ABCD-EFGH-JKMN-PQRS")
	if err != nil || !bytes.Equal(l.File, file) {
		t.Errorf("stored license = %v, want the file byte for byte", err)
	}
}

func TestEventsListAndStatus(t *testing.T) {
	dir, _ := initDir(t)
	st := openStore(t, dir)
	ctx := context.Background()
	clients, _ := st.Clients(ctx)
	t0 := time.Now().Add(-2 * time.Hour).UTC()
	if _, _, err := st.AddEvents(ctx, clients[0].ID, []store.Event{
		{ID: "e1", Time: t0, Severity: "critical", Name: "partner_unknown", RemoteAddr: "198.51.100.7:1", Message: "'; DROP TABLE events; --", Source: "server"},
		{ID: "e2", Time: time.Now().UTC(), Severity: "info", Name: "tunnel_up", Source: "client"},
	}); err != nil {
		t.Fatal(err)
	}
	all := mustCLI(t, dir, "events", "list")
	if !strings.Contains(all, "partner_unknown") || !strings.Contains(all, "tunnel_up") || !strings.Contains(all, `"'; DROP TABLE events; --"`) {
		t.Errorf("events list:\n%s", all)
	}
	if recent := mustCLI(t, dir, "events", "list", "--since", "1h"); strings.Contains(recent, "partner_unknown") || !strings.Contains(recent, "tunnel_up") {
		t.Errorf("events list --since 1h:\n%s", recent)
	}
	if named := mustCLI(t, dir, "events", "list", "--name", "partner_unknown"); strings.Contains(named, "tunnel_up") {
		t.Errorf("events list --name:\n%s", named)
	}
	status := mustCLI(t, dir, "status")
	if !strings.Contains(status, "2 events") || !strings.Contains(status, "dmz-1") {
		t.Errorf("status:\n%s", status)
	}
}

func TestExportRedacts(t *testing.T) {
	dir, _ := initDir(t)
	ca, _ := pki.NewCA("Company CA")
	a, _ := ca.Issue(pki.Request{CommonName: "a.company.example"})
	mustCLI(t, dir, "config", "set", "company_certificate", writeFile(t, dir, "a.pem", a.CertPEM), "company_key", writeFile(t, dir, "a.key", a.KeyPEM))
	mustCLI(t, dir, "partner", "add", "--odette-id", "O1", "--password", "SECRET")
	plain := mustCLI(t, dir, "export")
	if strings.Contains(plain, "PRIVATE KEY") || strings.Contains(plain, "SECRET") {
		t.Errorf("export without --with-secrets shows secrets:\n%s", plain)
	}
	full := mustCLI(t, dir, "export", "--with-secrets")
	if !strings.Contains(full, "PRIVATE KEY") || !strings.Contains(full, `"password": "SECRET"`) {
		t.Errorf("export --with-secrets lacks the secrets")
	}
}

// TestSQLMetacharactersCLI stores hostile text through every admin command
// that takes free text, and expects it back verbatim or refused, with the
// schema intact.
func TestSQLMetacharactersCLI(t *testing.T) {
	dir, _ := initDir(t)
	hostile := []string{"'; DROP TABLE partners; --", `x"); DELETE FROM ignore_rules; --`, "1' OR '1'='1"}
	st := openStore(t, dir)
	ctx := context.Background()
	for i, h := range hostile {
		id := "O00" + string(rune('A'+i))
		mustCLI(t, dir, "partner", "add", "--odette-id", id, "--name", h, "--serial", h)
		mustCLI(t, dir, "ignore", "add", "--substring", h, "--description", h)
		p, err := st.Partner(ctx, id)
		if err != nil || p.Name != h || p.CertificateBindings[0].SubjectSerialNumber != h {
			t.Errorf("partner %s = %+v, %v", id, p, err)
		}
	}
	mustCLI(t, dir, "partner", "add", "--odette-id", "';DROP TABLE partners;--", "--charset", "lenient")
	failCLI(t, dir, "partner", "add", "--odette-id", "'; DROP TABLE partners; --", "--charset", "lenient") // 26 characters
	failCLI(t, dir, "partner", "show", "'; DROP TABLE partners; --")
	// A lenient partner's password may hold quotes and semicolons; it is stored verbatim.
	mustCLI(t, dir, "partner", "set", "O00A", "--charset", "lenient", "--password", "';--\"x")
	if p, _ := st.Partner(ctx, "O00A"); p.Password != "';--\"x" {
		t.Errorf("lenient password stored as %q", p.Password)
	}
	for _, args := range [][]string{
		{"partner", "set", "O00B", "--password", "'; DROP TABLE partners; --"}, // longer than 8
		{"partner", "set", "O00B", "--subject", "'; DROP TABLE partners; --"},  // not a DN
		{"partner", "set", "O00B", "--fingerprint", "'; DROP TABLE partners; --"},
		{"partner", "set", "O00B", "--network", "'; DROP TABLE partners; --"},
		{"partner", "set", "O00B", "--direction", "'; DROP TABLE partners; --"},
		{"token", "create", "--client", "x'; DROP TABLE tokens; --"},
		{"route", "add", "--name", "r", "--listen", "127.0.0.1:1", "--partner-address", "x:1", "--partner-odette-id", "O1", "--server-name", "'; DROP TABLE routes; --"},
		{"crl", "import", "'; DROP TABLE crls; --"},
		{"config", "set", "internal_server.address", "'; DROP TABLE settings; --:1"},
		{"config", "set", "internal_server.tls.server_name", "'; DROP TABLE settings; --"},
		{"config", "set", "'; DROP TABLE settings; --", "1"},
	} {
		failCLI(t, dir, args...)
	}
	if out := mustCLI(t, dir, "events", "list", "--name", "'; DROP TABLE events; --"); strings.Count(out, "\n") != 1 {
		t.Errorf("events list with a hostile name:\n%s", out)
	}
	mustCLI(t, dir, "crl-url", "add", "http://crl.example/x.crl?a=';DROP%20TABLE%20crl_urls;--&b=\"q\"")
	if urls, _ := st.CRLURLs(ctx); len(urls) != 1 || urls[0].URL != "http://crl.example/x.crl?a=';DROP%20TABLE%20crl_urls;--&b=\"q\"" {
		t.Errorf("CRL URLs = %+v", urls)
	}
	failCLI(t, dir, "config", "set", "outgoing_source_ip", "'; DROP TABLE settings; --")
	failCLI(t, dir, "crl-url", "remove", "'; DROP TABLE crl_urls; --")
	failCLI(t, dir, "ca", "remove", "'; DROP TABLE trusted_cas; --")
	rules, _ := st.IgnoreRules(ctx)
	for i, h := range hostile {
		if rules[i].Substring != h || rules[i].Description != h {
			t.Errorf("rule %d = %+v, want %q", i, rules[i], h)
		}
	}
	counts, err := st.TableCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts["partners"] != int64(len(hostile))+1 || counts["ignore_rules"] != int64(len(hostile)) || counts["crl_urls"] != 1 ||
		counts["routes"] != 0 || counts["tokens"] != 1 || len(counts) != 23 {
		t.Errorf("table counts = %v", counts)
	}
}

// TestServeLongPollWokenByCLI runs serve in-process and changes the
// database with the partner command, which opens its own database handle as
// a separate process would; a long poll held meanwhile must answer with the
// new partner.
func TestServeLongPollWokenByCLI(t *testing.T) {
	dir, token := initDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--log-level", "debug",
			"--pid-file", filepath.Join(dir, "api.pid")}, &out, &logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve = %v", err)
		}
		if !strings.Contains(logs.String(), "smartproxy-api stopped") {
			t.Errorf("no stop line in the log:\n%s", logs.String())
		}
	}()
	addrRE := regexp.MustCompile(`listening on https://(\S+)`)
	var addr string
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" {
		if m := addrRE.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("serve did not report its address:\n%s\n%s", out.String(), logs.String())
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if pid, err := os.ReadFile(filepath.Join(dir, "api.pid")); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("PID file = %q, %v, want %d", pid, err, os.Getpid())
	}
	cert := loadCert(t, filepath.Join(dir, backend.GeneratedCertFile))
	if !strings.Contains(out.String(), backend.Fingerprint(cert)) {
		t.Errorf("serve did not print the certificate's fingerprint:\n%s", out.String())
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	get := func(etag, query string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", "https://"+addr+apiv1.PathConfig+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("GET config: %v", err)
			return nil, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, _ := get("", "")
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("GET config = %v", resp)
	}
	type answer struct {
		resp *http.Response
		body []byte
	}
	polled := make(chan answer, 1)
	go func() {
		r, b := get(resp.Header.Get("ETag"), "?wait=30")
		polled <- answer{r, b}
	}()
	// The change must come while the poll waits, or the wake-up is not what this test sees.
	testwait.For(t, 10*time.Second, "the long poll to wait", func() bool {
		return strings.Contains(logs.String(), "long poll waiting for a change")
	})
	mustCLI(t, dir, "partner", "add", "--odette-id", "O0013NEW", "--name", "New AG")
	changed := time.Now()
	a := <-polled
	if a.resp == nil || a.resp.StatusCode != 200 || !strings.Contains(string(a.body), `"odette_id":"O0013NEW"`) {
		t.Fatalf("long poll answer = %v %s, want 200 with the new partner", a.resp, a.body)
	}
	t.Logf("the long poll answered %v after the partner command", time.Since(changed).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "client=dmz-1") {
		t.Errorf("request log lacks the client:\n%s", logs.String())
	}
}
