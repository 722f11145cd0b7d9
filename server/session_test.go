package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// sendFiles runs a partner endpoint (Initiator, sender) through the server's partner listener
// and returns its result.
func sendFiles(t testing.TB, addr string, leaf *pki.Leaf, roots *tls.Config, id string, mod func(*endpoint.Config), files ...endpoint.OutgoingFile) (*endpoint.Result, error) {
	t.Helper()
	res, err := trySend(addr, leaf, roots, id, mod, files...)
	if errors.Is(err, errSetup) {
		t.Fatal(err)
	}
	return res, err
}

// errSetup marks a trySend error that came before the session: the endpoint or the dial.
var errSetup = errors.New("partner session not started")

// trySend is sendFiles without the test, for goroutines other than the test's: a failure to
// set up the session is returned wrapping errSetup.
func trySend(addr string, leaf *pki.Leaf, roots *tls.Config, id string, mod func(*endpoint.Config), files ...endpoint.OutgoingFile) (*endpoint.Result, error) {
	cfg := endpoint.Config{Role: endpoint.Initiator, ID: id, Mode: oftp2.ModeSender, Timeout: 20 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	ep, err := endpoint.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errSetup, err)
	}
	tc := roots.Clone()
	tc.Certificates = []tls.Certificate{leaf.TLS}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return nil, fmt.Errorf("%w: dial partner listener: %v", errSetup, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return ep.Run(ctx, conn, files...)
}

func partnerTLS(p *servertest.PKI) *tls.Config {
	return &tls.Config{RootCAs: p.CompanyCA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// writeFile writes data to dir/name and returns its path and sha256.
func writeFile(t testing.TB, dir, name string, data []byte) (string, string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return path, hex.EncodeToString(sum[:])
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIncomingSessionEndToEnd(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	leaf := p.Partner(t, "O0013PARTNER", nil)
	dir := t.TempDir()

	var text strings.Builder
	for i := 0; text.Len() < 200<<10; i++ {
		fmt.Fprintf(&text, "line %d of a text file\r\n", i)
	}
	fixed := bytes.Repeat([]byte("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-record-80-bytes!!"), 1000)
	type want struct{ name, sum string }
	var files []endpoint.OutgoingFile
	var wants []want
	add := func(name string, data []byte, f endpoint.OutgoingFile) {
		path, sum := writeFile(t, dir, name, data)
		f.Path = path
		files = append(files, f)
		wants = append(wants, want{name, sum})
	}
	add("empty.bin", nil, endpoint.OutgoingFile{DatasetName: "EMPTY", Format: oftp2.FormatUnstructured})
	add("one-mib.bin", randomBytes(t, 1<<20), endpoint.OutgoingFile{DatasetName: "ONEMIB", Format: oftp2.FormatUnstructured})
	add("text.txt", []byte(text.String()), endpoint.OutgoingFile{DatasetName: "TEXT", Format: oftp2.FormatText})
	add("fixed.dat", fixed, endpoint.OutgoingFile{DatasetName: "FIXED", Format: oftp2.FormatFixed, RecordSize: 80})

	res, err := sendFiles(t, env.s.PartnerAddr(), leaf, partnerTLS(p), "O0013PARTNER", nil, files...)
	if err != nil {
		t.Fatalf("partner session: %v", err)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("not every file was delivered with EERP: %v", err)
	}
	results, err := env.responder.WaitResults(context.Background(), 1)
	if err != nil || results[0].Err != nil {
		t.Fatalf("responder session: %v / %v", err, results)
	}
	if got := len(results[0].Result.Received); got != len(wants) {
		t.Fatalf("responder received %d files, want %d", got, len(wants))
	}
	for i, rf := range results[0].Result.Received {
		if rf.SHA256 != wants[i].sum {
			t.Errorf("file %s arrived with sha256 %s, want %s", wants[i].name, rf.SHA256, wants[i].sum)
		}
		if rf.Partner != "O0013PARTNER" {
			t.Errorf("file %s from partner %q", wants[i].name, rf.Partner)
		}
	}

	opens := env.client.SessionOpens()
	if len(opens) != 1 {
		t.Fatalf("%d SessionOpens, want 1", len(opens))
	}
	so := opens[0]
	if so.GetDirection() != tunnelv1.Direction_DIRECTION_INCOMING || so.GetPartnerOdetteId() != "O0013PARTNER" ||
		so.GetTls().GetPeerSubjectSerialNumber() != "O0013PARTNER" || so.GetTls().GetVersion() != "TLS 1.3" ||
		len(so.GetTls().GetPeerSha256Fingerprint()) != 32 || !strings.HasPrefix(so.GetRemoteAddr(), "127.0.0.1:") {
		t.Errorf("SessionOpen = %v", so)
	}
	var ssid oftp2.SSID
	if err := ssid.Decode(so.GetSsid(), nil); err != nil || ssid.ID != "O0013PARTNER" {
		t.Errorf("SessionOpen.ssid = %q (%v), want the partner's SSID", so.GetSsid(), err)
	}
	env.client.WaitEvent(t, EventSessionStarted, nil)
	ended := env.client.WaitEvent(t, EventSessionEnded, nil)
	if ended.GetFields()["reason"] != "normal" || ended.GetFields()["esid_reason"] != "00" {
		t.Errorf("session_ended fields = %v, want reason normal, esid 00", ended.GetFields())
	}
	if got := counterValue(t, env.s.metrics.admissions.WithLabelValues("accepted")); got != 1 {
		t.Errorf("admissions{accepted} = %v, want 1", got)
	}
	if got := counterValue(t, env.s.metrics.bytes.WithLabelValues("from_partner")); got < 1<<20 {
		t.Errorf("relayed bytes from the partner = %v, want more than 1 MiB", got)
	}
}

func TestSSIDCaps(t *testing.T) {
	p := servertest.NewPKI(t)
	partner := servertest.EnabledPartner("O0013PARTNER")
	partner.MaxCredit = 3
	partner.MaxBufferSize = 512
	env := newEnv(t, p, p.SecurityConfig(t, partner), envOptions{})
	leaf := p.Partner(t, "O0013PARTNER", nil)
	path, sum := writeFile(t, t.TempDir(), "data.bin", randomBytes(t, 300<<10))
	res, err := sendFiles(t, env.s.PartnerAddr(), leaf, partnerTLS(p), "O0013PARTNER", func(c *endpoint.Config) {
		c.Credit, c.BufferSize = 99, 99999
	}, endpoint.OutgoingFile{Path: path, DatasetName: "CAPPED"})
	if err != nil || res.Err() != nil {
		t.Fatalf("partner session: %v / %v", err, res.Err())
	}
	var ssid oftp2.SSID
	if err := ssid.Decode(env.client.SessionOpens()[0].GetSsid(), nil); err != nil {
		t.Fatal(err)
	}
	if ssid.Credit != 3 || ssid.BufferSize != 512 {
		t.Errorf("SSID passed inside: credit %d, buffer %d; want 3, 512", ssid.Credit, ssid.BufferSize)
	}
	results, err := env.responder.WaitResults(context.Background(), 1)
	if err != nil || len(results[0].Result.Received) != 1 || results[0].Result.Received[0].SHA256 != sum {
		t.Fatalf("responder: %v, %+v", err, results)
	}
}

// rawSession connects a RawPartner and exchanges SSRM and SSIDs through the proxy with the
// internal responder; it returns the partner after the responder's SSID.
func rawSession(t *testing.T, env *env, leaf *pki.Leaf, id string) *servertest.RawPartner {
	t.Helper()
	rp, err := servertest.DialPartner(env.s.PartnerAddr(), &leaf.TLS, env.pki.CompanyCA.Pool())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	if err := rp.ExpectSSRM(); err != nil {
		t.Fatal(err)
	}
	write(t, rp, servertest.SSID(t, id, "", func(s *oftp2.SSID) { s.Mode = oftp2.ModeSender }))
	b, err := rp.Read(10 * time.Second)
	if err != nil {
		t.Fatalf("waiting for the responder's SSID: %v", err)
	}
	var ssid oftp2.SSID
	if err := ssid.Decode(b, nil); err != nil {
		t.Fatalf("responder's SSID: %v (%q)", err, b)
	}
	return rp
}

func TestProtocolViolationFromPartner(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"), servertest.EnabledPartner("O0013HEALTHY")), envOptions{})

	// A healthy session runs in parallel and must complete.
	path, sum := writeFile(t, t.TempDir(), "healthy.bin", randomBytes(t, 2<<20))
	healthyLeaf := p.Partner(t, "O0013HEALTHY", nil)
	var wg sync.WaitGroup
	var healthyRes *endpoint.Result
	var healthyErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		healthyRes, healthyErr = trySend(env.s.PartnerAddr(), healthyLeaf, partnerTLS(p), "O0013HEALTHY", func(c *endpoint.Config) { c.Credit = 4; c.BufferSize = 1024 },
			endpoint.OutgoingFile{Path: path, DatasetName: "HEALTHY"})
	}()

	leaf := p.Partner(t, "O0013PARTNER", nil)
	rp := rawSession(t, env, leaf, "O0013PARTNER")
	// DATA before any SFID: not legal in the state (RFC 5024 §9.10).
	write(t, rp, []byte{'D', 0x80 | 3, 'a', 'b', 'c'})
	esid, err := rp.ReadESID(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDProtocolViolation {
		t.Errorf("partner got ESID %s, want 02", esid.Reason)
	}
	local := rp.Conn.LocalAddr().String()
	entry, ev := env.waitSecurityEvent(t, EventProtocolViolation, local)
	if ev.GetFields()["side"] != "partner" || ev.GetFields()["command"] != "DATA" || entry.Data["esid_reason"] != "02" || ev.GetSessionId() == 0 {
		t.Errorf("protocol_violation event fields %v, session id %d", ev.GetFields(), ev.GetSessionId())
	}
	wg.Wait()
	if healthyErr != nil || healthyRes.Err() != nil {
		t.Fatalf("the parallel healthy session failed: %v / %v", healthyErr, healthyRes.Err())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all, err := env.responder.WaitResults(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	// The internal responder of the broken session received the same ESID from the client;
	// the other one received the healthy file.
	var se *endpoint.SessionError
	violated, delivered := false, false
	for _, r := range all {
		if errorsAs(r.Err, &se) && se.Remote && se.Reason == oftp2.ESIDProtocolViolation {
			violated = true
		}
		for _, f := range r.Result.Received {
			if f.SHA256 == sum {
				delivered = true
			}
		}
	}
	if !violated {
		t.Errorf("responder results %+v: none ended by ESID 02 from the proxy", all)
	}
	if !delivered {
		t.Errorf("the healthy file did not arrive byte-identical")
	}
}

func TestProtocolViolationFromInside(t *testing.T) {
	p := servertest.NewPKI(t)
	// A broken internal server: it answers the SSID correctly, then sends CDT although no
	// file is being transferred.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	insideESID := make(chan *oftp2.ESID, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		r, w := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
		w.WriteCommand(&oftp2.SSRM{})
		if _, err := r.ReadBuffer(); err != nil {
			return
		}
		w.WriteCommand(&oftp2.SSID{Level: 5, ID: "O0013COMPANY", BufferSize: 4096, Mode: oftp2.ModeReceiver, Credit: 10})
		w.WriteCommand(&oftp2.CDT{})
		for {
			b, err := r.ReadBuffer()
			if err != nil {
				return
			}
			if cmd, err := oftp2.Parse(b, nil); err == nil {
				if e, ok := cmd.(*oftp2.ESID); ok {
					insideESID <- e
					return
				}
			}
		}
	}()
	env := newEnv(t, p, nil, envOptions{noClient: true})
	env.client = servertest.StartClient(t, servertest.ClientConfig{Addr: env.tunnel, PKI: p, Responder: ln.Addr().String()})
	env.client.WaitWelcome(t)
	env.client.PushConfig(1, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")))
	env.client.WaitApplied(t, 1)
	env.waitListener(t, true)

	rp := rawSession(t, env, p.Partner(t, "O0013PARTNER", nil), "O0013PARTNER")
	esid, err := rp.ReadESID(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if esid.Reason != oftp2.ESIDProtocolViolation {
		t.Errorf("partner got ESID %s, want 02", esid.Reason)
	}
	select {
	case e := <-insideESID:
		if e.Reason != oftp2.ESIDProtocolViolation {
			t.Errorf("internal server got ESID %s, want 02", e.Reason)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the internal server got no ESID")
	}
	_, ev := env.waitSecurityEvent(t, EventProtocolViolation, rp.Conn.LocalAddr().String())
	if ev.GetFields()["side"] != "inside" || ev.GetFields()["command"] != "CDT" {
		t.Errorf("protocol_violation fields = %v, want side inside, command CDT", ev.GetFields())
	}
	wg.Wait()
}

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }

// counterValue reads a counter's value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
