package backend_test

import (
	"fmt"
	"testing"
	"time"
)

// TestLargeCRL lets a CRL of 1,000,000 revoked serials flow from the CA's distribution point
// through the backend's downloader and the client to the DMZ server, and measures the peak
// resident memory of the client and server processes while it loads (VmHWM, reset before the
// CRL is published). The revoked partner is refused and another partner of the same CA is
// admitted: the server answers from an index of the serials, not by scanning the list
// (internal/revocation's TestLookupDoesNotScan measures that). The numbers are logged (run with
// -v) and recorded in docs/benchmarks.md; they are not asserted.
func TestLargeCRL(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000-serial CRL: skipped with -short")
	}
	s := newSystem(t)
	s.importLicense()
	s.cli("partner", "add", "--odette-id", partnerID, "--password", partnerPassword)
	s.cli("partner", "add", "--odette-id", otherID, "--password", otherPassword)
	s.cli("crl-url", "add", s.crl.url)
	s.startBackend()
	s.startServer()
	s.startClient()
	s.server.WaitLog(t, listenerOpened, 1)
	p := s.partner(partnerID)
	other := s.partner(otherID)
	s.waitOutcome(t, "the partner", p, partnerID, partnerPassword, admitted)
	s.waitOutcome(t, "the other partner", other, otherID, otherPassword, admitted)

	const n = 1_000_000
	start := time.Now()
	der := largeCRL(t, s.partnerCA, n, 7, serial(t, p))
	t.Logf("generated a CRL of %d serials, %d bytes, in %v", n+1, len(der), time.Since(start).Round(time.Millisecond))

	_, clientBase := s.client.Memory(t)
	_, serverBase := s.server.Memory(t)
	s.client.ResetPeak(t)
	s.server.ResetPeak(t)
	start = time.Now()
	s.crl.set(der)
	o := s.waitOutcome(t, "the partner revoked by the large CRL", p, partnerID, partnerPassword, refusedAtTLS)
	took := time.Since(start)
	if o := s.probe(other, otherID, otherPassword); !o.admitted {
		t.Errorf("the other partner with the large CRL in force: %v, want admitted", o)
	}
	clientPeak, clientNow := s.client.Memory(t)
	serverPeak, serverNow := s.server.Memory(t)
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	ratio := func(b int64) string { return fmt.Sprintf("%.2f×", float64(b)/float64(len(der))) }
	t.Logf("CRL of %d serials (%s) enforced in the DMZ %v after it was published (%v)", n+1, mib(int64(len(der))), took.Round(time.Millisecond), o)
	t.Logf("smartproxy-client: RSS before %s, peak while loading %s (%s of the CRL), increase %s (%s), after %s",
		mib(clientBase), mib(clientPeak), ratio(clientPeak), mib(clientPeak-clientBase), ratio(clientPeak-clientBase), mib(clientNow))
	t.Logf("smartproxy-server: RSS before %s, peak while loading %s (%s of the CRL), increase %s (%s), after %s",
		mib(serverBase), mib(serverPeak), ratio(serverPeak), mib(serverPeak-serverBase), ratio(serverPeak-serverBase), mib(serverNow))
	// Goal: each process's whole peak, its base included, within 3× the CRL's size.
	for _, m := range []struct {
		name string
		peak int64
	}{{"smartproxy-client", clientPeak}, {"smartproxy-server", serverPeak}} {
		if m.peak > 3*int64(len(der)) {
			t.Errorf("%s: peak RSS %s while loading the CRL is %s of its size, want at most 3×", m.name, mib(m.peak), ratio(m.peak))
		}
	}
}

// BenchmarkDisableToEnforcement measures the time from the admin CLI command that disables a
// partner (`smartproxy-api partner disable`, a process of its own on the backend's database)
// until the DMZ server refuses that partner's next connection: the backend notices the change
// in its database, answers the client's long poll, the client builds and pushes the
// configuration, the server applies it. The partner is enabled again outside the timer.
func BenchmarkDisableToEnforcement(b *testing.B) {
	s := newSystem(b)
	s.importLicense()
	s.cli("partner", "add", "--odette-id", partnerID, "--password", partnerPassword)
	s.startBackend()
	s.startServer()
	s.startClient()
	s.server.WaitLog(b, listenerOpened, 1)
	p := s.partner(partnerID)
	s.waitOutcome(b, "the partner", p, partnerID, partnerPassword, admitted)
	var worst time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		s.cli("partner", "disable", partnerID)
		for s.probe(p, partnerID, partnerPassword).admitted {
			if time.Since(start) > waitTimeout {
				b.Fatalf("the disabled partner is still admitted after %v", waitTimeout)
			}
		}
		worst = max(worst, time.Since(start))
		b.StopTimer()
		s.cli("partner", "enable", partnerID)
		s.waitOutcome(b, "the enabled partner", p, partnerID, partnerPassword, admitted)
		b.StartTimer()
	}
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
}
