package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
)

// proc is a process of a built binary with its output captured.
type proc = proctest.Proc

// startProc starts path with args; the test's cleanup kills it if it still runs and, when the
// test failed, logs the tail of its output.
func startProc(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	return proctest.Start(t, name, path, args...)
}

// bins are smartproxy-server, smartproxy-client, smartproxy-license, smartproxy-api and oftp2,
// built once for the tests of this package that run the binaries (TestMain removes them).
var bins = proctest.NewBinaries("smartproxy/cmd/smartproxy-server", "smartproxy/cmd/smartproxy-client",
	"smartproxy/cmd/smartproxy-license", "smartproxy/cmd/smartproxy-api", "smartproxy/cmd/oftp2")

// buildBinaries returns the directory of bins, building them on the first call.
func buildBinaries(t *testing.T) string {
	t.Helper()
	return bins.Dir(t)
}

// TestBinaries runs the real system as separate processes built from this tree: the internal
// responder `oftp2 serve`, `smartproxy-server` with a license for this host's Proxy ID (-L),
// `smartproxy-client --config` with the JSON configuration file, and partners `oftp2 send`.
// It delivers files, refuses an unknown partner (ESID 03, the security event in both daemons'
// text logs), reloads the client's configuration with SIGHUP (a disabled partner is refused by
// the server, an invalid file is refused by the client and changes nothing), kills the client with SIGKILL in the middle of a file (the partner gets ESID 05,
// nothing appears under a final name), restarts the client and resumes the file, and stops
// both daemons with SIGTERM (exit status 0).
func TestBinaries(t *testing.T) {
	top := t // owns the daemons, which outlive the subtests
	bin := buildBinaries(t)
	fx := newFixture(t)
	work := t.TempDir()
	path := func(name string) string { return filepath.Join(work, name) }
	writeLeaf := func(name string, leaf *pki.Leaf) {
		t.Helper()
		if err := pki.WriteFile(path(name+".pem"), leaf.CertPEM, pki.CertFileMode); err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteFile(path(name+"-key.pem"), leaf.KeyPEM, pki.KeyFileMode); err != nil {
			t.Fatal(err)
		}
	}
	writeLeaf("partner", fx.partner(t, partnerID))
	writeLeaf("unknown", fx.partner(t, unknownID))

	out, err := exec.Command(filepath.Join(bin, "smartproxy-server"), "-L").Output()
	if err != nil {
		t.Fatalf("smartproxy-server -L: %v", err)
	}
	proxyID := strings.TrimSpace(string(out))
	lic := writeLicense(t, work, proxyID, nil)

	recv := path("inbox")
	serve := startProc(t, "oftp2 serve", filepath.Join(bin, "oftp2"), "serve", "--plain", "--listen", "127.0.0.1:0",
		"--addr-file", path("serve.addr"), "--odette-id", companyID, "--password", companyPassword,
		"--partner", partnerID+":"+partnerPassword, "--dir", recv, "--timeout", "30s")
	serveAddr := waitFile(t, path("serve.addr"), serve)
	internal := startForwarder(t, serveAddr)

	listen, tunnelAddr := testnet.ReserveAddr(t), testnet.ReserveAddr(t)
	cfgPath := fx.writeConfig(t, fx.config(listen, internal.Addr()))
	server := startProc(t, "smartproxy-server", filepath.Join(bin, "smartproxy-server"), "-i", tunnelAddr, "-l", lic,
		"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelServer), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelSKey),
		"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--admin=", "--metrics=", "--pid-file", path("server.pid"))
	clientArgs := []string{"-S", tunnelAddr, "--tunnel-server-name", "localhost", "--config", cfgPath,
		"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelClient), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelCKey),
		"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--admin=", "--metrics=", "--pid-file", path("client.pid")}
	client := startProc(t, "smartproxy-client", filepath.Join(bin, "smartproxy-client"), clientArgs...)
	listenerOpened := regexp.MustCompile(`event=partner_listener_opened`)
	server.WaitLog(t, listenerOpened, 1)

	send := func(t *testing.T, name, id, password, certName string, extra []string, files ...string) *proc {
		args := append([]string{"send", "--connect", listen, "--server-name", "localhost",
			"--cert", path(certName + ".pem"), "--key", path(certName + "-key.pem"), "--ca", filepath.Join(fx.Dir, fileCompanyCA),
			"--odette-id", id, "--password", password, "--partner-id", companyID, "--partner-password", companyPassword}, extra...)
		return startProc(t, name, filepath.Join(bin, "oftp2"), append(args, files...)...)
	}
	// serve prints its "received … sha256=" line only when the session has ended through the
	// whole proxy chain, which can be after oftp2 send has exited: wait for the line, then count.
	received := func(t *testing.T, sha string) int {
		t.Helper()
		serve.WaitStdout(t, regexp.MustCompile("sha256="+sha), 1)
		return strings.Count(serve.Stdout.String(), "sha256="+sha)
	}

	t.Run("deliver", func(t *testing.T) {
		tf := makeFile(t, work, "invoices.edi", oftp2.FormatText, 2*mib, 1)
		vf := makeFile(t, work, "records.dat", oftp2.FormatVariable, mib, 2)
		p := send(t, "oftp2 send T", partnerID, partnerPassword, "partner", []string{"--format", "T"}, tf.out.Path)
		if err := p.Wait(t, 2*time.Minute); err != nil {
			t.Fatalf("oftp2 send: %v\n%s", err, p.Stderr.String())
		}
		p = send(t, "oftp2 send V", partnerID, partnerPassword, "partner", []string{"--format", "V"}, vf.out.Path)
		if err := p.Wait(t, 2*time.Minute); err != nil {
			t.Fatalf("oftp2 send: %v\n%s", err, p.Stderr.String())
		}
		for _, f := range []testFile{tf, vf} {
			if n := received(t, f.sha); n != 1 {
				t.Errorf("oftp2 serve reported %d files with sha256 %s, want 1:\n%s", n, f.sha, serve.Stdout.String())
			}
		}
		if !strings.Contains(p.Stdout.String(), "delivered "+vf.out.Path) || !strings.Contains(p.Stdout.String(), "sha256="+vf.sha) {
			t.Errorf("oftp2 send output %q, want a delivered line with sha256=%s", p.Stdout.String(), vf.sha)
		}
		finals := finalFiles(t, recv)
		if len(finals) != 2 {
			t.Fatalf("files under final names: %v, want 2", finals)
		}
		for _, f := range finals {
			sum := fileSHA256(t, f)
			if sum != tf.sha && sum != vf.sha {
				t.Errorf("stored %s has sha256 %s, matching neither file sent", f, sum)
			}
		}
	})

	t.Run("unknown partner", func(t *testing.T) {
		p := send(t, "oftp2 send unknown", unknownID, "", "unknown", nil, path("invoices.edi"))
		err := p.Wait(t, time.Minute)
		if err == nil || !strings.Contains(p.Stderr.String(), "ended by the partner with ESID 03") {
			t.Errorf("oftp2 send as an unknown partner: %v, stderr %q; want ESID 03", err, p.Stderr.String())
		}
		line := regexp.MustCompile(`level=warning .*event=partner_unknown .*odette_id=` + unknownID)
		server.WaitLog(t, line, 1)
		client.WaitLog(t, regexp.MustCompile(`event=partner_unknown .*odette_id=`+unknownID+` .*source=server`), 1)
	})

	t.Run("configuration reload", func(t *testing.T) {
		// SIGHUP with the partner disabled: the server enforces the new version.
		applied := regexp.MustCompile(`level=info .*event=config_applied`)
		before := len(applied.FindAllString(server.Stderr.String(), -1))
		disabled := fx.config(listen, internal.Addr())
		no := false
		disabled.Partners[0].Enabled = &no
		fx.writeConfig(t, disabled)
		if err := client.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		server.WaitLog(t, applied, before+1)
		refusedAs := func(t *testing.T, n int) {
			t.Helper()
			p := send(t, "oftp2 send disabled", partnerID, partnerPassword, "partner", nil, path("invoices.edi"))
			if err := p.Wait(t, time.Minute); err == nil || !strings.Contains(p.Stderr.String(), "ended by the partner with ESID 03") {
				t.Errorf("oftp2 send as a disabled partner: %v, stderr %q; want ESID 03", err, p.Stderr.String())
			}
			server.WaitLog(t, regexp.MustCompile(`event=partner_disabled .*odette_id=`+partnerID), n)
		}
		refusedAs(t, 1)

		// An invalid file is refused by the client; the last good configuration stays.
		if err := os.WriteFile(cfgPath, []byte(`{"partners": [{"odette_id": "x", "odete_id": 1}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := client.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		client.WaitLog(t, regexp.MustCompile(`event=config_reload_refused`), 1)
		refusedAs(t, 2)

		// Enabled again: sessions go through.
		fx.writeConfig(t, fx.config(listen, internal.Addr()))
		if err := client.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		server.WaitLog(t, applied, before+2)
		if got := len(applied.FindAllString(server.Stderr.String(), -1)); got != before+2 {
			t.Errorf("the server applied %d configurations, want %d (the invalid file must not reach it)", got, before+2)
		}
		f := makeFile(t, work, "after-reload.edi", oftp2.FormatText, 100<<10, 4)
		p := send(t, "oftp2 send after reload", partnerID, partnerPassword, "partner", []string{"--format", "T"}, f.out.Path)
		if err := p.Wait(t, time.Minute); err != nil {
			t.Fatalf("oftp2 send after the partner was enabled again: %v\n%s", err, p.Stderr.String())
		}
		if n := received(t, f.sha); n != 1 {
			t.Errorf("oftp2 serve reported the file with sha256 %s %d times, want once", f.sha, n)
		}
	})

	t.Run("client killed mid-transfer", func(t *testing.T) {
		big := makeFile(t, work, "big.dat", oftp2.FormatUnstructured, 32*mib, 3)
		// The partner's connection goes through a forwarder that sees when it falls silent.
		front := startForwarder(t, listen)
		small := []string{"--format", "U", "--buffer-size", "4096", "--credit", "16", "--connect", front.Addr()}
		watcher := watchFinal(t, recv)
		finalsBefore := len(finalFiles(t, recv))
		p := send(t, "oftp2 send big", partnerID, partnerPassword, "partner", small, big.out.Path)
		deadline := time.Now().Add(waitTimeout)
		for partialSize(t, recv) < mib {
			if time.Now().After(deadline) {
				t.Fatal("the transfer did not reach 1 MiB")
			}
			time.Sleep(2 * time.Millisecond)
		}
		// Hold the inside so that the partner sends its credit and waits for a CDT, then
		// kill the client.
		// kill the client. A partner still writing when the server closes may see a TCP reset
		// instead of the ESID.
		internal.Pause()
		for front.quietFor() < 300*time.Millisecond {
			if time.Now().After(deadline) {
				t.Fatal("the partner never stopped sending to wait for credit")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := client.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		client.Wait(t, 10*time.Second)
		err := p.Wait(t, time.Minute)
		if err == nil || !strings.Contains(p.Stderr.String(), "ended by the partner with ESID 05") {
			t.Errorf("oftp2 send after the client was killed: %v, stderr %q; want ESID 05 from the server", err, p.Stderr.String())
		}
		server.WaitLog(t, regexp.MustCompile(`event=session_ended .*odette_id=`+partnerID+` .*reason=inside_tunnel_lost`), 1)
		server.WaitLog(t, regexp.MustCompile(`event=partner_listener_closed`), 1)
		internal.Resume()
		if got := len(finalFiles(t, recv)); got != finalsBefore {
			t.Errorf("%d files under final names after the kill, want %d", got, finalsBefore)
		}

		client = startProc(top, "smartproxy-client (restarted)", filepath.Join(bin, "smartproxy-client"), clientArgs...)
		server.WaitLog(t, listenerOpened, 2)
		if seen := watcher.Stop(); len(seen) != finalsBefore {
			t.Fatalf("files under final names during the broken transfer: %v", seen)
		}
		p = send(t, "oftp2 send big again", partnerID, partnerPassword, "partner", small, big.out.Path)
		if err := p.Wait(t, 3*time.Minute); err != nil {
			t.Fatalf("oftp2 send after the restart: %v\n%s", err, p.Stderr.String())
		}
		m := regexp.MustCompile(`delivered .* restart=(\d+) sha256=` + big.sha).FindStringSubmatch(p.Stdout.String())
		if m == nil || m[1] == "0" {
			t.Errorf("oftp2 send output %q: want the file delivered with a restart position > 0", p.Stdout.String())
		}
		if n := received(t, big.sha); n != 1 {
			t.Errorf("oftp2 serve reported the big file %d times, want once", n)
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		for _, p := range []*proc{client, server} {
			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(t, 30*time.Second); err != nil {
				t.Errorf("%s after SIGTERM: %v, want exit status 0", p.Name, err)
			}
		}
	})
}

// waitFile waits until path holds something (while p runs) and returns it.
func waitFile(t *testing.T, path string, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return string(bytes.TrimSpace(b))
		}
		select {
		case <-p.Done():
			t.Fatalf("%s ended (%v)", p.Name, p.Err())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s wrote nothing to %s", p.Name, path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDemoScript runs scripts/demo.sh — what `make demo`, the README's first command, runs —
// with freshly built binaries and free ports, and checks that it reports the file delivered
// through the proxy with matching SHA-256 sums and the proxy's events stored in the backend.
func TestDemoScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed for scripts/demo.sh: %v", err)
	}
	bin := buildBinaries(t)
	run := filepath.Join(t.TempDir(), "demo-run")
	// The script starts daemons of its own; a hang must end the test, not the package timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, filepath.Join("..", "scripts", "demo.sh"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) } // the script and its daemons
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), "BIN="+bin, "DEMO_DIR="+run, "GO="+proctest.GoTool(), "DEMO_PARTNER_PORT=0", "DEMO_TUNNEL_PORT=0", "DEMO_ROUTE_PORT=0")
	var out proctest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/demo.sh: %v (context: %v)\n%s", err, ctx.Err(), out.String())
	}
	text := out.String()
	// One file each way: sent and received sha256 lines, pairwise equal, and the received
	// files on disk with those sums.
	sums := regexp.MustCompile(`(?m)^\s+sha256 ([0-9a-f]{64})$`).FindAllStringSubmatch(text, -1)
	if len(sums) != 4 || sums[0][1] != sums[1][1] || sums[2][1] != sums[3][1] {
		t.Fatalf("the demo printed sha256 lines %v, want two equal pairs (incoming, outgoing):\n%s", sums, text)
	}
	received := regexp.MustCompile(`(?m)^    received: (\S+)$`).FindAllStringSubmatch(text, -1)
	if len(received) != 2 {
		t.Fatalf("the demo printed received paths %v, want two:\n%s", received, text)
	}
	for i, m := range received {
		if got, want := fileSHA256(t, m[1]), sums[2*i][1]; got != want {
			t.Errorf("the file the demo names, %s, has sha256 %s, want %s", m[1], got, want)
		}
	}
	if !strings.Contains(text, "partner-inbox") {
		t.Errorf("the outgoing file was not stored by the partner's OFTP2 server:\n%s", text)
	}
	if ev := regexp.MustCompile(`(?m)^  backend:  ([1-9][0-9]*) events stored in `).FindStringSubmatch(text); ev == nil {
		t.Errorf("the demo printed no backend line with a number of stored events:\n%s", text)
	}
	if !strings.Contains(text, "\nOK: incoming: partner → smartproxy-server → tunnel → smartproxy-client → internal OFTP2 server;\n"+
		"    outgoing: internal OFTP2 server → smartproxy-client route → tunnel → smartproxy-server → partner:") {
		t.Errorf("the demo did not report success:\n%s", text)
	}
}
