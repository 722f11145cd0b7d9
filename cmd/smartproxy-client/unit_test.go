package main

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/internal/testwait"
)

// unitExecStart returns the argv of the packaged unit's ExecStart (deploy/systemd), with its
// continuation lines joined and the variables of /etc/default/smartproxy-client and the fixed
// paths replaced by vars.
func unitExecStart(t *testing.T, vars map[string]string) []string {
	t.Helper()
	data, err := os.ReadFile("../../deploy/systemd/smartproxy-client.service")
	if err != nil {
		t.Fatal(err)
	}
	var cmd strings.Builder
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			in, line = true, rest
		}
		if !in {
			continue
		}
		more := strings.HasSuffix(line, "\\")
		cmd.WriteString(strings.TrimSuffix(line, "\\") + " ")
		if !more {
			break
		}
	}
	s := cmd.String()
	for k, v := range vars {
		s = strings.ReplaceAll(s, k, v)
	}
	if strings.Contains(s, "$") || strings.Contains(s, "/etc/") || strings.Contains(s, "/run/") {
		t.Fatalf("unreplaced variable or path in ExecStart: %s", s)
	}
	return strings.Fields(s)
}

// TestUnitKeepsTokenOutOfArgv starts the client exactly as the packaged unit does with the
// backend as its source (-U, the token as the systemd credential in $CREDENTIALS_DIRECTORY) and
// shows, once the backend has received the token, that neither the process's argv
// (/proc/PID/cmdline, what ps shows) nor its environment holds it. The same check on a client
// started with -T TOKEN finds it: the check can fail.
func TestUnitKeepsTokenOutOfArgv(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	const token = "spt_unit-test-token-0123456789abcdef"
	var mu sync.Mutex
	var seen []string // Authorization headers the backend received
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, `{"error":{"code":"unavailable","message":"not yet"}}`, http.StatusServiceUnavailable)
	}))
	defer api.Close()
	apiCA := filepath.Join(dir, "api-ca.pem")
	if err := os.WriteFile(apiCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	// The tunnel files under the names the unit uses.
	files, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	tunnelDir := filepath.Join(dir, "tunnel")
	if err := os.Mkdir(tunnelDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{pki.FileClientCert: "client.pem", pki.FileClientKey: "client-key.pem", pki.FileCACert: "tunnel-ca.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, "pki", src))
		if err != nil {
			t.Fatal(err, files)
		}
		if err := os.WriteFile(filepath.Join(tunnelDir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// LoadCredential=token:/etc/smartproxy/client-token: systemd copies the file into the
	// credentials directory and names it in $CREDENTIALS_DIRECTORY.
	creds := filepath.Join(dir, "credentials")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(creds, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := unitExecStart(t, map[string]string{
		"/usr/bin/smartproxy-client": bin,
		"${SMARTPROXY_SERVER}":       "127.0.0.1:1",
		// The backend example of /etc/default/smartproxy-client, and StateDirectory=.
		"$SMARTPROXY_CLIENT_OPTS":                      "-U " + api.URL + " --api-ca " + apiCA + " --state-dir " + filepath.Join(dir, "state"),
		"/etc/smartproxy/tunnel/":                      tunnelDir + "/",
		"127.0.0.1:2880":                               "127.0.0.1:0",
		"127.0.0.1:2882":                               "127.0.0.1:0",
		"/run/smartproxy-client/smartproxy-client.pid": filepath.Join(dir, "client.pid"),
	})
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}

	tokenIn := func(p *proctest.Proc) (argv, environ bool) {
		t.Helper()
		pid := strconv.Itoa(p.Cmd.Process.Pid)
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		env, err := os.ReadFile("/proc/" + pid + "/environ")
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(cmdline, []byte(token)), bytes.Contains(env, []byte(token))
	}
	waitToken := func(p *proctest.Proc, n int) {
		t.Helper()
		testwait.For(t, 30*time.Second, "the backend to receive the token", func() bool {
			mu.Lock()
			defer mu.Unlock()
			c := 0
			for _, h := range seen {
				if h == "Bearer "+token {
					c++
				}
			}
			return c >= n
		})
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "CREDENTIALS_DIRECTORY="+creds)
	p := proctest.StartCmd(t, "smartproxy-client", cmd)
	waitToken(p, 1)
	if inArgv, inEnv := tokenIn(p); inArgv || inEnv {
		t.Errorf("packaged unit's client: token in argv %v, in the environment %v; want neither", inArgv, inEnv)
	}
	if !regexp.MustCompile(`-U https://127\.0\.0\.1:\d+ `).MatchString(strings.Join(argv, " ") + " ") {
		t.Errorf("argv %q does not start the client with -U", argv)
	}
	p.Stop(t)

	// The control: -T puts the token where ps shows it.
	withT := append(append([]string{}, argv[1:]...), "-T", token)
	q := proctest.Start(t, "smartproxy-client -T", argv[0], withT...)
	waitToken(q, 2)
	if inArgv, _ := tokenIn(q); !inArgv {
		t.Error("a client started with -T: the token is not found in /proc/PID/cmdline; the check above proves nothing")
	}
	q.Stop(t)
}
