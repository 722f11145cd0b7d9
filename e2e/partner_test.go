package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// testFile is a local file a partner sends and what must arrive.
type testFile struct {
	out  endpoint.OutgoingFile
	sha  string // hex SHA-256 of the local file
	size int64
}

// Record sizes of the generated F and V files.
const (
	fixedRecord    = 128
	variableRecord = 1000
)

// makeFile writes a file of size octets in format f into dir and returns it ready to send:
// U is pseudo-random data with runs of equal octets (so that compression has something to
// do), T is EDIFACT-like text in CR LF lines, F is records of fixedRecord octets (size must be
// a multiple), V is records of 1…variableRecord octets each preceded by its 2-octet length.
// seed makes the content reproducible.
func makeFile(t testing.TB, dir, name string, f oftp2.FileFormat, size int64, seed uint64) testFile {
	t.Helper()
	path := filepath.Join(dir, name)
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(fh, h), 256<<10)
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(f)}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i < n; i += 8 {
			var v [8]byte
			binary.LittleEndian.PutUint64(v[:], rng.Uint64())
			copy(b[i:], v[:])
		}
		return b
	}
	out := endpoint.OutgoingFile{Path: path, Format: f}
	switch f {
	case oftp2.FormatUnstructured:
		for left := size; left > 0; {
			var chunk []byte
			if rng.IntN(4) == 0 {
				chunk = make([]byte, 1+rng.IntN(300))
				b := byte(rng.Uint32())
				for i := range chunk {
					chunk[i] = b
				}
			} else {
				chunk = random(1 + rng.IntN(8192))
			}
			chunk = chunk[:min(int64(len(chunk)), left)]
			w.Write(chunk)
			left -= int64(len(chunk))
		}
	case oftp2.FormatText:
		left := size
		for i := 1; left > 0; i++ {
			line := fmt.Sprintf("UNH+%d+INVOIC:D:96A:UN'BGM+380+INV%08d+9'DTM+137:20260506:102'MOA+77:%d.%02d'UNT+5+%d'\r\n",
				i, i, rng.IntN(100000), rng.IntN(100), i)
			if int64(len(line))+200 > left {
				// The last line fills the size exactly (at least "X\r\n"; a lone CR LF for 2).
				n := int(left)
				pad := make([]byte, n)
				for j := range pad {
					pad[j] = 'Z'
				}
				if n >= 2 {
					pad[n-2], pad[n-1] = '\r', '\n'
				}
				if n <= 200 {
					w.Write(pad)
					left = 0
					break
				}
			}
			w.WriteString(line)
			left -= int64(len(line))
		}
		out.Format = oftp2.FormatText
	case oftp2.FormatFixed:
		if size%fixedRecord != 0 {
			t.Fatalf("makeFile: %d octets are not whole %d-octet records", size, fixedRecord)
		}
		for left := size; left > 0; left -= fixedRecord {
			w.Write(random(fixedRecord))
		}
		out.RecordSize = fixedRecord
	case oftp2.FormatVariable:
		if size == 1 || size == 2 {
			t.Fatalf("makeFile: no V file has %d octets", size)
		}
		for left := size; left > 0; {
			n := int64(1 + rng.IntN(variableRecord))
			switch {
			case left <= variableRecord+2:
				n = left - 2
			case left-(n+2) < 3:
				n -= 3
			}
			var hdr [2]byte
			binary.BigEndian.PutUint16(hdr[:], uint16(n))
			w.Write(hdr[:])
			w.Write(random(int(n)))
			left -= n + 2
		}
		out.RecordSize = variableRecord
	default:
		t.Fatalf("makeFile: format %v", f)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size {
		t.Fatalf("makeFile(%s, %v, %d) wrote %d octets", name, f, size, st.Size())
	}
	return testFile{out: out, sha: hex.EncodeToString(h.Sum(nil)), size: size}
}

// fileSHA256 returns the hex SHA-256 of the file at path.
func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var h hash.Hash = sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// partnerConfig is the endpoint configuration of a calling partner that sends files and
// checks the company's SSID (Odette ID and password) on its side.
func partnerConfig(id, password string) endpoint.Config {
	return endpoint.Config{
		Role: endpoint.Initiator, Mode: oftp2.ModeSender, ID: id, Password: oftp2.Password(password),
		PartnerID: companyID, PartnerPassword: companyPassword, Timeout: endpointTimeout,
	}
}

// sendAs runs one partner session over TLS to addr presenting leaf and returns its result.
// mod, if not nil, changes the partner's endpoint configuration.
func sendAs(t testing.TB, fx *fixture, addr string, leaf *pki.Leaf, id, password string, mod func(*endpoint.Config), files ...testFile) (*endpoint.Result, error) {
	t.Helper()
	cfg := partnerConfig(id, password)
	if mod != nil {
		mod(&cfg)
	}
	return runPartner(t, fx, addr, leaf, cfg, nil, files...)
}

// runPartner runs one partner session of an endpoint with cfg over TLS to addr presenting
// leaf. wrap, if not nil, wraps the TLS connection the endpoint uses.
func runPartner(t testing.TB, fx *fixture, addr string, leaf *pki.Leaf, cfg endpoint.Config, wrap func(net.Conn) net.Conn, files ...testFile) (*endpoint.Result, error) {
	t.Helper()
	ep, err := endpoint.New(cfg)
	if err != nil {
		t.Error(err)
		return nil, err
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, fx.partnerTLS(&leaf.TLS))
	if err != nil {
		return nil, fmt.Errorf("dial the partner listener: %w", err)
	}
	var conn net.Conn = tc
	if wrap != nil {
		conn = wrap(tc)
	}
	out := make([]endpoint.OutgoingFile, len(files))
	for i, f := range files {
		out[i] = f.out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return ep.Run(ctx, conn, out...)
}

// gatedConn passes writes through until Limit octets have been written; then it signals
// Reached and holds further writes until Release is closed. It pauses a partner endpoint in
// the middle of a transfer.
type gatedConn struct {
	net.Conn
	Limit   int64
	Reached chan struct{} // closed once the limit is reached
	Release chan struct{} // closed by the test to let writes go on

	written int64 // owned by the endpoint's writing goroutine
	once    sync.Once
}

func newGatedConn(c net.Conn, limit int64) *gatedConn {
	return &gatedConn{Conn: c, Limit: limit, Reached: make(chan struct{}), Release: make(chan struct{})}
}

func (g *gatedConn) Write(b []byte) (int, error) {
	if g.written >= g.Limit {
		g.once.Do(func() { close(g.Reached) })
		<-g.Release
	}
	n, err := g.Conn.Write(b)
	g.written += int64(n)
	return n, err
}

// checkDelivered checks that every file of res was confirmed by the responder's EERP and
// that the responder session rr stored exactly these files under their final names,
// byte-identical (the stored file's SHA-256 computed here, not taken from the endpoint).
func checkDelivered(t testing.TB, res *endpoint.Result, rr servertest.ResponderResult, files []testFile) {
	t.Helper()
	if len(res.Sent) != len(files) {
		t.Fatalf("the partner offered %d files, want %d", len(res.Sent), len(files))
	}
	for i, d := range res.Sent {
		if d.Status != endpoint.StatusDelivered {
			t.Errorf("file %s: status %q (%v), want delivered: the partner got no EERP", files[i].out.Path, d.Status, d.Err)
		}
	}
	if rr.Err != nil {
		t.Errorf("responder session error = %v, want nil", rr.Err)
	}
	if got, want := len(rr.Result.Received), len(files); got != want {
		t.Fatalf("the responder stored %d files, want %d", got, want)
	}
	for i, rf := range rr.Result.Received {
		f := files[i]
		if got := fileSHA256(t, rf.Path); got != f.sha {
			t.Errorf("stored %s: sha256 %s, want %s (sent %s, %d octets)", rf.Path, got, f.sha, f.out.Path, f.size)
		}
		if rf.Size != f.size {
			t.Errorf("stored %s: size %d, want %d", rf.Path, rf.Size, f.size)
		}
		if want := res.Sent[i].File.DatasetName; rf.DatasetName != want {
			t.Errorf("stored %s: dataset %q, want %q", rf.Path, rf.DatasetName, want)
		}
	}
}

// rawPartner opens a partner connection driven command by command: TLS with leaf, the
// server's SSRM, the partner's SSID (buffer size and credit as given, compression off,
// restart on), and the responder's SSID answer, which it returns.
func rawPartner(t testing.TB, fx *fixture, addr string, leaf *pki.Leaf, id, password string, bufferSize, credit int) (*servertest.RawPartner, *oftp2.SSID) {
	t.Helper()
	rp, err := servertest.DialPartner(addr, &leaf.TLS, fx.CompanyCA.Pool())
	if err != nil {
		t.Fatalf("DialPartner: %v", err)
	}
	t.Cleanup(func() { rp.Close() })
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatal(err)
	}
	ssid := &oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: bufferSize, Mode: oftp2.ModeSender,
		Restart: true, Credit: credit}
	b, err := ssid.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rp.Write(b); err != nil {
		t.Fatal(err)
	}
	reply, err := rp.Read(20 * time.Second)
	if err != nil {
		t.Fatalf("reading the responder's SSID: %v", err)
	}
	cmd, err := oftp2.Parse(reply, nil)
	if err != nil {
		t.Fatalf("the responder's SSID: %v", err)
	}
	answer, ok := cmd.(*oftp2.SSID)
	if !ok {
		t.Fatalf("the answer to the SSID is %s, want SSID", cmd.Code())
	}
	return rp, answer
}

// writeCommand encodes cmd and writes it to rp.
func writeCommand(t testing.TB, rp *servertest.RawPartner, cmd oftp2.Command) {
	t.Helper()
	b, err := cmd.Append(nil)
	if err != nil {
		t.Fatalf("encode %s: %v", cmd.Code(), err)
	}
	if err := rp.Write(b); err != nil {
		t.Fatalf("write %s: %v", cmd.Code(), err)
	}
}

// readCommand reads and parses the next command from rp.
func readCommand(t testing.TB, rp *servertest.RawPartner) oftp2.Command {
	t.Helper()
	b, err := rp.Read(20 * time.Second)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	cmd, err := oftp2.Parse(b, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient})
	if err != nil {
		t.Fatalf("parse %q: %v", b[:min(len(b), 32)], err)
	}
	return cmd
}
