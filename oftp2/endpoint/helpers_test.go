package endpoint

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"smartproxy/oftp2"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testPKI is a CA with one server and one client certificate for loopback
// TLS 1.3 with client certificates.
type testPKI struct {
	server *tls.Config
	client *tls.Config
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
	pkiErr  error
)

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { pkiVal, pkiErr = makeTestPKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiVal
}

func makeTestPKI() (*testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "endpoint test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := func(serial int64, cn, odetteID string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, SerialNumber: odetteID},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
	}
	srv, err := leaf(2, "responder", "O0013000000RESP", x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	cli, err := leaf(3, "initiator", "O0013000000INIT", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return &testPKI{
		server: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srv}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
		client: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cli}, RootCAs: pool, ServerName: "localhost"},
	}, nil
}

const (
	initID   = "O0013000000INIT"
	initPW   = "INITPW"
	respID   = "O0013000000RESP"
	respPW   = "RESPPW"
	testWait = 60 * time.Second
)

func testLogger(t testing.TB) logrus.FieldLogger {
	l := logrus.New()
	l.Out = io.Discard
	if testing.Verbose() {
		l.Out = os.Stderr
		l.Level = logrus.DebugLevel
	}
	return l.WithField("test", t.Name())
}

// initiatorConfig and responderConfig are a matching pair of configurations.
func initiatorConfig(t testing.TB) Config {
	return Config{
		Role: Initiator, ID: initID, Password: initPW, PartnerID: respID, PartnerPassword: respPW,
		ReceiveDir: filepath.Join(t.TempDir(), "init-in"), Logger: testLogger(t), Timeout: 20 * time.Second,
	}
}

func responderConfig(t testing.TB) Config {
	return Config{
		Role: Responder, ID: respID, Password: respPW, Partners: map[string]oftp2.Password{initID: initPW},
		ReceiveDir: filepath.Join(t.TempDir(), "resp-in"), Logger: testLogger(t), Timeout: 20 * time.Second,
	}
}

// sessionOutcome is what Run returned on one side.
type sessionOutcome struct {
	res *Result
	err error
}

// pair runs one session between an Initiator (under ctx) and a Responder
// (not cancelled) over TLS on loopback. via, if not nil, sits between them: it gets the responder's
// address and returns the address the initiator dials.
func pair(t testing.TB, ctx context.Context, ini, resp *Endpoint, via func(target string) string, files ...OutgoingFile) (i, r sessionOutcome) {
	t.Helper()
	p := newTestPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			r.err = err
			return
		}
		r.res, r.err = resp.Run(context.Background(), c)
	}()
	d := tls.Dialer{Config: p.client, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		ln.Close()
		wg.Wait()
		t.Fatalf("dial: %v", err)
	}
	i.res, i.err = ini.Run(ctx, c, files...)
	wg.Wait()
	return i, r
}

func mustNew(t testing.TB, c Config) *Endpoint {
	t.Helper()
	e, err := New(c)
	if err != nil {
		t.Fatalf("New(%+v) = %v", c, err)
	}
	return e
}

// content makes a local file of the given format with n octets of user data
// (for V the local file also holds the 2-octet record lengths) and returns
// its path, record size and record count.
func content(t testing.TB, dir string, format oftp2.FileFormat, n int, seed uint64) (path string, recSize int, records int64) {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, uint64(n)))
	var data []byte
	switch format {
	case oftp2.FormatUnstructured:
		data = make([]byte, 0, n)
		for len(data) < n {
			// Random octets with runs, so that compression has work.
			if rng.IntN(4) == 0 {
				run := min(rng.IntN(200)+1, n-len(data))
				b := byte(rng.IntN(256))
				for range run {
					data = append(data, b)
				}
				continue
			}
			data = append(data, byte(rng.IntN(256)))
		}
	case oftp2.FormatText:
		words := []string{"ODETTE", "file", "transfer", "protocol", "EDI", "invoice", "delivery", "    ", "1234", "-----"}
		data = make([]byte, 0, n)
		line := 0
		for len(data) < n {
			if line > 60 && rng.IntN(8) == 0 || line > 2000 {
				data = append(data, '\r', '\n')
				line = 0
				continue
			}
			w := words[rng.IntN(len(words))] + " "
			data = append(data, w...)
			line += len(w)
		}
		data = data[:n]
		if n > 0 && data[n-1] == '\r' {
			data[n-1] = '.'
		}
	case oftp2.FormatFixed:
		recSize = fixedRecordSize(n)
		data = make([]byte, n)
		for i := range data {
			data[i] = byte('A' + (i/recSize)%26)
		}
		if n > 0 {
			for i := 0; i < n; i += 97 {
				data[i] = byte(rng.IntN(256))
			}
		}
		records = int64(n / recSize)
	case oftp2.FormatVariable:
		units := 0
		for units < n {
			l := min(rng.IntN(300), n-units)
			if rng.IntN(10) == 0 {
				l = 0 // empty records exist (§7.3)
			}
			var hdr [2]byte
			binary.BigEndian.PutUint16(hdr[:], uint16(l))
			data = append(data, hdr[:]...)
			for range l {
				data = append(data, byte(rng.IntN(256)))
			}
			units += l
			records++
		}
	}
	path = filepath.Join(dir, fmt.Sprintf("%c-%d-%d.dat", format, n, seed))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, recSize, records
}

// fixedRecordSize picks a record length that divides n (whole records).
func fixedRecordSize(n int) int {
	for _, r := range []int{128, 80, 21, 16, 13} {
		if n%r == 0 && n >= r {
			return r
		}
	}
	if n == 0 {
		return 10
	}
	return n
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// cutter is a loopback TCP forwarder that closes both connections after
// limit octets from the client side have passed, once; later connections
// pass unchanged.
type cutter struct {
	ln     net.Listener
	target string
	limit  int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	cuts   int
}

func newCutter(t testing.TB, target string, limit int64) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target, limit: limit}
	c.wg.Add(1)
	go c.serve()
	t.Cleanup(func() {
		ln.Close()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) serve() {
	defer c.wg.Done()
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			in.Close()
			continue
		}
		c.mu.Lock()
		cut := c.cuts == 0
		c.cuts++
		c.mu.Unlock()
		c.wg.Add(2)
		go func() {
			defer c.wg.Done()
			var r io.Reader = in
			if cut {
				r = io.LimitReader(in, c.limit)
			}
			_, _ = io.Copy(out, r)
			in.Close()
			out.Close()
		}()
		go func() {
			defer c.wg.Done()
			_, _ = io.Copy(in, out)
			in.Close()
			out.Close()
		}()
	}
}

func (c *cutter) addr() string { return c.ln.Addr().String() }

// latencyRelay is a loopback TCP relay that delays every chunk by a fixed
// one-way delay in each direction (no bandwidth limit), to measure the
// effect of the credit window on a link with a round trip.
type latencyRelay struct {
	ln    net.Listener
	delay time.Duration
	wg    sync.WaitGroup
}

func newLatencyRelay(t testing.TB, target string, oneWay time.Duration) *latencyRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &latencyRelay{ln: ln, delay: oneWay}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
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
			l.wg.Add(2)
			go l.pipe(in, out)
			go l.pipe(out, in)
		}
	}()
	t.Cleanup(func() { ln.Close(); l.wg.Wait() })
	return l
}

type chunk struct {
	at   time.Time
	data []byte
}

func (l *latencyRelay) pipe(src, dst net.Conn) {
	defer l.wg.Done()
	ch := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			time.Sleep(time.Until(c.at)) // the simulated latency itself, not a wait for an event
			if _, err := dst.Write(c.data); err != nil {
				src.Close()
				for range ch {
				}
				return
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	for {
		buf := make([]byte, 64<<10)
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{at: time.Now().Add(l.delay), data: buf[:n]}
		}
		if err != nil {
			break
		}
	}
	close(ch)
	<-done
}
