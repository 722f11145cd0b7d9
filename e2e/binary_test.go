package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"smartproxy/internal/pki"
	"smartproxy/oftp2"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a process of a built binary with its output captured.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has been waited for
	err    error         // the Wait result, valid after done
}

// startProc starts path with args; the test's cleanup kills it if it still runs and, when the
// test failed, logs the tail of its output.
func startProc(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %s\n--- stdout (tail) ---\n%s\n--- stderr (tail) ---\n%s", name, strings.Join(args, " "), tail(p.stdout.String(), 30), tail(p.stderr.String(), 30))
		}
	})
	return p
}

// wait waits for the process to end within timeout and returns its exit error.
func (p *proc) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not end within %v", p.name, timeout)
		return nil
	}
}

// waitLog waits until the process's stderr contains n lines matching re.
func (p *proc) waitLog(t testing.TB, re *regexp.Regexp, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(re.FindAllString(p.stderr.String(), -1)) < n {
		select {
		case <-p.done:
			t.Fatalf("%s ended (%v) before logging %d lines matching %s", p.name, p.err, n, re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged %d lines matching %s, want %d", p.name, len(re.FindAllString(p.stderr.String(), -1)), re, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// goTool returns the go command.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// buildBinaries builds smartproxy-server, smartproxy-client, smartproxy-license, smartproxy-api
// and oftp2 into a temporary directory and returns it.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(goTool(), "build", "-o", dir+string(os.PathSeparator),
		"smartproxy/cmd/smartproxy-server", "smartproxy/cmd/smartproxy-client", "smartproxy/cmd/smartproxy-license", "smartproxy/cmd/smartproxy-api", "smartproxy/cmd/oftp2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
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
	lic := writeLicense(t, work, proxyID)

	recv := path("inbox")
	serve := startProc(t, "oftp2 serve", filepath.Join(bin, "oftp2"), "serve", "--plain", "--listen", "127.0.0.1:0",
		"--addr-file", path("serve.addr"), "--odette-id", companyID, "--password", companyPassword,
		"--partner", partnerID+":"+partnerPassword, "--dir", recv, "--timeout", "30s")
	serveAddr := waitFile(t, path("serve.addr"), serve)
	internal := startForwarder(t, serveAddr)

	listen, tunnelAddr := freePort(t), freePort(t)
	cfgPath := fx.writeConfig(t, fx.config(listen, internal.Addr()))
	server := startProc(t, "smartproxy-server", filepath.Join(bin, "smartproxy-server"), "-i", tunnelAddr, "-l", lic,
		"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelServer), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelSKey),
		"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--admin=", "--metrics=", "--pid-file", path("server.pid"))
	clientArgs := []string{"-S", tunnelAddr, "--tunnel-server-name", "localhost", "--config", cfgPath,
		"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelClient), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelCKey),
		"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--admin=", "--metrics=", "--pid-file", path("client.pid")}
	client := startProc(t, "smartproxy-client", filepath.Join(bin, "smartproxy-client"), clientArgs...)
	listenerOpened := regexp.MustCompile(`event=partner_listener_opened`)
	server.waitLog(t, listenerOpened, 1)

	send := func(t *testing.T, name, id, password, certName string, extra []string, files ...string) *proc {
		args := append([]string{"send", "--connect", listen, "--server-name", "localhost",
			"--cert", path(certName + ".pem"), "--key", path(certName + "-key.pem"), "--ca", filepath.Join(fx.Dir, fileCompanyCA),
			"--odette-id", id, "--password", password, "--partner-id", companyID, "--partner-password", companyPassword}, extra...)
		return startProc(t, name, filepath.Join(bin, "oftp2"), append(args, files...)...)
	}
	received := func(sha string) int { return strings.Count(serve.stdout.String(), "sha256="+sha) }

	t.Run("deliver", func(t *testing.T) {
		tf := makeFile(t, work, "invoices.edi", oftp2.FormatText, 2*mib, 1)
		vf := makeFile(t, work, "records.dat", oftp2.FormatVariable, mib, 2)
		p := send(t, "oftp2 send T", partnerID, partnerPassword, "partner", []string{"--format", "T"}, tf.out.Path)
		if err := p.wait(t, 2*time.Minute); err != nil {
			t.Fatalf("oftp2 send: %v\n%s", err, p.stderr.String())
		}
		p = send(t, "oftp2 send V", partnerID, partnerPassword, "partner", []string{"--format", "V"}, vf.out.Path)
		if err := p.wait(t, 2*time.Minute); err != nil {
			t.Fatalf("oftp2 send: %v\n%s", err, p.stderr.String())
		}
		for _, f := range []testFile{tf, vf} {
			if received(f.sha) != 1 {
				t.Errorf("oftp2 serve reported %d files with sha256 %s, want 1:\n%s", received(f.sha), f.sha, serve.stdout.String())
			}
		}
		if !strings.Contains(p.stdout.String(), "delivered "+vf.out.Path) || !strings.Contains(p.stdout.String(), "sha256="+vf.sha) {
			t.Errorf("oftp2 send output %q, want a delivered line with sha256=%s", p.stdout.String(), vf.sha)
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
		err := p.wait(t, time.Minute)
		if err == nil || !strings.Contains(p.stderr.String(), "ended by the partner with ESID 03") {
			t.Errorf("oftp2 send as an unknown partner: %v, stderr %q; want ESID 03", err, p.stderr.String())
		}
		line := regexp.MustCompile(`level=warning .*event=partner_unknown .*odette_id=` + unknownID)
		server.waitLog(t, line, 1)
		client.waitLog(t, regexp.MustCompile(`event=partner_unknown .*odette_id=`+unknownID+` .*source=server`), 1)
	})

	t.Run("configuration reload", func(t *testing.T) {
		// SIGHUP with the partner disabled: the server enforces the new version.
		applied := regexp.MustCompile(`level=info .*event=config_applied`)
		before := len(applied.FindAllString(server.stderr.String(), -1))
		disabled := fx.config(listen, internal.Addr())
		no := false
		disabled.Partners[0].Enabled = &no
		fx.writeConfig(t, disabled)
		if err := client.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		server.waitLog(t, applied, before+1)
		refusedAs := func(t *testing.T, n int) {
			t.Helper()
			p := send(t, "oftp2 send disabled", partnerID, partnerPassword, "partner", nil, path("invoices.edi"))
			if err := p.wait(t, time.Minute); err == nil || !strings.Contains(p.stderr.String(), "ended by the partner with ESID 03") {
				t.Errorf("oftp2 send as a disabled partner: %v, stderr %q; want ESID 03", err, p.stderr.String())
			}
			server.waitLog(t, regexp.MustCompile(`event=partner_disabled .*odette_id=`+partnerID), n)
		}
		refusedAs(t, 1)

		// An invalid file is refused by the client; the last good configuration stays.
		if err := os.WriteFile(cfgPath, []byte(`{"partners": [{"odette_id": "x", "odete_id": 1}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := client.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		client.waitLog(t, regexp.MustCompile(`event=config_reload_refused`), 1)
		refusedAs(t, 2)

		// Enabled again: sessions go through.
		fx.writeConfig(t, fx.config(listen, internal.Addr()))
		if err := client.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		server.waitLog(t, applied, before+2)
		if got := len(applied.FindAllString(server.stderr.String(), -1)); got != before+2 {
			t.Errorf("the server applied %d configurations, want %d (the invalid file must not reach it)", got, before+2)
		}
		f := makeFile(t, work, "after-reload.edi", oftp2.FormatText, 100<<10, 4)
		p := send(t, "oftp2 send after reload", partnerID, partnerPassword, "partner", []string{"--format", "T"}, f.out.Path)
		if err := p.wait(t, time.Minute); err != nil {
			t.Fatalf("oftp2 send after the partner was enabled again: %v\n%s", err, p.stderr.String())
		}
		if received(f.sha) != 1 {
			t.Errorf("oftp2 serve did not report the file with sha256 %s", f.sha)
		}
	})

	t.Run("client killed mid-transfer", func(t *testing.T) {
		big := makeFile(t, work, "big.dat", oftp2.FormatUnstructured, 32*mib, 3)
		small := []string{"--format", "U", "--buffer-size", "4096", "--credit", "16"}
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
		internal.Pause()
		time.Sleep(500 * time.Millisecond)
		if err := client.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		client.wait(t, 10*time.Second)
		err := p.wait(t, time.Minute)
		if err == nil || !strings.Contains(p.stderr.String(), "ended by the partner with ESID 05") {
			t.Errorf("oftp2 send after the client was killed: %v, stderr %q; want ESID 05 from the server", err, p.stderr.String())
		}
		server.waitLog(t, regexp.MustCompile(`event=session_ended .*odette_id=`+partnerID+` .*reason=inside_tunnel_lost`), 1)
		server.waitLog(t, regexp.MustCompile(`event=partner_listener_closed`), 1)
		internal.Resume()
		if got := len(finalFiles(t, recv)); got != finalsBefore {
			t.Errorf("%d files under final names after the kill, want %d", got, finalsBefore)
		}

		client = startProc(top, "smartproxy-client (restarted)", filepath.Join(bin, "smartproxy-client"), clientArgs...)
		server.waitLog(t, listenerOpened, 2)
		if seen := watcher.Stop(); len(seen) != finalsBefore {
			t.Fatalf("files under final names during the broken transfer: %v", seen)
		}
		p = send(t, "oftp2 send big again", partnerID, partnerPassword, "partner", small, big.out.Path)
		if err := p.wait(t, 3*time.Minute); err != nil {
			t.Fatalf("oftp2 send after the restart: %v\n%s", err, p.stderr.String())
		}
		m := regexp.MustCompile(`delivered .* restart=(\d+) sha256=` + big.sha).FindStringSubmatch(p.stdout.String())
		if m == nil || m[1] == "0" {
			t.Errorf("oftp2 send output %q: want the file delivered with a restart position > 0", p.stdout.String())
		}
		if received(big.sha) != 1 {
			t.Errorf("oftp2 serve reported the big file %d times, want once", received(big.sha))
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		for _, p := range []*proc{client, server} {
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(t, 30*time.Second); err != nil {
				t.Errorf("%s after SIGTERM: %v, want exit status 0", p.name, err)
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
		case <-p.done:
			t.Fatalf("%s ended (%v)", p.name, p.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s wrote nothing to %s", p.name, path)
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
	cmd := exec.Command(bash, filepath.Join("..", "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "BIN="+bin, "DEMO_DIR="+run, "GO="+goTool(), "DEMO_PARTNER_PORT=0", "DEMO_TUNNEL_PORT=0")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out.String())
	}
	text := out.String()
	sums := regexp.MustCompile(`(?m)^\s+sha256 ([0-9a-f]{64})$`).FindAllStringSubmatch(text, -1)
	if len(sums) != 2 || sums[0][1] != sums[1][1] {
		t.Fatalf("the demo printed sha256 lines %v, want two equal ones:\n%s", sums, text)
	}
	m := regexp.MustCompile(`(?m)^  received: (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the demo printed no received path:\n%s", text)
	}
	if got := fileSHA256(t, m[1]); got != sums[0][1] {
		t.Errorf("the file the demo names, %s, has sha256 %s, want %s", m[1], got, sums[0][1])
	}
	if ev := regexp.MustCompile(`(?m)^  backend:  ([1-9][0-9]*) events stored in `).FindStringSubmatch(text); ev == nil {
		t.Errorf("the demo printed no backend line with a number of stored events:\n%s", text)
	}
	if !strings.Contains(text, "\nOK: partner → smartproxy-server → tunnel → smartproxy-client → internal OFTP2 server") {
		t.Errorf("the demo did not report success:\n%s", text)
	}
}
