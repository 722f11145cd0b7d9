package backend

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"smartproxy/backend/store"
	"smartproxy/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines that contain every one of parts.
func (l *logBuffer) lines(parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func newLogger() (*logrus.Logger, *logBuffer) {
	buf := &logBuffer{}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetFormatter(&logrus.TextFormatter{DisableColors: true, DisableTimestamp: true})
	l.SetLevel(logrus.DebugLevel)
	return l, buf
}

// waitFor polls cond every 10ms for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 10*time.Second, what, cond)
}

// env is a running backend on 127.0.0.1 with HTTPS, a database in a
// temporary directory and a client that trusts the backend's generated
// certificate.
type env struct {
	t       testing.TB
	dir     string
	dbPath  string
	st      *store.Store
	srv     *Server
	base    string
	client  *http.Client
	token   string
	client2 string // a second client's token
	logs    *logBuffer
	stop    func() // ends Run and waits for it; idempotent
}

func newEnv(t *testing.T, change func(*Config)) *env { return newEnvTB(t, change) }

// newEnvTB is newEnv for tests and benchmarks.
func newEnvTB(t testing.TB, change func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, dir: t.TempDir()}
	e.dbPath = filepath.Join(e.dir, "api.db")
	st, err := store.Open(ctx, e.dbPath, store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	if e.token, _, err = st.CreateToken(ctx, "dmz-1"); err != nil {
		t.Fatal(err)
	}
	if e.client2, _, err = st.CreateToken(ctx, "dmz-2"); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, created, err := EnsureSelfSigned(e.dir, nil, time.Now())
	if err != nil || !created {
		t.Fatalf("EnsureSelfSigned() = %v, %v", created, err)
	}
	cf, err := LoadCertificateFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger()
	e.logs = logs
	cfg := Config{Store: st, Logger: log, TLSConfig: cf.TLSConfig(), RevisionPollInterval: 50 * time.Millisecond,
		CRL: FetcherConfig{CheckInterval: time.Hour}}
	if change != nil {
		change(&cfg)
	}
	e.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(runCtx, ln) }()
	pool := x509.NewCertPool()
	pool.AddCert(cf.Leaf())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	e.client = &http.Client{Transport: tr, Timeout: 90 * time.Second}
	e.base = "https://" + ln.Addr().String()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run() = %v", err)
			}
		})
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		e.stop()
	})
	return e
}

// do sends a request with the token (if not empty) and returns the
// response with its body read. It calls t.Fatal, so only the test's
// goroutine may use it; other goroutines use send.
func (e *env) do(method, path, token string, body []byte, header map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	resp, b, err := e.send(method, path, token, body, header)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// send is do without the test: it returns the error instead, so that a
// goroutine other than the test's can pass it back over a channel.
func (e *env) send(method, path, token string, body []byte, header map[string]string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the body: %w", method, path, err)
	}
	return resp, b, nil
}

// mustJSON encodes v.
func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// count returns the number of rows of a table.
func (e *env) count(table string) int64 {
	e.t.Helper()
	counts, err := e.st.TableCounts(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	n, ok := counts[table]
	if !ok {
		e.t.Fatalf("no table %q: %v", table, counts)
	}
	return n
}
