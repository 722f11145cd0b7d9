package backend_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apiserver "smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testnet"
	"smartproxy/internal/testwait"
	"smartproxy/oftp2"
)

func TestMain(m *testing.M) { os.Exit(bins.Main(m)) }

// Identities of the system under test.
const (
	companyID       = "O0013000000000COMPANY"
	companyPassword = "COMPANY"
	partnerID       = "O0013000000000PARTNER"
	partnerPassword = "PARTNER"
	otherID         = "O0013000000000OTHER"
	otherPassword   = "OTHER"
	strangerID      = "O0013000000000STRANGER"
	// waitTimeout bounds every wait for an eventual outcome: generous, since the whole suite
	// runs beside it on two cores (a 1,000,001-serial CRL took 23 s to reach the DMZ there).
	waitTimeout = 90 * time.Second
)

// proc is a running process of a built binary.
type proc = proctest.Proc

func startProc(t testing.TB, name, path string, args ...string) *proc {
	t.Helper()
	return proctest.Start(t, name, path, args...)
}

// bins are smartproxy-server, smartproxy-client, smartproxy-api and oftp2, built once per test
// binary.
var bins = proctest.NewBinaries("smartproxy/cmd/smartproxy-server", "smartproxy/cmd/smartproxy-client",
	"smartproxy/cmd/smartproxy-api", "smartproxy/cmd/oftp2")

// binaries returns the directory of the built commands.
func binaries(t testing.TB) string {
	t.Helper()
	return bins.Dir(t)
}

// waitFor polls cond every 10 ms until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, waitTimeout, what, cond)
}

// crlServer serves one CRL over plain HTTP, as a CA's distribution point does.
type crlServer struct {
	srv  *httptest.Server
	body atomic.Pointer[crlBody]
	url  string
}

// crlBody is a CRL with its ETag.
type crlBody struct {
	der  []byte
	etag string
}

func newCRLServer(t testing.TB) *crlServer {
	t.Helper()
	c := &crlServer{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := c.body.Load()
		if body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Header().Set("ETag", body.etag) // ServeContent answers If-None-Match with 304
		http.ServeContent(w, r, "partner-ca.crl", time.Time{}, bytes.NewReader(body.der))
	}))
	t.Cleanup(c.srv.Close)
	c.url = c.srv.URL + "/partner-ca.crl"
	return c
}

func (c *crlServer) set(der []byte) {
	sum := sha256.Sum256(der)
	c.body.Store(&crlBody{der: der, etag: fmt.Sprintf(`"%x"`, sum[:12])})
}

// system is the whole product on loopback: the reference backend (in-process, on its own
// SQLite file, which the admin CLI changes from other processes), smartproxy-server and
// smartproxy-client as processes, and an internal OFTP2 responder (oftp2 serve).
type system struct {
	t    testing.TB
	bin  string
	work string

	tunnelDir string
	companyCA *pki.CA
	company   *pki.Leaf
	partnerCA *pki.CA
	crl       *crlServer

	db          string
	apiAddr     string
	fingerprint string
	token       string
	api         *backendRun

	internalAddr string
	tunnelAddr   string
	partnerAddr  string
	server       *proc
	client       *proc
	serve        *proc
}

// backendRun is one run of the in-process backend.
type backendRun struct {
	store  *store.Store
	cancel context.CancelFunc
	done   chan error
}

// newSystem prepares the PKI, the database (through the CLI) and the internal responder; the
// daemons are started by the test.
func newSystem(t testing.TB) *system {
	t.Helper()
	s := &system{t: t, bin: binaries(t), work: t.TempDir()}
	s.tunnelDir = filepath.Join(s.work, "tunnel")
	if _, err := pki.Init(s.tunnelDir, pki.InitOptions{Hostname: "localhost"}); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.companyCA, err = pki.NewCA("E2E Company CA"); err != nil {
		t.Fatal(err)
	}
	if s.company, err = s.companyCA.Issue(pki.Request{CommonName: "localhost", SerialNumber: companyID, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
		t.Fatal(err)
	}
	if s.partnerCA, err = pki.NewCA("E2E Partner CA"); err != nil {
		t.Fatal(err)
	}
	s.crl = newCRLServer(t)
	s.crl.set(s.partnerCRL())

	// The internal OFTP2 server.
	addrFile := s.path("serve.addr")
	s.serve = startProc(t, "oftp2 serve", filepath.Join(s.bin, "oftp2"), "serve", "--plain", "--listen", "127.0.0.1:0",
		"--addr-file", addrFile, "--odette-id", companyID, "--password", companyPassword,
		"--partner", partnerID+":"+partnerPassword, "--partner", otherID+":"+otherPassword, "--dir", s.path("inbox"), "--timeout", "60s")
	waitFor(t, "the internal responder's address", func() bool {
		data, err := os.ReadFile(addrFile)
		s.internalAddr = strings.TrimSpace(string(data))
		return err == nil && s.internalAddr != ""
	})

	// The backend's database, set up with the admin CLI.
	s.db = s.path("api.db")
	s.apiAddr = testnet.ReserveAddr(t)
	s.token = findToken(t, s.cli("init", "--client", "proxy-1"))
	s.writePEM("company.pem", s.company.CertPEM)
	s.writePEM("company-key.pem", s.company.KeyPEM)
	s.writePEM("partner-ca.pem", s.partnerCA.CertPEM)
	s.cli("config", "set", "company_certificate", s.path("company.pem"))
	s.cli("config", "set", "company_key", s.path("company-key.pem"))
	s.cli("config", "set", "internal_server.address", s.internalAddr)
	s.partnerAddr = testnet.ReserveAddr(t)
	s.cli("config", "set", "partner_listen_address", s.partnerAddr)
	// The tests connect many times a second from one address.
	s.cli("config", "set", "limits.per_ip_rate", "10000")
	s.cli("config", "set", "limits.per_ip_burst", "10000")
	s.cli("ca", "add", s.path("partner-ca.pem"))
	return s
}

func (s *system) path(name string) string { return filepath.Join(s.work, name) }

func (s *system) writePEM(name string, data []byte) {
	s.t.Helper()
	if err := pki.WriteFile(s.path(name), data, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

var tokenRE = regexp.MustCompile(`\b` + regexp.QuoteMeta(store.TokenPrefix) + `[A-Za-z0-9_-]+`)

func findToken(t testing.TB, out string) string {
	t.Helper()
	tok := tokenRE.FindString(out)
	if tok == "" {
		t.Fatalf("token create printed no token:\n%s", out)
	}
	return tok
}

// cli runs the admin CLI on the backend's database and returns its output; a failure fails
// the test.
func (s *system) cli(args ...string) string {
	s.t.Helper()
	out, err := s.tryCLI(args...)
	if err != nil {
		s.t.Fatalf("smartproxy-api %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *system) tryCLI(args ...string) (string, error) {

	cmd := exec.Command(filepath.Join(s.bin, "smartproxy-api"), append(args, "--db", s.db, "--data-dir", s.work)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startBackend runs the reference backend in-process on its fixed address, with short job
// intervals so that the test does not wait for the production ones.
func (s *system) startBackend() {
	s.t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, s.db, store.Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	certFile, keyFile, _, err := apiserver.EnsureSelfSigned(s.work, nil, time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	cf, err := apiserver.LoadCertificateFiles(certFile, keyFile)
	if err != nil {
		s.t.Fatal(err)
	}
	s.fingerprint = apiserver.Fingerprint(cf.Leaf())
	srv, err := apiserver.New(apiserver.Config{Store: st, TLSConfig: cf.TLSConfig(), RevisionPollInterval: 50 * time.Millisecond,
		CRL: apiserver.FetcherConfig{Interval: 300 * time.Millisecond, RetryInterval: 200 * time.Millisecond, CheckInterval: 100 * time.Millisecond}})
	if err != nil {
		s.t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", s.apiAddr); err == nil {
			break
		}
		if i == 50 {
			s.t.Fatalf("backend listener: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rctx, cancel := context.WithCancel(ctx)
	run := &backendRun{store: st, cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- srv.Run(rctx, ln) }()
	s.api = run
	s.t.Cleanup(s.stopBackend)
}

// stopBackend stops the backend, if it runs.
func (s *system) stopBackend() {
	if s.api == nil {
		return
	}
	s.api.cancel()
	if err := <-s.api.done; err != nil && !errors.Is(err, context.Canceled) {
		s.t.Errorf("backend Run() = %v", err)
	}
	s.api.store.Close()
	s.api = nil
}

// startServer starts smartproxy-server without a license file of its own (the license comes
// from the backend).
func (s *system) startServer() {
	s.t.Helper()
	if s.tunnelAddr == "" {
		s.tunnelAddr = testnet.ReserveAddr(s.t)
	}
	s.server = startProc(s.t, "smartproxy-server", filepath.Join(s.bin, "smartproxy-server"), "-i", s.tunnelAddr, "-l", s.path("server-license"),
		"--tunnel-cert", filepath.Join(s.tunnelDir, pki.FileServerCert), "--tunnel-key", filepath.Join(s.tunnelDir, pki.FileServerKey),
		"--tunnel-ca", filepath.Join(s.tunnelDir, pki.FileCACert), "--admin=", "--metrics=", "--pid-file=", "--log-level", "debug")
}

// proxyID returns the server host's Proxy ID.
func (s *system) proxyID() string {
	s.t.Helper()
	out, err := exec.Command(filepath.Join(s.bin, "smartproxy-server"), "-L").Output()
	if err != nil {
		s.t.Fatalf("smartproxy-server -L: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// importLicense stores a license for the server's Proxy ID in the backend (the dev signing
// key, which development builds of the server trust).
func (s *system) importLicense() {
	s.t.Helper()
	key, keyID := devkey.SigningKey()
	file, err := license.Sign(license.License{ProxyID: s.proxyID(), Customer: "e2e backend", NotAfter: time.Now().Add(24 * time.Hour)}, key, keyID)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(s.path("license.import"), file, 0o600); err != nil {
		s.t.Fatal(err)
	}
	s.cli("license", "import", s.path("license.import"))
}

// startClient starts smartproxy-client following the backend.
func (s *system) startClient() {
	s.t.Helper()
	s.client = startProc(s.t, "smartproxy-client", filepath.Join(s.bin, "smartproxy-client"), "-U", "https://"+s.apiAddr, "-T", s.token,
		"--api-fingerprint", s.fingerprint, "--state-dir", s.path("client-state"),
		"-S", s.tunnelAddr, "--tunnel-server-name", "localhost",
		"--tunnel-cert", filepath.Join(s.tunnelDir, pki.FileClientCert), "--tunnel-key", filepath.Join(s.tunnelDir, pki.FileClientKey),
		"--tunnel-ca", filepath.Join(s.tunnelDir, pki.FileCACert), "--admin=", "--metrics=", "--pid-file=", "--log-level", "debug")
}

// partner issues a partner certificate for id whose CRL distribution point is the local CRL
// server.
func (s *system) partner(id string) *tls.Config {
	s.t.Helper()
	leaf, err := s.partnerCA.Issue(pki.Request{CommonName: strings.ToLower(id) + ".partner.test", SerialNumber: id,
		Usage: pki.UsageClient | pki.UsageServer, CRLDistributionPoints: []string{s.crl.url}})
	if err != nil {
		s.t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		s.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.companyCA.Cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// serial returns the serial number of a partner TLS configuration's certificate.
func serial(t testing.TB, cfg *tls.Config) *big.Int {
	t.Helper()
	c, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// partnerCRL returns a fresh CRL of the partner CA listing the given serials.
func (s *system) partnerCRL(revoked ...*big.Int) []byte {
	s.t.Helper()
	var list []pki.RevokedCert
	for _, r := range revoked {
		list = append(list, pki.RevokedCert{SerialNumber: r})
	}
	der, err := s.partnerCA.CRL(list, time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour))
	if err != nil {
		s.t.Fatal(err)
	}
	return der
}

// outcome is how a partner's connection attempt ended.
type outcome struct {
	// admitted is true when the internal OFTP2 server answered the partner's SSID.
	admitted bool
	// esid is the ESID reason of a refusal after SSRM; -1 when the refusal came earlier (TLS).
	esid int
	// local is the partner's own address of the attempt.
	local string
	// detail describes the refusal.
	detail string
}

func (o outcome) String() string {
	switch {
	case o.admitted:
		return "admitted"
	case o.esid >= 0:
		return fmt.Sprintf("refused with ESID %02d (%s)", o.esid, o.detail)
	}
	return "refused before SSRM: " + o.detail
}

// probe connects as a partner: TLS, the proxy's SSRM, the partner's SSID, and the answer. An
// admitted session is ended at once with ESID 00.
func (s *system) probe(cfg *tls.Config, id, password string) outcome {
	return s.probeFrom(nil, cfg, id, password)
}

// probeFrom is probe from the loopback source address from (nil: the system's choice). The
// server summarises the refusals of one source past a burst; a test that needs every refusal as
// its own event spreads its probes over several sources.
func (s *system) probeFrom(from net.IP, cfg *tls.Config, id, password string) outcome {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != nil {
		d.LocalAddr = &net.TCPAddr{IP: from}
	}
	conn, err := tls.DialWithDialer(d, "tcp", s.partnerAddr, cfg)
	if err != nil {
		return outcome{esid: -1, detail: err.Error()}
	}
	defer conn.Close()
	o := outcome{esid: -1, local: conn.LocalAddr().String()}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
	buf, err := r.ReadBuffer()
	if err != nil {
		o.detail = "no SSRM: " + err.Error() // a refused certificate arrives as a TLS alert here
		return o
	}
	if cmd, err := oftp2.Parse(buf, nil); err != nil || cmd.Code() != oftp2.CodeSSRM {
		o.detail = fmt.Sprintf("want SSRM, got %v %v", cmd, err)
		return o
	}
	if err := w.WriteCommand(&oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: 4096, Mode: oftp2.ModeSender,
		Restart: true, Credit: 16}); err != nil {
		o.detail = "sending SSID: " + err.Error()
		return o
	}
	buf, err = r.ReadBuffer()
	if err != nil {
		o.detail = "no answer to SSID: " + err.Error()
		return o
	}
	cmd, err := oftp2.Parse(buf, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient})
	if err != nil {
		o.detail = "answer: " + err.Error()
		return o
	}
	switch c := cmd.(type) {
	case *oftp2.SSID:
		o.admitted = true
		// End the session normally: the partner has nothing to send (CD), the internal
		// server has nothing either and answers ESID 00.
		if err := w.WriteCommand(&oftp2.CD{}); err == nil {
			r.ReadBuffer()
		}
	case *oftp2.ESID:
		o.esid, o.detail = int(c.Reason), c.Text
	default:
		o.detail = fmt.Sprintf("unexpected %v", cmd.Code())
	}
	return o
}

// waitOutcome probes until want(outcome) holds and returns that outcome.
func (s *system) waitOutcome(t testing.TB, what string, cfg *tls.Config, id, password string, want func(outcome) bool) outcome {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last outcome
	for {
		last = s.probe(cfg, id, password)
		if want(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v", what, last, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func admitted(o outcome) bool { return o.admitted }
func refused(o outcome) bool  { return !o.admitted }
