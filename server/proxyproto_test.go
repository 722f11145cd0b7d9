package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/proxyproto"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// proxyHdr is the PROXY protocol v2 header a balancer sends for a partner at src.
func proxyHdr(src string) []byte {
	return proxyproto.Header{Command: proxyproto.Proxy, Source: netip.MustParseAddrPort(src),
		Destination: netip.MustParseAddrPort("127.0.0.1:6619")}.Append(nil)
}

// expectClosed connects to addr as d says and fails unless the server closes the connection
// before TLS: the handshake fails without a TLS alert (a refused PROXY step is never answered).
func expectClosed(t *testing.T, addr string, cert *tls.Certificate, roots *x509.CertPool, d servertest.Dial) {
	t.Helper()
	rp, err := servertest.DialPartnerWith(addr, cert, roots, d)
	if err == nil {
		rp.Close()
		t.Fatalf("TLS handshake succeeded, want the connection closed before TLS")
	}
	if servertest.IsTLSAlert(err) {
		t.Errorf("handshake error = %v, want the connection closed without a TLS alert", err)
	}
}

// TestProxyProtocol drives the partner listener with PROXY protocol on for 127.0.0.1 (the
// "balancer"): a partner relayed by it is admitted under the address its header carries, with
// that address in SessionOpen, events, allowed networks and the per-address limits; a header
// from 127.0.0.2 (not allowed) is refused with partner_proxy_refused while a plain TLS partner
// from there is served; a missing or malformed header from the balancer is refused with
// partner_proxy_invalid; a LOCAL header and a bare TCP connect are closed quietly.
func TestProxyProtocol(t *testing.T) {
	p := servertest.NewPKI(t)
	cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"),
		&tunnelv1.Partner{OdetteId: "O0013NETWORK", Enabled: true, AllowedNetworks: []string{"192.0.2.0/24"}})
	cfg.ProxyProtocol = &tunnelv1.ProxyProtocol{AllowedSources: []string{"127.0.0.1"}}
	cfg.Limits = &tunnelv1.Limits{PerIpRate: 0.001, PerIpBurst: 3, MaxHandshakesPerSource: 2}
	env := newEnv(t, p, cfg, envOptions{})
	addr := env.s.PartnerAddr()
	good := p.Partner(t, "O0013PARTNER", nil)
	network := p.Partner(t, "O0013NETWORK", nil)
	roots := p.CompanyCA.Pool()

	t.Run("relayed partner delivers a file under its own address", func(t *testing.T) {
		rp, err := servertest.DialPartnerWith(addr, &good.TLS, roots, servertest.Dial{Before: proxyHdr("192.0.2.7:40000")})
		if err != nil {
			t.Fatal(err)
		}
		defer rp.Close()
		balancer := rp.Conn.LocalAddr().String()
		ep, err := endpoint.New(endpoint.Config{Role: endpoint.Initiator, ID: "O0013PARTNER", Mode: oftp2.ModeSender, Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		path, sum := writeFile(t, t.TempDir(), "f.bin", randomBytes(t, 64<<10))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := ep.Run(ctx, rp.Conn, endpoint.OutgoingFile{Path: path, DatasetName: "PROXIED", Format: oftp2.FormatUnstructured})
		if err != nil || res.Err() != nil {
			t.Fatalf("partner session: %v / %v", err, res.Err())
		}
		results, err := env.responder.WaitResults(ctx, 1)
		if err != nil || results[0].Err != nil || len(results[0].Result.Received) != 1 || results[0].Result.Received[0].SHA256 != sum {
			t.Fatalf("responder: %v / %+v, want the file with sha256 %s", err, results, sum)
		}
		if opens := env.client.SessionOpens(); len(opens) != 1 || opens[0].GetRemoteAddr() != "192.0.2.7:40000" {
			t.Errorf("SessionOpens = %v, want one with remote_addr 192.0.2.7:40000", opens)
		}
		en := env.logEntry(t, EventSessionStarted, nil)
		if en.Data["remote_addr"] != "192.0.2.7:40000" || en.Data["proxy_addr"] != balancer {
			t.Errorf("session_started log fields = %v, want remote_addr 192.0.2.7:40000, proxy_addr %s", en.Data, balancer)
		}
		ev := env.client.WaitEvent(t, EventSessionStarted, nil)
		if ev.GetRemoteAddr() != "192.0.2.7:40000" || ev.GetFields()["proxy_addr"] != balancer {
			t.Errorf("session_started event = %v, want remote_addr 192.0.2.7:40000, proxy_addr %s", ev, balancer)
		}
	})

	t.Run("allowed networks judge the relayed address", func(t *testing.T) {
		for _, tt := range []struct {
			src     string
			allowed bool
		}{{"192.0.2.9:1000", true}, {"198.51.100.9:1000", false}} {
			rp, err := servertest.DialPartnerWith(addr, &network.TLS, roots, servertest.Dial{Before: proxyHdr(tt.src)})
			if err != nil {
				t.Fatal(err)
			}
			if err := rp.ExpectSSRM(); err != nil {
				t.Fatal(err)
			}
			write(t, rp, servertest.SSID(t, "O0013NETWORK", "", nil))
			b, err := rp.Read(10 * time.Second)
			rp.Close()
			if err != nil {
				t.Fatalf("%s: reading the answer to SSID: %v", tt.src, err)
			}
			if got := oftp2.CommandCode(b[0]); (got == oftp2.CodeSSID) != tt.allowed {
				t.Errorf("%s: answer to SSID %v, want SSID %v", tt.src, got, tt.allowed)
			}
		}
		entry, _ := env.waitSecurityEvent(t, EventPartnerNetworkDenied, "198.51.100.9:1000")
		if entry.Data["proxy_addr"] == nil {
			t.Errorf("partner_network_denied fields = %v, want proxy_addr", entry.Data)
		}
	})

	t.Run("per-address limits count the relayed address", func(t *testing.T) {
		// Two connections of 203.0.113.8 wait for their SSID: the third is over the source's
		// pre-admission cap of 2, while another address still gets in.
		var held []*servertest.RawPartner
		defer func() {
			for _, rp := range held {
				rp.Close()
			}
		}()
		for i := range 2 {
			rp, err := servertest.DialPartnerWith(addr, &good.TLS, roots, servertest.Dial{Before: proxyHdr(fmt.Sprintf("203.0.113.8:%d", 1000+i))})
			if err != nil {
				t.Fatal(err)
			}
			if err := rp.ExpectSSRM(); err != nil {
				t.Fatal(err)
			}
			held = append(held, rp)
		}
		expectClosed(t, addr, &good.TLS, roots, servertest.Dial{Before: proxyHdr("203.0.113.8:3000")})
		entry, _ := env.waitSecurityEvent(t, EventPartnerSourceLimit, "203.0.113.8:3000")
		if entry.Data["reason"] != reasonPerSource || entry.Data["proxy_addr"] == nil {
			t.Errorf("partner_source_limit fields = %v, want reason %s and proxy_addr", entry.Data, reasonPerSource)
		}
		// 203.0.113.8 has used up its burst of 3 connections: the next one is rate limited.
		expectClosed(t, addr, &good.TLS, roots, servertest.Dial{Before: proxyHdr("203.0.113.8:4000")})
		env.waitSecurityEvent(t, EventPartnerRateLimited, "203.0.113.8:4000")
		rp, err := servertest.DialPartnerWith(addr, &good.TLS, roots, servertest.Dial{Before: proxyHdr("203.0.113.9:1000")})
		if err != nil {
			t.Fatalf("another relayed address: %v", err)
		}
		defer rp.Close()
		if err := rp.ExpectSSRM(); err != nil {
			t.Errorf("another relayed address: %v", err)
		}
	})

	t.Run("header from a source that is not allowed", func(t *testing.T) {
		d := servertest.Dial{Local: "127.0.0.2", Before: proxyHdr("192.0.2.50:1")}
		expectClosed(t, addr, &good.TLS, roots, d)
		entry := env.logEntry(t, EventPartnerProxyRefused, nil)
		if ra, _ := entry.Data["remote_addr"].(string); !strings.HasPrefix(ra, "127.0.0.2:") || entry.Data["reason"] != reasonProxyNotAllowed {
			t.Errorf("partner_proxy_refused fields = %v, want remote_addr 127.0.0.2 and reason %s", entry.Data, reasonProxyNotAllowed)
		}
		// The same source without a header is an ordinary partner, served under its own address.
		rp, err := servertest.DialPartnerWith(addr, &good.TLS, roots, servertest.Dial{Local: "127.0.0.2"})
		if err != nil {
			t.Fatalf("plain TLS from a source that is not a balancer: %v", err)
		}
		defer rp.Close()
		if err := rp.ExpectSSRM(); err != nil {
			t.Errorf("plain TLS from a source that is not a balancer: %v", err)
		}
	})

	t.Run("balancer without a valid header", func(t *testing.T) {
		bad := proxyHdr("192.0.2.60:1")
		bad[12] = 0x22 // command 2
		for _, tt := range []struct {
			name   string
			before []byte
			reason string
			field  string
		}{
			{"no header", nil, reasonProxyMissing, ""},
			{"version 1 text header", []byte("PROXY TCP4 192.0.2.60 127.0.0.1 1 6619\r\n"), reasonProxyMissing, ""},
			{"unassigned command", bad, reasonProxyMalformed, "command"},
			{"UNIX socket addresses", append(append(proxyproto.Signature[:0:0], proxyproto.Signature[:]...), append([]byte{0x21, 0x31, 0, 216}, make([]byte, 216)...)...), reasonProxyUnsupported, ""},
		} {
			before := len(entriesOf(env, EventPartnerProxyInvalid))
			expectClosed(t, addr, &good.TLS, roots, servertest.Dial{Before: tt.before})
			waitFor(t, tt.name+": partner_proxy_invalid", func() bool { return len(entriesOf(env, EventPartnerProxyInvalid)) > before })
			en := entriesOf(env, EventPartnerProxyInvalid)[before]
			if en.Data["reason"] != tt.reason || (tt.field != "" && en.Data["field"] != tt.field) {
				t.Errorf("%s: partner_proxy_invalid fields = %v, want reason %s field %q", tt.name, en.Data, tt.reason, tt.field)
			}
			if ra, _ := en.Data["remote_addr"].(string); !strings.HasPrefix(ra, "127.0.0.1:") {
				t.Errorf("%s: remote_addr %v, want the balancer's", tt.name, en.Data["remote_addr"])
			}
		}
	})

	t.Run("health checks are closed quietly", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			before []byte
			reset  bool // close with a TCP reset, as HAProxy ends its checks
			log    string
		}{
			{"LOCAL header", proxyproto.Header{Command: proxyproto.Local}.Append(nil), false, "PROXY protocol LOCAL header"},
			{"TCP connect", nil, false, "closed before a PROXY header"},
			{"TCP connect ended by a reset", nil, true, "closed before a PROXY header"},
		} {
			lines := len(env.hook.AllEntries())
			events := len(eventNames(env.hook))
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tt.before != nil {
				if _, err := c.Write(tt.before); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
					t.Errorf("%s: read = %d, %v, want the server to close the connection", tt.name, n, err)
				}
			}
			if tt.reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
			waitFor(t, tt.name+" log line", func() bool { return hasMessage(env.hook.AllEntries()[lines:], tt.log) })
			if got := eventNames(env.hook)[events:]; len(got) != 0 {
				t.Errorf("%s: events %v, want none", tt.name, got)
			}
		}
	})
}

// TestProxyProtocolOff: with PROXY protocol off (the default) a header is not read: it breaks
// the TLS handshake like any garbage (partner_tls_rejected).
func TestProxyProtocolOff(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	good := p.Partner(t, "O0013PARTNER", nil)
	_, err := servertest.DialPartnerWith(env.s.PartnerAddr(), &good.TLS, p.CompanyCA.Pool(), servertest.Dial{Before: proxyHdr("192.0.2.7:40000")})
	if err == nil {
		t.Fatal("TLS handshake after a PROXY header succeeded with PROXY protocol off")
	}
	en := env.logEntry(t, EventPartnerTLSRejected, nil)
	if ra, _ := en.Data["remote_addr"].(string); !strings.HasPrefix(ra, "127.0.0.1:") || en.Data["reason"] != reasonHandshake {
		t.Errorf("partner_tls_rejected fields = %v, want the peer's own address and reason %s", en.Data, reasonHandshake)
	}
	if n := countEvents(env.hook, EventPartnerProxyInvalid) + countEvents(env.hook, EventPartnerProxyRefused); n != 0 {
		t.Errorf("%d PROXY protocol events with PROXY protocol off", n)
	}
}

func entriesOf(e *env, name string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, en := range e.hook.AllEntries() {
		if en.Data["event"] == name {
			out = append(out, en)
		}
	}
	return out
}

func hasMessage(entries []*logrus.Entry, substr string) bool {
	for _, en := range entries {
		if strings.Contains(en.Message, substr) {
			return true
		}
	}
	return false
}
