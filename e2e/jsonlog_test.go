package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"smartproxy/internal/event"
	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
)

// TestJSONLogFieldTypes runs smartproxy-server and smartproxy-client as processes with JSON
// logs through a delivered file, a refused partner, a level change and a configuration reload,
// then checks every field of every line of both logs against its declared type
// (internal/event's field table; a field not declared is a string): a field has one type in
// every line of both daemons, so tunnel_index is always a number, never "0", and an event line
// of the client names the same fact as the server's.
func TestJSONLogFieldTypes(t *testing.T) {
	bin := buildBinaries(t)
	fx := newFixture(t)
	work := t.TempDir()
	path := func(name string) string { return filepath.Join(work, name) }
	for name, id := range map[string]string{"partner": partnerID, "unknown": unknownID} {
		leaf := fx.partner(t, id)
		if err := pki.WriteFile(path(name+".pem"), leaf.CertPEM, pki.CertFileMode); err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteFile(path(name+"-key.pem"), leaf.KeyPEM, pki.KeyFileMode); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(filepath.Join(bin, "smartproxy-server"), "-L").Output()
	if err != nil {
		t.Fatalf("smartproxy-server -L: %v", err)
	}
	lic := writeLicense(t, work, strings.TrimSpace(string(out)), nil)
	serve := startProc(t, "oftp2 serve", filepath.Join(bin, "oftp2"), "serve", "--plain", "--listen", "127.0.0.1:0",
		"--addr-file", path("serve.addr"), "--odette-id", companyID, "--password", companyPassword,
		"--partner", partnerID+":"+partnerPassword, "--dir", path("inbox"), "--timeout", "30s")
	internal := startForwarder(t, waitFile(t, path("serve.addr"), serve))
	listen, tunnelAddr := testnet.ReserveAddr(t), testnet.ReserveAddr(t)
	cfgPath := fx.writeConfig(t, fx.config(listen, internal.Addr()))
	server := startProc(t, "smartproxy-server", filepath.Join(bin, "smartproxy-server"), "-i", tunnelAddr, "-l", lic,
		"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelServer), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelSKey),
		"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--admin=127.0.0.1:0", "--metrics=127.0.0.1:0", "--pid-file=",
		"--log-format", "json")
	client := startProc(t, "smartproxy-client", filepath.Join(bin, "smartproxy-client"), "-S", tunnelAddr,
		"--tunnel-server-name", "localhost", "--config", cfgPath,
		"--tunnel-cert", filepath.Join(fx.Dir, fileTunnelClient), "--tunnel-key", filepath.Join(fx.Dir, fileTunnelCKey),
		"--tunnel-ca", filepath.Join(fx.Dir, fileTunnelCA), "--admin=127.0.0.1:0", "--metrics=127.0.0.1:0", "--pid-file=",
		"--log-format", "json")
	server.WaitLine(t, `"event":"partner_listener_opened"`)

	send := func(name, id, password, cert string, files ...string) *proc {
		args := []string{"send", "--connect", listen, "--server-name", "localhost",
			"--cert", path(cert + ".pem"), "--key", path(cert + "-key.pem"), "--ca", filepath.Join(fx.Dir, fileCompanyCA),
			"--odette-id", id, "--password", password, "--partner-id", companyID, "--partner-password", companyPassword}
		return startProc(t, name, filepath.Join(bin, "oftp2"), append(args, files...)...)
	}
	f := makeFile(t, work, "invoices.edi", oftp2.FormatText, 64<<10, 1)
	if err := send("oftp2 send", partnerID, partnerPassword, "partner", f.out.Path).Wait(t, time.Minute); err != nil {
		t.Fatalf("oftp2 send: %v", err)
	}
	serve.WaitStdout(t, regexp.MustCompile("sha256="+f.sha), 1)
	client.WaitLine(t, `"event":"session_ended"`)
	if err := send("oftp2 send unknown", unknownID, "", "unknown", f.out.Path).Wait(t, time.Minute); err == nil {
		t.Error("oftp2 send as an unknown partner succeeded")
	}
	client.WaitLog(t, regexp.MustCompile(`"event":"partner_unknown".*"source":"server"`), 1)
	for _, p := range []*proctest.Proc{server, client} {
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		p.WaitLine(t, `"new_level":"debug"`)
	}
	if err := client.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	client.WaitLine(t, `SIGHUP: configuration unchanged`)
	client.Stop(t)
	server.Stop(t)

	for _, p := range []*proctest.Proc{server, client} {
		checkJSONLog(t, p.Name, p.Stderr.String())
	}
	// The same fact has one name: both daemons log the session's start and end, and the
	// server's tunnel_connected carries the tunnel_index as a number.
	for _, c := range []struct {
		p    *proctest.Proc
		want []string
	}{
		{server, []string{`"event":"session_started"`, `"event":"session_ended"`, `"tunnel_index":0`}},
		{client, []string{`"event":"session_started"`, `"event":"session_ended"`}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.p.Stderr.String(), w) {
				t.Errorf("%s's log lacks %s", c.p.Name, w)
			}
		}
	}
}

// checkJSONLog checks that every line of log is a JSON object whose fields have their declared
// types, and that every event name in it is catalogued.
func checkJSONLog(t *testing.T, who, log string) {
	t.Helper()
	lines, events := 0, 0
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("%s: not a JSON line: %q", who, sc.Text())
			continue
		}
		lines++
		for k, v := range m {
			var got event.Kind
			switch v.(type) {
			case string:
				got = event.String
			case float64:
				got = event.Number
			case bool:
				got = event.Bool
			default:
				t.Errorf("%s: field %s = %v (%T): want a string, number or boolean", who, k, v, v)
				continue
			}
			if want := event.KindOf(k); got != want {
				t.Errorf("%s: field %s is a %s (%v), declared a %s: %s", who, k, got, v, want, sc.Text())
			}
		}
		if name, ok := m["event"].(string); ok {
			events++
			if _, ok := event.Lookup(name); !ok {
				t.Errorf("%s: event %s is not catalogued", who, name)
			}
		}
	}
	if lines < 10 || events < 5 {
		t.Errorf("%s wrote %d JSON lines with %d events; the test saw too little", who, lines, events)
	}
}
