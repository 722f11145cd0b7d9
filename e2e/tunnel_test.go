package e2e

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

// TestNoClientNoPartners checks the documented behaviour without a client tunnel
// (docs/operations.md, "Life cycle"): the partner listener is closed, so a partner's
// connection is refused (ECONNREFUSED, not accepted and then closed), both before the first
// client ever connected and after the client went away; once a client is connected again the
// listener opens on the same address and sessions go through.
func TestNoClientNoPartners(t *testing.T) {
	fx := newFixture(t)
	listen := testnet.ReserveAddr(t)
	sys := startSystem(t, fx, systemOptions{listen: listen, noClient: true})
	leaf := fx.partner(t, partnerID)

	refused := func(t *testing.T, when string) {
		t.Helper()
		if addr := sys.server.PartnerAddr(); addr != "" {
			t.Fatalf("%s: the partner listener is open on %s", when, addr)
		}
		_, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if !isRefused(err) {
			t.Errorf("%s: TCP connect to the partner port = %v, want connection refused", when, err)
		}
		_, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen, fx.partnerTLS(&leaf.TLS))
		if !isRefused(err) {
			t.Errorf("%s: TLS dial of a valid partner = %v, want connection refused", when, err)
		}
	}
	deliver := func(t *testing.T, name string, sessions int) {
		t.Helper()
		f := makeFile(t, t.TempDir(), name, oftp2.FormatText, 300<<10, uint64(sessions))
		res, err := sendAs(t, fx, listen, leaf, partnerID, partnerPassword, nil, f)
		if err != nil {
			t.Fatalf("partner session: %v", err)
		}
		checkDelivered(t, res, sys.responderResults(t, sessions)[sessions-1], []testFile{f})
	}

	// The server is up and licensed, but no client has connected: no configuration, no
	// listener.
	if pol := sys.server.Policy(); pol != nil {
		t.Fatalf("the server holds configuration version %d before any client connected", pol.Version)
	}
	refused(t, "before any client")

	rc := sys.startClient(t, sys.tunnelAddr)
	if got := sys.waitListener(t, true); got != listen {
		t.Fatalf("partner listener on %s, want %s from the configuration", got, listen)
	}
	deliver(t, "first.edi", 1)

	rc.stop()
	sys.waitListener(t, false)
	sys.serverLog.wait(t, "the server", "partner_listener_closed", nil)
	refused(t, "after the client left")

	sys.startClient(t, sys.tunnelAddr)
	if got := sys.waitListener(t, true); got != listen {
		t.Fatalf("partner listener reopened on %s, want %s", got, listen)
	}
	deliver(t, "second.edi", 2)
	if got := sys.responder.Conns(); got != 2 {
		t.Errorf("the responder accepted %d connections, want 2", got)
	}
}

// TestServerRestart stops the DMZ server while the client is connected and starts a new one
// on the same tunnel port, as after a reboot of the DMZ host: the new server holds no
// configuration, so the partner port stays closed until the client has reconnected on its own
// and pushed its configuration again; then the listener opens on the same address and
// sessions go through.
func TestServerRestart(t *testing.T) {
	fx := newFixture(t)
	listen := testnet.ReserveAddr(t)
	sys := startSystem(t, fx, systemOptions{listen: listen})
	leaf := fx.partner(t, partnerID)
	deliver := func(t *testing.T, name string, sessions int) {
		t.Helper()
		f := makeFile(t, t.TempDir(), name, oftp2.FormatUnstructured, 256<<10, uint64(sessions))
		res, err := sendAs(t, fx, listen, leaf, partnerID, partnerPassword, nil, f)
		if err != nil {
			t.Fatalf("partner session: %v", err)
		}
		checkDelivered(t, res, sys.responderResults(t, sessions)[sessions-1], []testFile{f})
	}
	deliver(t, "before.dat", 1)

	sys.stopServer()
	if _, err := net.DialTimeout("tcp", listen, 5*time.Second); !isRefused(err) {
		t.Errorf("partner port with the server stopped: %v, want connection refused", err)
	}
	ln, err := net.Listen("tcp", sys.tunnelAddr)
	if err != nil {
		t.Fatalf("bind the tunnel port again: %v", err)
	}
	sys.startServer(t, ln)
	if pol := sys.server.Policy(); pol != nil {
		t.Fatalf("the new server starts with configuration version %d, want none", pol.Version)
	}
	if got := sys.waitListener(t, true); got != listen {
		t.Fatalf("partner listener of the new server on %s, want %s", got, listen)
	}
	pushes := sys.clientLog.entries("config_pushed", nil)
	if len(pushes) < 2 {
		t.Errorf("the client pushed its configuration %d times, want once per server", len(pushes))
	}
	deliver(t, "after.dat", 2)
}

// readWatch records when the endpoint's current Read began (0 when it is not reading).
type readWatch struct {
	net.Conn
	since atomic.Int64 // unix nanoseconds
}

func (r *readWatch) Read(b []byte) (int, error) {
	r.since.Store(time.Now().UnixNano())
	defer r.since.Store(0)
	return r.Conn.Read(b)
}

// waitingFor returns how long the current Read has been waiting, 0 when none is.
func (r *readWatch) waitingFor() time.Duration {
	s := r.since.Load()
	if s == 0 {
		return 0
	}
	return time.Since(time.Unix(0, s))
}

// finalWatcher lists a receive directory every 2 ms and remembers every file that appeared
// under a final name.
type finalWatcher struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[string]bool
	err  error // the first listing that failed; the watcher stops there
}

func watchFinal(t *testing.T, dir string) *finalWatcher {
	w := &finalWatcher{stop: make(chan struct{}), done: make(chan struct{}), seen: make(map[string]bool)}
	go func() {
		defer close(w.done)
		for {
			files, err := listFinal(dir)
			w.mu.Lock()
			for _, f := range files {
				w.seen[f] = true
			}
			w.err = err
			w.mu.Unlock()
			if err != nil {
				return
			}
			select {
			case <-w.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		w.Stop()
		if w.err != nil {
			t.Errorf("watching %s for final names: %v", dir, w.err)
		}
	})
	return w
}

// Stop ends the watcher and returns the final names it saw.
func (w *finalWatcher) Stop() []string {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for f := range w.seen {
		out = append(out, f)
	}
	return out
}

// partialSize returns the total size of the responder's files in transfer.
func partialSize(t testing.TB, recvDir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(recvDir, ".oftp2", "partial"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

// TestClientKilledMidTransfer ends the in-process client in the middle of a file, in two ways:
// its tunnel is cut (the forwarder between client and server closes the client's TCP
// connection and its listener at once, as when the process dies; then the client is
// stopped), or its Run context is cancelled (the orderly stop of SIGTERM). The partner's
// session must end with ESID 05 (local site emergency close down, docs/operations.md), the
// internal responder's with the ESID 05 the client sends, no file may appear under a final
// name, and the partner's next session after a new client connected must resume the file
// (OFTP2 restart, position > 0) and deliver it byte-identical.
//
// In the first cases the internal connection is paused before the client goes, so that the
// partner has sent its credit and waits for a CDT when the ESID comes. In the last the partner
// is still writing DATA when the ESID comes: the server drains what the partner sends after the
// ESID until it disconnects (WF_NDISC), so that closing the socket does not reset the
// connection and destroy the ESID in flight.
func TestClientKilledMidTransfer(t *testing.T) {
	current := func(sys *system) *runningClient {
		sys.mu.Lock()
		defer sys.mu.Unlock()
		return sys.client
	}
	tests := []struct {
		name    string
		end     func(sys *system, tunnel *forwarder)
		reason  string // session_ended reason in the server's log
		writing bool   // the partner is still sending DATA when the client goes
	}{
		{"tunnel cut", func(sys *system, tunnel *forwarder) { tunnel.Cut(); current(sys).stop() }, "inside_tunnel_lost", false},
		{"context cancelled", func(sys *system, tunnel *forwarder) { current(sys).stop(); tunnel.Cut() }, "inside_shutdown", false},
		{"tunnel cut while the partner writes", func(sys *system, tunnel *forwarder) { tunnel.Cut(); current(sys).stop() }, "inside_tunnel_lost", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { clientEndsMidTransfer(t, tc.end, tc.reason, tc.writing) })
	}
}

func clientEndsMidTransfer(t *testing.T, end func(*system, *forwarder), reason string, writing bool) {
	fx := newFixture(t)
	var tunnelFwd, internalFwd *forwarder
	sys := startSystem(t, fx, systemOptions{
		tunnelVia:   func(target string) string { tunnelFwd = startForwarder(t, target); return tunnelFwd.Addr() },
		internalVia: func(target string) string { internalFwd = startForwarder(t, target); return internalFwd.Addr() },
	})
	addr := sys.partnerAddr(t)
	leaf := fx.partner(t, partnerID)
	file := makeFile(t, t.TempDir(), "big.dat", oftp2.FormatUnstructured, 24*mib, 7)
	small := func(c *endpoint.Config) { c.BufferSize, c.Credit = 4096, 16 }

	watcher := watchFinal(t, sys.recvDir)
	type outcome struct {
		res *endpoint.Result
		err error
	}
	done := make(chan outcome, 1)
	watches := make(chan *readWatch, 1)
	cfg := partnerConfig(partnerID, partnerPassword)
	small(&cfg)
	go func() {
		res, err := runPartner(t, fx, addr, leaf, cfg, func(c net.Conn) net.Conn {
			w := &readWatch{Conn: c}
			watches <- w
			return w
		}, file)
		done <- outcome{res, err}
	}()
	var watch *readWatch
	select {
	case watch = <-watches:
	case o := <-done:
		t.Fatalf("the partner session did not start: %v", o.err)
	}

	// Mid-transfer: at least 1 MiB stored in the responder's partial file.
	deadline := time.Now().Add(waitTimeout)
	for partialSize(t, sys.recvDir) < mib {
		if time.Now().After(deadline) {
			t.Fatalf("the responder holds %d octets after %v", partialSize(t, sys.recvDir), waitTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !writing {
		internalFwd.Pause()
		for watch.waitingFor() < 300*time.Millisecond {
			if time.Now().After(deadline) {
				t.Fatal("the partner never waited for credit")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	end(sys, tunnelFwd)

	var o outcome
	select {
	case o = <-done:
	case <-time.After(waitTimeout):
		t.Fatal("the partner's session did not end after the client went")
	}
	var se *endpoint.SessionError
	if !errors.As(o.err, &se) || !se.Remote || se.Reason != oftp2.ESIDLocalEmergency {
		t.Fatalf("partner session ended with %v, want ESID 05 from the server", o.err)
	}
	if st := o.res.Sent[0].Status; st == endpoint.StatusDelivered || st == endpoint.StatusStored {
		t.Errorf("the interrupted file has status %q", st)
	}
	sys.serverLog.wait(t, "the server", "session_ended", map[string]string{"reason": reason, "esid_reason": "05", "odette_id": partnerID})
	sys.waitListener(t, false)

	internalFwd.Resume()
	rr := sys.responderResults(t, 1)[0]
	if !errors.As(rr.Err, &se) || !se.Remote || se.Reason != oftp2.ESIDLocalEmergency {
		t.Errorf("the responder's session ended with %v, want ESID 05 from the client", rr.Err)
	}
	if len(rr.Result.Received) != 0 {
		t.Errorf("the responder stored %d files of the interrupted session", len(rr.Result.Received))
	}
	kept := partialSize(t, sys.recvDir)
	if kept < mib {
		t.Errorf("the responder kept %d octets for restart, want at least 1 MiB", kept)
	}

	// A new client; the partner sends the same file again and it resumes.
	sys.startClient(t, sys.tunnelAddr)
	if got := sys.waitListener(t, true); got != addr {
		t.Fatalf("partner listener on %s after the restart, want %s", got, addr)
	}
	if seen := watcher.Stop(); len(seen) != 0 {
		t.Fatalf("files appeared under a final name before the transfer was complete: %v", seen)
	}
	res, err := sendAs(t, fx, addr, leaf, partnerID, partnerPassword, small, file)
	if err != nil {
		t.Fatalf("restarted session: %v", err)
	}
	rr2 := sys.responderResults(t, 2)[1]
	checkDelivered(t, res, rr2, []testFile{file})
	if pos := res.Sent[0].RestartPosition; pos <= 0 {
		t.Errorf("the partner's restart position = %d, want > 0 (the transfer started over)", pos)
	}
	if len(rr2.Result.Received) == 1 && rr2.Result.Received[0].RestartPosition <= 0 {
		t.Errorf("the responder's restart position = %d, want > 0", rr2.Result.Received[0].RestartPosition)
	}
	t.Logf("resumed at %d KiB of %d KiB; %d octets had been kept", res.Sent[0].RestartPosition, file.size>>10, kept)
}
