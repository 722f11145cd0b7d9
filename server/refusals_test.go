package server

import (
	"bytes"
	"fmt"
	"smartproxy/internal/event"
	"strings"
	"testing"
	"time"

	"smartproxy/server/servertest"
)

func TestRefusalLogCounts(t *testing.T) {
	l := newRefusalLog(3, 5)
	admitted := 0
	for i := range 10 {
		if l.admit(fmt.Sprintf("192.0.2.1:%d", 1000+i), EventPartnerTLSRejected) {
			admitted++
		}
	}
	if admitted != 3 {
		t.Errorf("one source: %d of 10 events logged one by one, want the burst 3", admitted)
	}
	// Nine more sources: two fit under the total of 5 logged lines, two more are tracked
	// without lines, the rest overflow.
	for i := 2; i <= 10; i++ {
		l.admit(fmt.Sprintf("192.0.2.%d:1", i), EventPartnerSSIDTimeout)
	}
	got := l.flush(10 * time.Second)
	want := []struct{ addr, count string }{
		{"192.0.2.1:1009", "7"},
		{"192.0.2.4:1", "1"},
		{"192.0.2.5:1", "1"},
		{"", "5"},
	}
	if len(got) != len(want) {
		for _, e := range got {
			t.Log(e.Line())
		}
		t.Fatalf("flush() = %d summaries, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Name != EventPartnerRefusalsSuppressed || got[i].RemoteAddr != w.addr || got[i].Fields["count"] != w.count {
			t.Errorf("summary #%d = %s, want remote_addr %q count %s", i, got[i].Line(), w.addr, w.count)
		}
	}
	if e := got[0]; e.Fields["events"] != EventPartnerTLSRejected {
		t.Errorf("summary events = %q, want %q", e.Fields["events"], EventPartnerTLSRejected)
	}
	if e := got[3]; e.Fields["sources"] != "5" {
		t.Errorf("overflow summary sources = %q, want 5", e.Fields["sources"])
	}
	// A new interval starts from zero.
	if !l.admit("192.0.2.1:1", EventPartnerTLSRejected) {
		t.Error("the first event of a new interval was not logged")
	}
	if got := l.flush(time.Second); len(got) != 0 {
		t.Errorf("flush() of an interval without suppressed events = %d summaries, want 0", len(got))
	}
	if off := newRefusalLog(-1, 1); !off.admit("192.0.2.1:1", "x") || !off.admit("192.0.2.1:1", "x") {
		t.Error("a negative burst must log every event")
	}
}

// TestRefusalLogLines drives the emitter: a flood of refusals from many sources writes at most
// 2·RefusalLogMax+1 security lines per interval, every source's address is in the log, and
// lines that are not security events are never held back.
func TestRefusalLogLines(t *testing.T) {
	p := servertest.NewPKI(t)
	var out bytes.Buffer
	const burst, max = 4, 20
	s := newLogServer(t, p, "text", &out, func(c *Config) { c.RefusalLogBurst, c.RefusalLogMax = burst, max })
	res := fail2banRegexps(t)
	const sources, each = 30, 50
	for i := range each {
		for src := range sources {
			s.emit(event.Security(EventPartnerTLSRejected, fmt.Sprintf("198.51.100.%d:%d", src+1, 2000+i), "", reasonHandshakeTime, "timeout"))
		}
	}
	s.emit(event.Event{Name: EventSessionStarted, Severity: infoSeverity, RemoteAddr: "198.51.100.1:1", Message: "not a refusal"})
	// A misconfigured load balancer: its lines are neither summarised nor banned.
	const balancerLines = 3 * burst
	for i := range balancerLines {
		s.emit(event.Security(EventPartnerProxyInvalid, fmt.Sprintf("10.0.0.5:%d", 3000+i), "", reasonProxyMissing, "no header"))
	}
	s.flushRefusals()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	banned := map[string]int{}
	individual, summaries, info, proxyInvalid := 0, 0, 0, 0
	for _, line := range lines {
		switch {
		case strings.Contains(line, "event="+EventPartnerTLSRejected):
			individual++
		case strings.Contains(line, "event="+EventPartnerRefusalsSuppressed):
			summaries++
		case strings.Contains(line, "event="+EventSessionStarted):
			info++
		case strings.Contains(line, "event="+EventPartnerProxyInvalid):
			proxyInvalid++
		}
		if a := matchBan(res, line); a != "" {
			banned[a]++
		}
	}
	if individual != max {
		t.Errorf("%d refusals logged one by one, want the interval's maximum %d", individual, max)
	}
	if summaries > max+1 || individual+summaries > 2*max+1 {
		t.Errorf("%d individual + %d summary lines, want at most %d", individual, summaries, 2*max+1)
	}
	if info != 1 {
		t.Errorf("the INFO line was written %d times, want 1", info)
	}
	if proxyInvalid != balancerLines || banned["10.0.0.5"] != 0 {
		t.Errorf("%d of %d partner_proxy_invalid lines written, the balancer matched %d times by the filter; want all, none",
			proxyInvalid, balancerLines, banned["10.0.0.5"])
	}
	// max sources are tracked (each has a line or a summary); the rest are in the overflow line.
	if len(banned) != max {
		t.Errorf("the fail2ban filter matches %d sources, want the %d tracked ones", len(banned), max)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("count=%d ", (sources-max)*each)) {
		t.Errorf("no overflow summary with count %d:\n%s", (sources-max)*each, out.String())
	}
}

// TestRefusalLogIPv6Prefix checks that the addresses of one IPv6 /64 are one source.
func TestRefusalLogIPv6Prefix(t *testing.T) {
	l := newRefusalLog(2, 100)
	logged := 0
	for i := range 10 {
		if l.admit(fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1), EventPartnerTLSRejected) {
			logged++
		}
	}
	if !l.admit("[2001:db8:1:3::1]:443", EventPartnerTLSRejected) {
		t.Error("an address of another /64 was not logged")
	}
	if logged != 2 {
		t.Errorf("10 addresses of one /64: %d events logged one by one, want the burst 2", logged)
	}
	if got := l.flush(time.Second); len(got) != 1 || got[0].Fields["count"] != "8" || got[0].RemoteAddr != "[2001:db8:1:2::a]:443" {
		t.Errorf("flush() = %v, want one summary of 8 with the last address", got)
	}
}
