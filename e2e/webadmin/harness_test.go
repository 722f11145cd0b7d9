package webadmin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"smartproxy/backend/store"
	"smartproxy/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(bins.Main(m)) }

// bins holds smartproxy-api, built once per test binary.
var bins = proctest.NewBinaries("smartproxy/cmd/smartproxy-api")

// apiBinary returns the path of the built smartproxy-api.
func apiBinary(t testing.TB) string {
	t.Helper()
	return filepath.Join(bins.Dir(t), "smartproxy-api")
}

// adminPassword is the password of the user "admin" of every test backend.
const adminPassword = "a long admin pass phrase"

// backendProc is a running smartproxy-api serve with its database.
type backendProc struct {
	dir   string // data directory
	base  string // https://127.0.0.1:PORT
	token string // the token init printed, of client proxy-1
	proc  *proctest.Proc
	st    *store.Store // the same database file, opened by the test
	pool  *x509.CertPool
}

var (
	adminURLRE = regexp.MustCompile(`web admin: (https://\S+)/admin/`)
	tokenRE    = regexp.MustCompile(`spt_[A-Za-z0-9_-]{43}`)
)

// cli runs a smartproxy-api admin command on dir and returns its stdout.
func cli(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(apiBinary(t), append(args, "--data-dir", dir)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("smartproxy-api %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// startBackend creates a database with a client token and the user
// "admin", and starts serve on a loopback port.
func startBackend(t testing.TB) *backendProc {
	t.Helper()
	dir := t.TempDir()
	b := &backendProc{dir: dir}
	b.token = tokenRE.FindString(cli(t, dir, "init", "--client", "proxy-1"))
	if b.token == "" {
		t.Fatal("init printed no token")
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(adminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, dir, "user", "add", "admin", "--password-file", pwFile)
	b.proc = proctest.Start(t, "smartproxy-api", apiBinary(t), "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
		"--log-level", "debug")
	t.Cleanup(func() { b.proc.Stop(t) })
	b.proc.WaitStdout(t, adminURLRE, 1)
	b.base = adminURLRE.FindStringSubmatch(b.proc.Stdout.String())[1]
	pem, err := os.ReadFile(filepath.Join(dir, "tls", "api.crt"))
	if err != nil {
		t.Fatal(err)
	}
	b.pool = x509.NewCertPool()
	if !b.pool.AppendCertsFromPEM(pem) {
		t.Fatal("api.crt holds no certificate")
	}
	if b.st, err = store.Open(context.Background(), filepath.Join(dir, "smartproxy-api.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.st.Close() })
	return b
}

// client returns an HTTPS client that trusts the backend's certificate,
// keeps cookies and does not follow redirects.
func (b *backendProc) client(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.pool, ServerName: "127.0.0.1"}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// apiCall sends a JSON request to the API with the client token and checks the status.
func (b *backendProc) apiCall(t testing.TB, method, path, body string, want int) {
	t.Helper()
	req, err := http.NewRequest(method, b.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %s, want %d", method, path, resp.Status, want)
	}
}

// postEvent posts one event through the API with the client token.
func (b *backendProc) postEvent(t testing.TB, id, severity, name, message string) {
	t.Helper()
	body := fmt.Sprintf(`{"events":[{"id":%q,"time":%q,"severity":%q,"name":%q,"odette_id":"O0013000000000PARTNER",`+
		`"remote_addr":"192.0.2.7:40000","message":%q,"source":"server"}]}`,
		id, time.Now().UTC().Format(time.RFC3339Nano), severity, name, message)
	b.apiCall(t, http.MethodPost, "/v1/events", body, http.StatusOK)
}

// apiStatus returns the status of GET /v1/config with the client token.
func (b *backendProc) apiStatus(t testing.TB) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+"/v1/config", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// auditActions returns the actions of the audit log, oldest first.
func (b *backendProc) auditActions(t testing.TB) []string {
	t.Helper()
	list, err := b.st.AuditLog(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, list[i].Action)
	}
	return out
}
