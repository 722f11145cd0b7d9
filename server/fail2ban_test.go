package server

import (
	"bytes"
	"io"
	"net"
	"os"
	"regexp"
	"smartproxy/internal/event"
	"strings"
	"testing"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/logging"
	"smartproxy/server/servertest"
	"smartproxy/tunnel/transport"
)

// fail2banRegexps reads deploy/fail2ban/smartproxy.conf and turns its failregex lines into Go
// regular expressions, with <ADDR> as the capture group "addr" (fail2ban's own <ADDR> matches
// an IPv4 or IPv6 address).
func fail2banRegexps(t *testing.T) []*regexp.Regexp {
	t.Helper()
	data, err := os.ReadFile("../deploy/fail2ban/smartproxy.conf")
	if err != nil {
		t.Fatal(err)
	}
	var events string
	var res []string
	inFail := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "_events = "):
			events = strings.TrimPrefix(line, "_events = ")
		case strings.HasPrefix(line, "failregex = "):
			inFail = true
			res = append(res, strings.TrimPrefix(line, "failregex = "))
		case inFail && strings.HasPrefix(line, "            ") && strings.TrimSpace(line) != "":
			res = append(res, strings.TrimSpace(line))
		default:
			inFail = false
		}
	}
	if events == "" || len(res) != 2 {
		t.Fatalf("filter: _events %q, %d failregex lines; want both formats", events, len(res))
	}
	var out []*regexp.Regexp
	for _, r := range res {
		r = strings.ReplaceAll(r, "%(_events)s", events)
		r = strings.ReplaceAll(r, "<ADDR>", `(?P<addr>[0-9A-Fa-f.:]+)`)
		out = append(out, regexp.MustCompile(r))
	}
	return out
}

// newLogServer returns a server that is not running, logging in format to out, for tests of
// its emitter. mod, if not nil, changes the configuration.
func newLogServer(t *testing.T, p *servertest.PKI, format string, out io.Writer, mod func(*Config)) *Server {
	t.Helper()
	log, _, err := logging.New(logging.Options{Format: format, Output: out})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := Config{
		TunnelListener:    ln,
		TunnelCredentials: &transport.StaticCredentials{Cert: p.TunnelServer.TLS, Pool: p.TunnelCA.Pool()},
		ProxyID:           "SPX-TEST-TEST-TEST-TEST",
		Logger:            log,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// matchBan returns the address the filter would ban for line, or "".
func matchBan(res []*regexp.Regexp, line string) string {
	for _, re := range res {
		if m := re.FindStringSubmatch(line); m != nil {
			return m[re.SubexpIndex("addr")]
		}
	}
	return ""
}

func TestFail2banFilter(t *testing.T) {
	res := fail2banRegexps(t)
	p := servertest.NewPKI(t)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var out bytes.Buffer
			s := newLogServer(t, p, format, &out, nil)
			pol, err := CompilePolicy(1, p.SecurityConfig(t), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			pol.IgnoreRules = []IgnoreRule{{Substring: "o0013scanner", Description: "our own scanner"}}
			s.policy.Store(pol)

			tests := []struct {
				name string
				ev   event.Event
				want string // address banned; "" means no match
			}{
				{"unknown partner IPv4", event.Security(EventPartnerUnknown, "192.0.2.7:50122", "O0013XYZ", "partner_unknown", "not configured"), "192.0.2.7"},
				{"TLS rejection IPv6", event.Security(EventPartnerTLSRejected, "[2001:db8::7]:443", "", reasonUntrusted, "x509: unknown authority"), "2001:db8::7"},
				{"protocol violation", event.Security(EventProtocolViolation, "198.51.100.1:1", "O1", "protocol_violation", "bad").With("side", "partner"), "198.51.100.1"},
				{"rate limited", event.Security(EventPartnerRateLimited, "203.0.113.9:7", "", "per_ip_rate", "flood"), "203.0.113.9"},
				{"injected address in a peer-controlled field", event.Security(EventPartnerUnknown, "192.0.2.8:1", `X" remote_addr="6.6.6.6:1`, "partner_unknown", `remote_addr=6.6.6.6:2 not configured`), "192.0.2.8"},
				{"lowered by an ignore rule", event.Security(EventPartnerUnknown, "192.0.2.9:1", "O0013SCANNER", "partner_unknown", "not configured"), ""},
				{"source over its pre-admission cap", event.Security(EventPartnerSourceLimit, "203.0.113.10:7", "", reasonPerSource, "cap"), "203.0.113.10"},
				{"evicted from the pre-admission pool", event.Security(EventPartnerEvicted, "[2001:db8::9]:7", "", reasonEvicted, "silent"), "2001:db8::9"},
				{"refusal summary", event.Security(EventPartnerRefusalsSuppressed, "203.0.113.11:9", "", "per_source_threshold", "42 more").With("count", "42"), "203.0.113.11"},
				{"PROXY header from a source not allowed", event.Security(EventPartnerProxyRefused, "198.51.100.20:5", "", reasonProxyNotAllowed, "header"), "198.51.100.20"},
				{"the load balancer is not banned", event.Security(EventPartnerProxyInvalid, "10.0.0.5:41000", "", reasonProxyMissing, "no header"), ""},
				{"a proxied partner is banned by its own address", event.Security(EventPartnerUnknown, "192.0.2.21:50122", "O0013XYZ", "partner_unknown", "not configured").With("proxy_addr", "10.0.0.5:41000"), "192.0.2.21"},
				{"global limit is not banned", event.Security(EventPartnerOverloaded, "192.0.2.10:1", "", "max_sessions", "limit"), ""},
				{"missing CRL is not banned", event.Security(EventPartnerCRLMissing, "192.0.2.11:1", "", "no_crl", "no CRL"), ""},
				{"a partner we call is not banned (revoked)", (&refusal{event: EventOutgoingRevoked, reason: reasonRevoked, odette: "O0013P", remote: "192.0.2.13:6619", msg: "revoked"}).outgoingEvent(), ""},
				{"a partner we call is not banned (TLS)", (&refusal{event: EventOutgoingTLSFailed, reason: reasonUntrusted, odette: "O0013P", remote: "192.0.2.14:6619", msg: "untrusted"}).outgoingEvent(), ""},
				{"a partner we call is not banned (mismatch)", (&refusal{event: EventOutgoingCertMismatch, reason: reasonOutgoingBinding, odette: "O0013P", remote: "192.0.2.15:6619", msg: "other ID"}).outgoingEvent(), ""},
				{"informational event", event.Event{Name: EventSessionStarted, Severity: tunnelv1.Severity_SEVERITY_INFO, RemoteAddr: "192.0.2.12:1", Message: "ok"}, ""},
			}
			for _, tt := range tests {
				out.Reset()
				s.emit(tt.ev)
				line := strings.TrimSpace(out.String())
				if strings.Count(line, "\n") != 0 || line == "" {
					t.Errorf("%s: emit wrote %q, want exactly one line", tt.name, line)
					continue
				}
				if got := matchBan(res, line); got != tt.want {
					t.Errorf("%s: filter bans %q, want %q\nline: %s", tt.name, got, tt.want, line)
				}
			}
		})
	}
}
