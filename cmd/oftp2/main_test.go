package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"smartproxy/internal/pki"
	"smartproxy/internal/testwait"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if certDir != "" {
		os.RemoveAll(certDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const (
	respID = "O0013000000RESP"
	respPW = "RESPPW"
	initID = "O0013000000INIT"
	initPW = "INITPW"
)

// certFiles are PEM files of a CA, a server and a client certificate.
type certFiles struct {
	dir                                  string
	ca, serverCert, serverKey, cert, key string
}

var (
	certOnce sync.Once
	certDir  string
	certErr  error
)

// testCerts writes a CA, a server certificate for localhost/127.0.0.1 and a
// client certificate (with the Initiator's Odette ID in serialNumber) once
// per test binary.
func testCerts(t testing.TB) certFiles {
	t.Helper()
	certOnce.Do(func() {
		certDir, certErr = os.MkdirTemp("", "oftp2-certs-")
		if certErr != nil {
			return
		}
		certErr = writeCerts(certDir)
	})
	if certErr != nil {
		t.Fatal(certErr)
	}
	d := certDir
	return certFiles{dir: d, ca: filepath.Join(d, "ca.pem"), serverCert: filepath.Join(d, "server.pem"), serverKey: filepath.Join(d, "server-key.pem"),
		cert: filepath.Join(d, "client.pem"), key: filepath.Join(d, "client-key.pem")}
}

func writeCerts(dir string) error {
	ca, err := pki.NewCA("oftp2 test CA")
	if err != nil {
		return err
	}
	srv, err := ca.Issue(pki.Request{CommonName: "responder", SerialNumber: respID, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	if err != nil {
		return err
	}
	cli, err := ca.Issue(pki.Request{CommonName: "initiator", SerialNumber: initID, Usage: pki.UsageClient})
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"ca.pem": ca.CertPEM, "server.pem": srv.CertPEM, "server-key.pem": srv.KeyPEM,
		"client.pem": cli.CertPEM, "client-key.pem": cli.KeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
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

// server is an `oftp2 serve` running in the test.
type server struct {
	addr   string
	dir    string
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startServe runs `oftp2 serve` with TLS and client certificates on a
// loopback port; extra flags are appended.
func startServe(t *testing.T, extra ...string) *server {
	t.Helper()
	c := testCerts(t)
	s := &server{dir: filepath.Join(t.TempDir(), "in"), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	addrFile := filepath.Join(t.TempDir(), "addr")
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--addr-file", addrFile,
		"--cert", c.serverCert, "--key", c.serverKey, "--ca", c.ca,
		"--odette-id", respID, "--password", respPW, "--partner", initID + ":" + initPW,
		"--dir", s.dir, "--log-level", "debug"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- run(ctx, args, s.stdout, s.stderr) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(addrFile)
		if err == nil && strings.HasSuffix(string(data), "\n") {
			s.addr = strings.TrimSpace(string(data))
			break
		}
		select {
		case err := <-s.done:
			cancel()
			t.Fatalf("serve ended early: %v\n%s", err, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("serve did not start listening")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *server) stop(t *testing.T) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v\n%s", err, s.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Error("serve did not stop")
	}
	if t.Failed() {
		t.Logf("serve log:\n%s", s.stderr.String())
	}
}

// send runs `oftp2 send` against addr with TLS and the client certificate.
func send(t *testing.T, addr string, extra ...string) (stdout, stderr string, err error) {
	t.Helper()
	c := testCerts(t)
	args := append([]string{"send", "--connect", addr, "--server-name", "localhost",
		"--cert", c.cert, "--key", c.key, "--ca", c.ca,
		"--odette-id", initID, "--password", initPW, "--partner-id", respID, "--partner-password", respPW}, extra...)
	var out, errb bytes.Buffer
	err = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

// makeFile writes a file of format f with n octets of user data and returns
// its path and F record size.
func makeFile(t *testing.T, dir string, f oftp2.FileFormat, n int) (string, int) {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(uint64(n), uint64(f)))
	var data []byte
	rs := 0
	switch f {
	case oftp2.FormatUnstructured:
		data = make([]byte, n)
		for i := 0; i < n; {
			if rng.IntN(3) == 0 { // runs for the compression
				b := byte(rng.IntN(256))
				for k := rng.IntN(100); k > 0 && i < n; k-- {
					data[i] = b
					i++
				}
				continue
			}
			data[i] = byte(rng.IntN(256))
			i++
		}
	case oftp2.FormatText:
		var b strings.Builder
		for b.Len() < n {
			fmt.Fprintf(&b, "UNH+%d+INVOIC:D:96A:UN'BGM+380+%08d+9'DTM+137:20240506:102'\r\n", rng.IntN(1e6), rng.IntN(1e8))
		}
		data = []byte(b.String()[:n])
		if n > 0 && data[n-1] == '\r' {
			data[n-1] = '\''
		}
	case oftp2.FormatFixed:
		rs = map[int]int{0: 10, 1: 1, 63: 21, 64: 16, 65: 13}[n]
		if rs == 0 {
			rs = 128
		}
		data = make([]byte, n)
		for i := range data {
			data[i] = byte('0' + (i/rs)%10)
			if rng.IntN(50) == 0 {
				data[i] = byte(rng.IntN(256))
			}
		}
	case oftp2.FormatVariable:
		units := 0
		for units < n {
			l := min(rng.IntN(500), n-units)
			data = binary.BigEndian.AppendUint16(data, uint16(l))
			for range l {
				data = append(data, byte(rng.IntN(256)))
			}
			units += l
		}
	}
	path := filepath.Join(dir, fmt.Sprintf("%c%d.dat", f, n))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, rs
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// fields parses the "key=value" words of one output line.
func fields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

// lineFor returns the output line that starts with verb and names path.
func lineFor(out, verb, path string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, verb+" "+path+" ") {
			return l
		}
	}
	return ""
}

// TestEndToEnd sends files of 0 B, 1 B, 63 B, 64 B, 65 B and 10 MiB in each
// format from `oftp2 send` to `oftp2 serve` over TLS 1.3 with client
// certificates, with buffer compression on and off, and checks that each
// file is confirmed by EERP and stored byte-identical.
func TestEndToEnd(t *testing.T) {
	sizes := []int{0, 1, 63, 64, 65, 10 << 20}
	if testing.Short() {
		sizes = sizes[:5]
	}
	src := t.TempDir()
	type file struct {
		path string
		rs   int
	}
	files := map[oftp2.FileFormat][]file{}
	for _, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable} {
		for _, n := range sizes {
			p, rs := makeFile(t, src, f, n)
			files[f] = append(files[f], file{p, rs})
		}
	}
	for _, compression := range []bool{true, false} {
		t.Run(fmt.Sprintf("compression=%t", compression), func(t *testing.T) {
			srv := startServe(t)
			for _, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable} {
				var batches [][]string
				if f == oftp2.FormatFixed { // one record size per file
					for _, fl := range files[f] {
						batches = append(batches, []string{"--record-size", fmt.Sprint(fl.rs), fl.path})
					}
				} else {
					b := []string{}
					for _, fl := range files[f] {
						b = append(b, fl.path)
					}
					batches = append(batches, b)
				}
				for _, b := range batches {
					args := []string{"--format", string(rune(f))}
					if !compression {
						args = append(args, "--no-compression")
					}
					out, errOut, err := send(t, srv.addr, append(args, b...)...)
					if err != nil {
						t.Fatalf("send %c %v: %v\n%s", f, b, err, errOut)
					}
					for _, p := range b {
						if strings.HasPrefix(p, "--") || !strings.HasPrefix(p, src) {
							continue
						}
						want := sha256File(t, p)
						l := lineFor(out, "delivered", p)
						if got := fields(l)["sha256"]; got != want {
							t.Errorf("send output for %s: %q, want sha256=%s", p, l, want)
						}
					}
				}
			}
			srv.stop(t)
			// Every file is stored under its final name with the same content.
			received := srv.stdout.String()
			for f, fl := range files {
				for _, x := range fl {
					want := sha256File(t, x.path)
					dst := filepath.Join(srv.dir, endpoint.DatasetName(filepath.Base(x.path)))
					if got := sha256File(t, dst); got != want {
						t.Errorf("%c %s: stored sha256 %s, want %s", f, dst, got, want)
					}
					if l := lineFor(received, "received", dst); fields(l)["sha256"] != want || fields(l)["format"] != string(rune(f)) {
						t.Errorf("serve output for %s: %q", dst, l)
					}
					meta, err := endpoint.ReadMetadata(dst)
					if err != nil || meta.Originator != initID || meta.SHA256 != want {
						t.Errorf("metadata of %s: %+v, %v", dst, meta, err)
					}
				}
			}
		})
	}
}

// forwarder is a loopback TCP forwarder that cuts its first connection
// after limit octets from the client.
type forwarder struct {
	ln    net.Listener
	wg    sync.WaitGroup
	first atomic.Bool
}

func newForwarder(t *testing.T, target string, limit int64) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln}
	f.first.Store(true)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			var r io.Reader = in
			if f.first.Swap(false) {
				r = io.LimitReader(in, limit)
			}
			f.wg.Add(2)
			go func() { defer f.wg.Done(); io.Copy(out, r); in.Close(); out.Close() }()
			go func() { defer f.wg.Done(); io.Copy(in, out); in.Close(); out.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

// TestEndToEndRestart cuts the connection in the middle of a 10 MiB file,
// checks that nothing appeared under the final name while the partial file
// was kept, and sends again: the transfer resumes and the stored file is
// byte-identical.
func TestEndToEndRestart(t *testing.T) {
	const size = 10 << 20
	for _, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatVariable} {
		t.Run(string(rune(f)), func(t *testing.T) {
			srv := startServe(t)
			path, _ := makeFile(t, t.TempDir(), f, size)
			final := filepath.Join(srv.dir, endpoint.DatasetName(filepath.Base(path)))
			fw := newForwarder(t, srv.addr, size/3)

			// Watch the receive directory during the broken session.
			stop := make(chan struct{})
			var early atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if _, err := os.Lstat(final); err == nil {
						early.Store(true)
					}
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
				}
			}()
			_, errOut, err := send(t, fw.ln.Addr().String(), "--format", string(rune(f)), "--no-compression", path)
			close(stop)
			wg.Wait()
			if err == nil || !errors.Is(err, endpoint.ErrConnectionLost) {
				t.Fatalf("first send = %v, want a lost connection\n%s", err, errOut)
			}
			if early.Load() {
				t.Fatal("the file existed under its final name before it was complete")
			}
			if _, err := os.Lstat(final); err == nil {
				t.Fatal("the file exists under its final name after the broken session")
			}
			parts, _ := filepath.Glob(filepath.Join(srv.dir, ".oftp2", "partial", "*.part"))
			if len(parts) != 1 {
				t.Fatalf("partial files %v, want one", parts)
			}
			// The server may still be noticing the cut; wait for it to save
			// the restart state and to end the broken session, which holds the
			// file until then (a second session before that is refused with
			// "the file is being received in another session").
			waitFor(t, func() bool {
				m, _ := filepath.Glob(filepath.Join(srv.dir, ".oftp2", "partial", "*.json"))
				return len(m) == 1 && strings.Contains(srv.stderr.String(), `msg="session ended abnormally"`)
			})

			out, errOut, err := send(t, srv.addr, "--format", string(rune(f)), path)
			if err != nil {
				t.Fatalf("second send: %v\n%s", err, errOut)
			}
			l := fields(lineFor(out, "delivered", path))
			if l["restart"] == "" || l["restart"] == "0" {
				t.Errorf("second send output %q, want a restart position above 0", out)
			}
			want := sha256File(t, path)
			if l["sha256"] != want {
				t.Errorf("send reported sha256 %s, want %s", l["sha256"], want)
			}
			if got := sha256File(t, final); got != want {
				t.Errorf("stored sha256 %s, want %s", got, want)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testwait.For(t, 30*time.Second, "the condition", cond)
}

// TestEndToEndRefused: unknown Odette IDs and wrong passwords are refused
// with ESID 03 and 04, a missing client certificate in the TLS handshake.
func TestEndToEndRefused(t *testing.T) {
	srv := startServe(t)
	path, _ := makeFile(t, t.TempDir(), oftp2.FormatUnstructured, 100)
	c := testCerts(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"wrong password", []string{"--password", "WRONG"}, "ESID 04"},
		{"unknown id", []string{"--odette-id", "O0013000000STRANGER"}, "ESID 03"},
		{"wrong responder password", []string{"--partner-password", "OTHER"}, "ESID 04"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := send(t, srv.addr, append(tc.args, path)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("send = %v, want an error with %q\n%s", err, tc.want, errOut)
			}
			var se *endpoint.SessionError
			if !errors.As(err, &se) {
				t.Errorf("send error %v is not a *SessionError", err)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"send", "--connect", srv.addr, "--server-name", "localhost", "--ca", c.ca,
			"--odette-id", initID, "--password", initPW, path}, &out, &errb)
		if err == nil {
			t.Fatal("send without a client certificate succeeded")
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		_, _, err := send(t, srv.addr, "--server-name", "elsewhere.example", path)
		var ve *tls.CertificateVerificationError
		if !errors.As(err, &ve) {
			t.Errorf("send = %v, want a certificate verification error", err)
		}
	})
	srv.stop(t)
	if got := srv.stdout.String(); got != "" {
		t.Errorf("serve stored files for refused partners:\n%s", got)
	}
}

// TestEndToEndSilentPeer: a partner that says nothing is ended with ESID 09
// by both commands.
func TestEndToEndSilentPeer(t *testing.T) {
	c := testCerts(t)
	t.Run("silent responder", func(t *testing.T) {
		cert, err := tls.LoadX509KeyPair(c.serverCert, c.serverKey)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			defer conn.Close()
			// Complete the handshake, send nothing, read what comes.
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			b, _ := oftp2.NewReader(conn, 0).ReadBuffer()
			got <- bytes.Clone(b)
		}()
		path, _ := makeFile(t, t.TempDir(), oftp2.FormatUnstructured, 10)
		_, _, err = send(t, ln.Addr().String(), "--timeout", "300ms", path)
		if err == nil || !strings.Contains(err.Error(), "ESID 09") {
			t.Errorf("send = %v, want ESID 09", err)
		}
		if b := <-got; len(b) < 3 || oftp2.CommandCode(b[0]) != oftp2.CodeESID || string(b[1:3]) != "09" {
			t.Errorf("the silent responder received %q, want ESID 09", b)
		}
	})
	t.Run("silent initiator", func(t *testing.T) {
		srv := startServe(t, "--timeout", "300ms")
		cert, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509Pool(t, c.ca)
		conn, err := tls.Dial("tcp", srv.addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("serve negotiated %s, want TLS 1.3", tls.VersionName(v))
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		rd := oftp2.NewReader(conn, 0)
		var codes []string
		for {
			b, err := rd.ReadBuffer()
			if err != nil {
				break
			}
			codes = append(codes, oftp2.CommandCode(b[0]).String())
			if oftp2.CommandCode(b[0]) == oftp2.CodeESID {
				if string(b[1:3]) != "09" {
					t.Errorf("ESID reason %q, want 09", b[1:3])
				}
				break
			}
		}
		if strings.Join(codes, " ") != "SSRM ESID" {
			t.Errorf("silent initiator received %v, want SSRM ESID", codes)
		}
	})
}

// TestEndToEndOutbox: a file in serve's outbox reaches a caller that can
// receive, in the same session as the caller's own file, and moves to .sent.
func TestEndToEndOutbox(t *testing.T) {
	outbox := t.TempDir()
	down, _ := makeFile(t, outbox, oftp2.FormatUnstructured, 50_000)
	if err := os.MkdirAll(filepath.Join(outbox, "O0013000000OTHER"), 0o755); err != nil {
		t.Fatal(err)
	}
	other, _ := makeFile(t, filepath.Join(outbox, "O0013000000OTHER"), oftp2.FormatUnstructured, 10)
	want := sha256File(t, down)
	srv := startServe(t, "--outbox", outbox)
	up, _ := makeFile(t, t.TempDir(), oftp2.FormatText, 5000)
	inbox := filepath.Join(t.TempDir(), "back")
	out, errOut, err := send(t, srv.addr, "--format", "T", "--dir", inbox, up)
	if err != nil {
		t.Fatalf("send: %v\n%s", err, errOut)
	}
	got := filepath.Join(inbox, endpoint.DatasetName(filepath.Base(down)))
	if l := fields(lineFor(out, "received", got)); l["sha256"] != want {
		t.Errorf("send output %q, want the outbox file received", out)
	}
	if sha256File(t, got) != want {
		t.Error("the outbox file arrived altered")
	}
	srv.stop(t)
	if _, err := os.Stat(filepath.Join(outbox, ".sent", filepath.Base(down))); err != nil {
		t.Errorf("delivered outbox file not moved to .sent: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the file for another partner was touched: %v", err)
	}
}

// TestPlain runs a transfer without TLS.
func TestPlain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "in")
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stdout syncBuffer
	go func() {
		done <- run(ctx, []string{"serve", "--plain", "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--odette-id", respID, "--dir", dir, "--log-level", "error"}, &stdout, io.Discard)
	}()
	var addr string
	waitFor(t, func() bool {
		b, err := os.ReadFile(addrFile)
		addr = strings.TrimSpace(string(b))
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	path, _ := makeFile(t, t.TempDir(), oftp2.FormatVariable, 20_000)
	var out bytes.Buffer
	err := run(context.Background(), []string{"send", "--plain", "--connect", addr, "--odette-id", initID, "--format", "V", path}, &out, io.Discard)
	cancel()
	if serr := <-done; serr != nil {
		t.Errorf("serve = %v", serr)
	}
	if err != nil {
		t.Fatalf("send = %v", err)
	}
	if got, want := sha256File(t, filepath.Join(dir, endpoint.DatasetName(filepath.Base(path)))), sha256File(t, path); got != want {
		t.Errorf("sha256 %s, want %s", got, want)
	}
}

// TestServeJudgesLikeTheProxy: `oftp2 serve` refuses a caller that ends the
// session with ESID 00 right after its EFID, without waiting for the EFPA and
// handing over the turn, with ESID 02 as the SmartProxy does; with --lenient
// it takes the ESID as a normal end (the behaviour before the validator).
func TestServeJudgesLikeTheProxy(t *testing.T) {
	c := testCerts(t)
	cert, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, lenient := range []bool{false, true} {
		t.Run(fmt.Sprintf("lenient=%v", lenient), func(t *testing.T) {
			var extra []string
			if lenient {
				extra = append(extra, "--lenient")
			}
			srv := startServe(t, extra...)
			conn, err := tls.Dial("tcp", srv.addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: x509Pool(t, c.ca), ServerName: "localhost"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			rd, wr := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
			next := func() (oftp2.Command, error) {
				b, err := rd.ReadBuffer()
				if err != nil {
					return nil, err
				}
				return oftp2.Parse(b, nil)
			}
			expect := func(code oftp2.CommandCode) {
				t.Helper()
				cmd, err := next()
				if err != nil || cmd.Code() != code {
					t.Fatalf("read %v, %v; want %s", cmd, err, code)
				}
			}
			write := func(cmd oftp2.Command) {
				t.Helper()
				if err := wr.WriteCommand(cmd); err != nil {
					t.Fatal(err)
				}
			}
			expect(oftp2.CodeSSRM)
			write(&oftp2.SSID{Level: 5, ID: initID, Password: initPW, BufferSize: 1000, Mode: oftp2.ModeBoth, Credit: 2})
			expect(oftp2.CodeSSID)
			write(&oftp2.SFID{DatasetName: "EARLY", Stamp: endpoint.StampOf(time.Now()), Destination: respID, Originator: initID, Format: oftp2.FormatUnstructured})
			expect(oftp2.CodeSFPA)
			write(&oftp2.Data{Payload: []byte{0x03, 'a', 'b', 'c'}})
			write(&oftp2.EFID{UnitCount: 3})
			write(&oftp2.ESID{Reason: oftp2.ESIDNormal})
			expect(oftp2.CodeEFPA)
			cmd, err := next()
			if lenient {
				if err == nil {
					t.Errorf("lenient serve answered %v after the ESID 00, want the connection closed", cmd)
				}
				return
			}
			if esid, ok := cmd.(*oftp2.ESID); !ok || esid.Reason != oftp2.ESIDProtocolViolation {
				t.Errorf("serve answered %v, %v after the early ESID 00; want ESID 02", cmd, err)
			}
			srv.stop(t)
			if !strings.Contains(srv.stderr.String(), "session failed") {
				t.Errorf("serve did not log the failed session:\n%s", srv.stderr.String())
			}
		})
	}
}

// TestUsage checks the help text and command-line errors.
func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &out, io.Discard); err != nil {
		t.Fatalf("run(-h) = %v", err)
	}
	for _, want := range []string{"oftp2 serve", "oftp2 send", "-listen", "-cert", "-key", "-ca", "-odette-id", "-password", "-partner", "-dir", "-outbox", "-plain",
		"-connect", "-server-name", "-partner-id", "-partner-password", "-format", "-record-size", "-no-compression", "-no-restart", "-timeout", "-credit", "-buffer-size", "-lenient"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"fly"}, "unknown command"},
		{[]string{"serve", "--odette-id", respID}, "--dir is required"},
		{[]string{"serve", "--dir", "x"}, "--odette-id is required"},
		{[]string{"serve", "--dir", "x", "--odette-id", respID}, "--cert and --key are required"},
		{[]string{"serve", "--partner", "nopassword"}, "ODETTE-ID:PASSWORD"},
		{[]string{"send", "--odette-id", initID, "f"}, "--connect is required"},
		{[]string{"send", "--connect", "x:1", "--odette-id", initID}, "no FILE"},
		{[]string{"send", "--connect", "x:1", "--odette-id", initID, "--format", "Q", "f"}, "--format"},
		{[]string{"send", "--connect", "x:1", "--odette-id", initID, "--dataset", "A", "f", "g"}, "exactly one FILE"},
		{[]string{"send", "--connect", "x:1", "--odette-id", initID, "--source-ip", "eth0", "f"}, "--source-ip"},
	}
	for _, tc := range tests {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func x509Pool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	p, err := loadCA(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
