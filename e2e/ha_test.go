package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testnet"
	"smartproxy/internal/testwait"
	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

// High-availability run: sizes and bounds.
const (
	haTransfers    = 20       // concurrent partner transfers per round
	haFileSize     = 20 * mib // each
	haKillAfter    = 80 * mib // received in total (all partial files) before the kill
	haMaxAttempts  = 6        // sends of one file: the first and the re-sends
	haSendTimeout  = 3 * time.Minute
	haClientSecond = "smartproxy-client-2"
	// haPartnerIP is the partners' own loopback address; HAProxy connects to the servers from
	// 127.0.0.1 and passes this one in its PROXY protocol v2 header.
	haPartnerIP = "127.0.0.77"
)

// TestHighAvailability runs the documented high-availability setup (docs/high-availability.md)
// as real processes on loopback: HAProxy with the shipped deploy/haproxy/haproxy.cfg in front
// of two smartproxy-servers, two smartproxy-clients (two allow-listed identities) each
// connected to both servers (-S a,b), one internal `oftp2 serve`. Twenty partners send 20 MiB
// each through the balancer at once; in the middle one server is killed with SIGKILL. Every
// transfer either completes or fails (ESID, or the connection lost with the server) and then
// completes on a re-send through the balancer, byte-identical, without anyone touching the
// system. The server is started again (as systemd would), both clients reconnect to it by
// themselves, and the same is done with one client killed: its sessions end with ESID 05 from
// the servers and complete on a re-send over the other client.
func TestHighAvailability(t *testing.T) {
	haproxy := requireTool(t, "haproxy", "SMARTPROXY_REQUIRE_HAPROXY")
	if haproxy == "" {
		t.Skip("haproxy is not installed (Debian package haproxy); SMARTPROXY_REQUIRE_HAPROXY=1 or CI=true makes this a failure")
	}
	bin := buildBinaries(t)
	fx := newFixture(t)
	work := t.TempDir()
	path := func(name string) string { return filepath.Join(work, name) }
	leaf := fx.partner(t, partnerID)
	if err := pki.WriteFile(path("partner.pem"), leaf.CertPEM, pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(path("partner-key.pem"), leaf.KeyPEM, pki.KeyFileMode); err != nil {
		t.Fatal(err)
	}
	second, err := fx.TunnelCA.Issue(pki.Request{CommonName: haClientSecond, DNSNames: []string{haClientSecond}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(path("client2.pem"), second.CertPEM, pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(path("client2-key.pem"), second.KeyPEM, pki.KeyFileMode); err != nil {
		t.Fatal(err)
	}

	// Both servers run on this host: one Proxy ID, one license.
	out, err := exec.Command(filepath.Join(bin, "smartproxy-server"), "-L").Output()
	if err != nil {
		t.Fatalf("smartproxy-server -L: %v", err)
	}
	lic := writeLicense(t, work, strings.TrimSpace(string(out)), nil)

	recv := path("inbox")
	serve := startProc(t, "oftp2 serve", filepath.Join(bin, "oftp2"), "serve", "--plain", "--listen", "127.0.0.1:0",
		"--addr-file", path("serve.addr"), "--odette-id", companyID, "--password", companyPassword,
		"--partner", partnerID+":"+partnerPassword, "--dir", recv, "--timeout", "30s")
	serveAddr := waitFile(t, path("serve.addr"), serve)
	cf := fx.config(testnet.ReserveAddr(t), serveAddr)
	cf.ProxyProtocol = &configfile.ProxyProtocol{AllowedSources: []string{"127.0.0.1"}}
	// One version for both clients, as a backend's revision would be: each server applies it
	// once, whichever client pushes it first, and confirms it to the other.
	cf.Version = 7
	cfgPath := fx.writeConfig(t, cf)

	// Two DMZ servers: one shared configuration, each its own partner listener (--partner-listen).
	type dmz struct {
		name, tunnel, partners string
		args                   []string
		p                      *proc
	}
	servers := make([]*dmz, 2)
	var serverProcs []*proc // every process of either server, the killed one too
	for i := range servers {
		d := &dmz{name: fmt.Sprintf("smartproxy-server %d", i+1), tunnel: testnet.ReserveAddr(t), partners: testnet.ReserveAddr(t)}
		d.args = []string{"-i", d.tunnel, "-l", lic, "--partner-listen", d.partners,
			"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelServer), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelSKey),
			"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--tunnel-allow-client", "smartproxy-client",
			"--tunnel-allow-client", haClientSecond, "--admin=", "--metrics=", "--pid-file", path(fmt.Sprintf("server%d.pid", i+1))}
		d.p = startProc(t, d.name, filepath.Join(bin, "smartproxy-server"), d.args...)
		serverProcs = append(serverProcs, d.p)
		servers[i] = d
	}
	// Two clients, each with a tunnel to both servers.
	serverList := servers[0].tunnel + "," + servers[1].tunnel
	clientArgs := func(i int) []string {
		cert, key := filepath.Join(fx.Dir, fileTunnelClient), filepath.Join(fx.Dir, fileTunnelCKey)
		if i == 1 {
			cert, key = path("client2.pem"), path("client2-key.pem")
		}
		return []string{"-S", serverList, "--tunnel-server-name", "localhost", "--config", cfgPath,
			"--tunnel-cert", cert, "--tunnel-key", key, "--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA),
			"--admin=", "--metrics=", "--pid-file", path(fmt.Sprintf("client%d.pid", i+1))}
	}
	clients := []*proc{
		startProc(t, "smartproxy-client 1", filepath.Join(bin, "smartproxy-client"), clientArgs(0)...),
		startProc(t, "smartproxy-client 2", filepath.Join(bin, "smartproxy-client"), clientArgs(1)...),
	}
	tunnelUp := func(clientID string) *regexp.Regexp {
		return regexp.MustCompile(`client_id=` + clientID + ` .*event=tunnel_connected`)
	}
	serverReady := func(d *dmz) {
		t.Helper()
		d.p.WaitLog(t, tunnelUp("smartproxy-client"), 1)
		d.p.WaitLog(t, tunnelUp(haClientSecond), 1)
		d.p.WaitLog(t, regexp.MustCompile(`event=partner_listener_opened`), 1)
	}
	for _, d := range servers {
		serverReady(d)
	}

	front := testnet.ReserveAddr(t)
	cmd := exec.Command(haproxy, "-db", "-f", filepath.Join("..", "deploy", "haproxy", "haproxy.cfg"))
	cmd.Env = append(os.Environ(), "SMARTPROXY_HA_BIND="+front, "SMARTPROXY_DMZ1="+servers[0].partners, "SMARTPROXY_DMZ2="+servers[1].partners)
	lb := proctest.StartCmd(t, "haproxy", cmd)
	waitListening(t, front, lb)

	round := 0
	// transfers sends haTransfers new files at once through the balancer, calls kill once
	// haKillAfter octets have arrived inside, and re-sends every file whose session failed
	// until all are delivered. It returns how many first sends failed and how many of those
	// ended with ESID 05.
	transfers := func(t *testing.T, kill func()) (failed, esid05 int) {
		round++
		files := make([]testFile, haTransfers)
		for i := range files {
			files[i] = randomFile(t, work, fmt.Sprintf("ha%d-%02d.dat", round, i), haFileSize)
		}
		send := func(f testFile, attempt int) *proc {
			return startProc(t, fmt.Sprintf("oftp2 send %s #%d", filepath.Base(f.out.Path), attempt), filepath.Join(bin, "oftp2"),
				"send", "--connect", front, "--source-ip", haPartnerIP, "--server-name", "localhost",
				"--cert", path("partner.pem"), "--key", path("partner-key.pem"), "--ca", filepath.Join(fx.Dir, fileCompanyCA),
				"--odette-id", partnerID, "--password", partnerPassword, "--partner-id", companyID, "--partner-password", companyPassword,
				"--format", "U", f.out.Path)
		}
		pending := make(map[int]*proc, len(files))
		for i, f := range files {
			pending[i] = send(f, 1)
		}
		// The receiver's partial files have no notification: poll their size.
		testwait.For(t, haSendTimeout, fmt.Sprintf("the transfers to reach %d MiB inside", haKillAfter/mib), func() bool {
			return partialSize(t, recv) >= haKillAfter
		})
		kill()
		for attempt := 1; len(pending) > 0; attempt++ {
			if attempt > haMaxAttempts {
				t.Fatalf("%d files not delivered after %d sends each", len(pending), haMaxAttempts)
			}
			next := make(map[int]*proc)
			for i, p := range pending {
				err := p.Wait(t, haSendTimeout)
				if err == nil {
					continue
				}
				if attempt == 1 {
					failed++
					if strings.Contains(p.Stderr.String(), "ended by the partner with ESID 05") {
						esid05++
					}
				}
				t.Logf("%s: %v: %s", p.Name, err, lastLine(p.Stderr.String()))
				next[i] = nil
			}
			// A partner calls again: the re-sends start together, each resuming its file.
			for i := range next {
				next[i] = send(files[i], attempt+1)
			}
			pending = next
		}
		for _, f := range files {
			serve.WaitStdout(t, regexp.MustCompile(`received \S+ .*sha256=`+f.sha), 1)
			if n := strings.Count(serve.Stdout.String(), "sha256="+f.sha); n != 1 {
				t.Errorf("%s: oftp2 serve reported %d receipts with its sha256, want 1", f.out.Path, n)
			}
		}
		stored := map[string]bool{}
		for _, p := range finalFiles(t, recv) {
			stored[fileSHA256(t, p)] = true
		}
		for _, f := range files {
			if !stored[f.sha] {
				t.Errorf("%s: no file with its sha256 %s stored inside", f.out.Path, f.sha)
			}
		}
		return failed, esid05
	}

	t.Run("server killed", func(t *testing.T) {
		failed, esid05 := transfers(t, func() {
			if err := servers[0].p.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("server killed: %d of %d transfers failed and were re-sent (%d with ESID 05, the rest lost their connection with the server)", failed, haTransfers, esid05)
		if failed == 0 || failed == haTransfers {
			t.Errorf("%d of %d transfers failed when one of two servers was killed: want some (the killed server's) and not all", failed, haTransfers)
		}
	})

	t.Run("server back", func(t *testing.T) {
		// systemd's Restart= brings the server back; both clients reconnect without help.
		servers[0].p = startProc(t, servers[0].name+" (restarted)", filepath.Join(bin, "smartproxy-server"), servers[0].args...)
		serverProcs = append(serverProcs, servers[0].p)
		serverReady(servers[0])
	})

	t.Run("client killed", func(t *testing.T) {
		failed, esid05 := transfers(t, func() {
			if err := clients[0].Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("client killed: %d of %d transfers failed and were re-sent, %d of them with ESID 05", failed, haTransfers, esid05)
		if failed == 0 || failed == haTransfers {
			t.Errorf("%d of %d transfers failed when one of two clients was killed: want some (the killed client's) and not all", failed, haTransfers)
		}
		if esid05 != failed {
			t.Errorf("%d of the %d failed transfers ended with ESID 05 from the server, want all: the server outlives the client and ends each of its sessions with an ESID", esid05, failed)
		}
		lost := regexp.MustCompile(`event=session_ended .*reason=inside_tunnel_lost`)
		n := 0
		for _, d := range servers {
			n += len(lost.FindAllString(d.p.Stderr.String(), -1))
		}
		if n == 0 {
			t.Error("no server logged a session ended by the lost client tunnel (reason=inside_tunnel_lost)")
		}
	})

	t.Run("partner address", func(t *testing.T) {
		// With send-proxy-v2 the servers see each partner under its own address, with HAProxy's
		// in proxy_addr, in every session's events.
		started := regexp.MustCompile(`event=session_started .*remote_addr="?([0-9.]+):\d+`)
		viaProxy := regexp.MustCompile(`event=session_started .*proxy_addr="?127\.0\.0\.1:\d+`)
		n := 0
		for _, p := range serverProcs {
			log := p.Stderr.String()
			for _, m := range started.FindAllStringSubmatch(log, -1) {
				n++
				if m[1] != haPartnerIP {
					t.Errorf("%s: a session started with remote_addr %s, want the partner's %s", p.Name, m[1], haPartnerIP)
				}
			}
			if got, want := len(viaProxy.FindAllString(log, -1)), len(started.FindAllString(log, -1)); got != want {
				t.Errorf("%s: %d of %d session_started events name HAProxy in proxy_addr, want all", p.Name, got, want)
			}
		}
		if n < 2*haTransfers {
			t.Errorf("%d session_started events in the servers' logs, want at least %d", n, 2*haTransfers)
		}
	})

	t.Run("no refusals, one configuration", func(t *testing.T) {
		// Every partner had a valid certificate and HAProxy's health checks reached the servers
		// all along: none of it may be a security event, or fail2ban would ban the balancer. The
		// two clients pushed the same version: each server process applied it exactly once.
		refusal := regexp.MustCompile(`level=warning .*event=partner_`)
		applied := regexp.MustCompile(`config_version=7 event=config_applied`)
		for _, p := range serverProcs {
			if l := refusal.FindAllString(p.Stderr.String(), -1); len(l) != 0 {
				t.Errorf("%s logged %d partner refusals, want none: %q", p.Name, len(l), l[0])
			}
			if n := len(applied.FindAllString(p.Stderr.String(), -1)); n != 1 {
				t.Errorf("%s applied configuration version 7 %d times, want once (two clients push it)", p.Name, n)
			}
		}
	})
}

// waitListening waits until a socket of this host listens on addr (an IPv4 "ip:port") while p
// runs. It reads /proc/net/tcp instead of connecting: a connection through the balancer would
// reach a server as a partner that closed before TLS.
func waitListening(t *testing.T, addr string, p *proc) {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		t.Fatalf("waitListening(%q): want an IPv4 address and port", addr)
	}
	ip := ap.Addr().As4()
	// /proc/net/tcp shows the address as one little-endian hex word, the port big-endian.
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	// A listening socket has no notification: poll /proc/net/tcp.
	testwait.For(t, waitTimeout, "a listener at "+addr, func() bool {
		data, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[1] == local && f[3] == "0A" { // TCP_LISTEN
				return true
			}
		}
		select {
		case <-p.Done():
			t.Fatalf("%s ended (%v)", p.Name, p.Err())
		default:
		}
		return false
	})
}

// randomFile writes an incompressible U file of size octets from the kernel's random source
// into dir. It is makeFile's unstructured case without the generator that costs seconds per
// 20 MiB under the race detector (the test process makes 800 MiB here).
func randomFile(t *testing.T, dir, name string, size int64) testFile {
	t.Helper()
	path := filepath.Join(dir, name)
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		b := buf[:min(int64(len(buf)), left)]
		rand.Read(b)
		h.Write(b)
		if _, err := fh.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	return testFile{out: endpoint.OutgoingFile{Path: path, Format: oftp2.FormatUnstructured}, sha: hex.EncodeToString(h.Sum(nil)), size: size}
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
