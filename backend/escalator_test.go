package backend

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
)

// writeScript writes an executable shell script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// processGone reports whether no live process has the ID pid (a zombie
// waiting for its parent counts as gone: it runs no more).
func processGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses, which may contain spaces.
	rest := stat[strings.LastIndexByte(string(stat), ')')+1:]
	return len(strings.Fields(string(rest))) > 0 && strings.Fields(string(rest))[0] == "Z"
}

// escalatorEnv runs an Escalator on a fresh store.
type escalatorEnv struct {
	st       *store.Store
	esc      *Escalator
	logs     *logBuffer
	clientID int64
}

func newEscalatorEnv(t *testing.T, cfg EscalatorConfig, now func() time.Time) *escalatorEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "api.db"), store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateToken(ctx, "dmz-1"); err != nil {
		t.Fatal(err)
	}
	clients, err := st.Clients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger()
	esc, err := NewEscalator(st, cfg, log, now)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- esc.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
		st.Close()
	})
	return &escalatorEnv{st: st, esc: esc, logs: logs, clientID: clients[0].ID}
}

// add stores events and submits the new ones.
func (e *escalatorEnv) add(t *testing.T, evs ...store.Event) []store.Event {
	t.Helper()
	fresh, _, err := e.st.AddEvents(context.Background(), e.clientID, evs)
	if err != nil {
		t.Fatal(err)
	}
	e.esc.Submit(fresh)
	return fresh
}

// outcome waits until the event with id has an outcome and returns it.
func (e *escalatorEnv) outcome(t *testing.T, id string) string {
	t.Helper()
	var got string
	waitFor(t, "the outcome of event "+id, func() bool {
		evs, err := e.st.Events(context.Background(), store.EventFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.ID == id {
				got = ev.Outcome
			}
		}
		return got != ""
	})
	return got
}

func TestEventScriptEnvironment(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "on-event.sh",
		`env | grep '^SMARTPROXY_EVENT_' | sort > "`+dir+`/$SMARTPROXY_EVENT_ID.env"`+"\n")
	e := newEscalatorEnv(t, EscalatorConfig{Script: script}, nil)
	at := time.Date(2026, 3, 1, 10, 15, 30, 123456789, time.UTC)
	e.add(t, store.Event{ID: "ev1", Time: at, Severity: "critical", Name: "partner_unknown", SessionID: 123,
		OdetteID: "O0013NOBODY", RemoteAddr: "198.51.100.7:40001", Message: "SSID from an unknown partner; it's 'quoted'",
		Fields: map[string]string{"esid": "04", "tls_subject": "CN=x"}, Source: "server"})
	if got := e.outcome(t, "ev1"); got != "script exit 0" {
		t.Fatalf("outcome = %q, want script exit 0\n%s", got, e.logs)
	}
	b, err := os.ReadFile(filepath.Join(dir, "ev1.env"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SMARTPROXY_EVENT_CLIENT=dmz-1",
		`SMARTPROXY_EVENT_FIELDS={"esid":"04","tls_subject":"CN=x"}`,
		"SMARTPROXY_EVENT_ID=ev1",
		"SMARTPROXY_EVENT_LINE=event=partner_unknown severity=critical source=server client=dmz-1 session_id=123 odette_id=O0013NOBODY remote_addr=198.51.100.7:40001 message=SSID from an unknown partner; it's 'quoted' esid=04 tls_subject=CN=x",
		"SMARTPROXY_EVENT_MESSAGE=SSID from an unknown partner; it's 'quoted'",
		"SMARTPROXY_EVENT_NAME=partner_unknown",
		"SMARTPROXY_EVENT_ODETTE_ID=O0013NOBODY",
		"SMARTPROXY_EVENT_REMOTE_ADDR=198.51.100.7:40001",
		"SMARTPROXY_EVENT_SESSION_ID=123",
		"SMARTPROXY_EVENT_SEVERITY=critical",
		"SMARTPROXY_EVENT_SOURCE=server",
		"SMARTPROXY_EVENT_TIME=2026-03-01T10:15:30.123456789Z",
	}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("script environment:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(e.logs.lines("event=event_script_done", "event_id=ev1")) != 1 {
		t.Errorf("no event_script_done line:\n%s", e.logs)
	}
}

func TestEventIgnoreRulesAndSeverity(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "on-event.sh", `touch "`+dir+`/$SMARTPROXY_EVENT_ID.ran"`+"\n")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEscalatorEnv(t, EscalatorConfig{Script: script}, func() time.Time { return now })
	ctx := context.Background()
	rule, err := e.st.AddIgnoreRule(ctx, store.IgnoreRule{Substring: "REMOTE_ADDR=198.51.100.7", Description: "monitoring probe"})
	if err != nil {
		t.Fatal(err)
	}
	// A rule whose window has not begun does not apply.
	if _, err := e.st.AddIgnoreRule(ctx, store.IgnoreRule{Substring: "tls_handshake_failed", ValidFrom: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e.add(t,
		store.Event{ID: "probe", Time: now, Severity: "critical", Name: "partner_unknown", RemoteAddr: "198.51.100.7:5000", Source: "server"},
		store.Event{ID: "later", Time: now, Severity: "error", Name: "tls_handshake_failed", RemoteAddr: "203.0.113.9:1", Source: "server"},
		store.Event{ID: "quiet", Time: now, Severity: "info", Name: "tunnel_up", Source: "client"},
	)
	if got, want := e.outcome(t, "probe"), "ignored by rule "+itoa(rule.ID); got != want {
		t.Errorf("outcome(probe) = %q, want %q", got, want)
	}
	if got := e.outcome(t, "later"); got != "script exit 0" {
		t.Errorf("outcome(later) = %q, want the script run (the rule is not valid yet)", got)
	}
	if got := e.outcome(t, "quiet"); got != "logged" {
		t.Errorf("outcome(quiet) = %q, want logged (info is below warning)", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "probe.ran")); err == nil {
		t.Error("the script ran for an ignored event")
	}
	if _, err := os.Stat(filepath.Join(dir, "later.ran")); err != nil {
		t.Errorf("the script did not run for an escalated event: %v", err)
	}
	lines := e.logs.lines("event_id=probe")
	if len(lines) != 1 || !strings.Contains(lines[0], "level=info") || !strings.Contains(lines[0], "ignore_rule="+itoa(rule.ID)) {
		t.Errorf("log of the ignored event = %q, want one INFO line with the rule id", lines)
	}
	if l := e.logs.lines("event_id=later", "event=tls_handshake_failed"); len(l) != 1 || !strings.Contains(l[0], "level=error") {
		t.Errorf("log of the escalated event = %q, want one ERROR line", l)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestEventScriptTimeoutAndFailure(t *testing.T) {
	dir := t.TempDir()
	// The slow run leaves a child in the background and records both
	// process IDs, so that the test can see the whole group killed.
	script := writeScript(t, dir, "on-event.sh", `case "$SMARTPROXY_EVENT_ID" in
slow) sleep 30 & echo "$$ $!" > "`+dir+`/slow.pids.tmp"; mv "`+dir+`/slow.pids.tmp" "`+dir+`/slow.pids"; wait ;;
fail) echo "cannot reach the pager" >&2; exit 3 ;;
esac
`)
	// The timeout leaves the shell time to start its child and record the IDs even on a loaded
	// machine (at 300 ms it was killed first under make test-stress).
	e := newEscalatorEnv(t, EscalatorConfig{Script: script, Timeout: 2 * time.Second, MinSeverity: apiv1.SeverityError}, nil)
	now := time.Now()
	e.add(t,
		store.Event{ID: "slow", Time: now, Severity: "critical", Name: "x", Source: "server"},
		store.Event{ID: "fail", Time: now, Severity: "error", Name: "x", Source: "server"},
		store.Event{ID: "warn", Time: now, Severity: "warning", Name: "x", Source: "server"},
	)
	if got := e.outcome(t, "slow"); !strings.Contains(got, "timed out") {
		t.Errorf("outcome(slow) = %q, want a timeout", got)
	}
	pids, err := os.ReadFile(filepath.Join(dir, "slow.pids"))
	if err != nil {
		t.Fatalf("the slow script did not record its process IDs: %v", err)
	}
	for _, f := range strings.Fields(string(pids)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("slow.pids = %q", pids)
		}
		// The shell and its background sleep: the timeout kills the group.
		waitFor(t, "process "+f+" of the slow script to end", func() bool { return processGone(pid) })
	}
	if got := e.outcome(t, "fail"); got != "script failed: exit status 3" {
		t.Errorf("outcome(fail) = %q", got)
	}
	if got := e.outcome(t, "warn"); got != "logged" {
		t.Errorf("outcome(warn) = %q, want logged (below the error threshold)", got)
	}
	if l := e.logs.lines("event=event_script_timeout", "event_id=slow"); len(l) != 1 {
		t.Errorf("no event_script_timeout line:\n%s", e.logs)
	}
	if l := e.logs.lines("event=event_script_failed", "event_id=fail", "exit_code=3", "cannot reach the pager"); len(l) != 1 {
		t.Errorf("no event_script_failed line with exit code and output:\n%s", e.logs)
	}
}

func TestPendingEventsRunAfterRestart(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "on-event.sh", `touch "`+dir+`/$SMARTPROXY_EVENT_ID.ran"`+"\n")
	ctx := context.Background()
	dbPath := filepath.Join(dir, "api.db")
	st, err := store.Open(ctx, dbPath, store.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, err := st.CreateToken(ctx, "dmz-1"); err != nil {
		t.Fatal(err)
	}
	clients, _ := st.Clients(ctx)
	// Stored, but the backend stopped before processing it.
	if _, _, err := st.AddEvents(ctx, clients[0].ID, []store.Event{{ID: "left", Time: time.Now(), Severity: "critical", Name: "x", Source: "server"}}); err != nil {
		t.Fatal(err)
	}
	pending, err := st.PendingEvents(ctx, 100)
	if err != nil || len(pending) != 1 {
		t.Fatalf("PendingEvents() = %d, %v", len(pending), err)
	}
	log, _ := newLogger()
	esc, err := NewEscalator(st, EscalatorConfig{Script: script}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- esc.Run(rctx, pending) }()
	waitFor(t, "the pending event's script", func() bool {
		_, err := os.Stat(filepath.Join(dir, "left.ran"))
		return err == nil
	})
	waitFor(t, "no pending events", func() bool {
		p, _ := st.PendingEvents(ctx, 100)
		return len(p) == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
}

func TestEscalatorConfigChecked(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, cfg := range []EscalatorConfig{
		{Script: filepath.Join(dir, "missing.sh")},
		{Script: notExec},
		{Script: dir},
		{MinSeverity: "loud"},
	} {
		if _, err := NewEscalator(nil, cfg, nil, nil); err == nil {
			t.Errorf("NewEscalator(%+v) succeeded", cfg)
		}
	}
}

func TestMatchIgnoreRule(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rules := []store.IgnoreRule{
		{ID: 1, Substring: "Scanner", ValidUntil: now},                        // expired at now
		{ID: 2, Substring: "odette_id=O0013", ValidFrom: now.Add(-time.Hour)}, // valid
		{ID: 3, Substring: "ünï"},
	}
	tests := []struct {
		line string
		want int64
	}{
		{"event=x message=a scanner here", 0},
		{"event=x ODETTE_ID=o0013ABC", 2},
		{"event=x message=ÜNÏCODE", 3},
		{"event=x", 0},
	}
	for _, tc := range tests {
		r, ok := MatchIgnoreRule(rules, tc.line, now)
		if got := map[bool]int64{true: r.ID}[ok]; got != tc.want {
			t.Errorf("MatchIgnoreRule(%q) = %d, want %d", tc.line, got, tc.want)
		}
	}
}

func TestIgnoreRuleExpiry(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: start}
	now := clock.Now
	e := newEnv(t, func(c *Config) { c.Now = now })
	ctx := context.Background()
	st2, err := store.Open(ctx, e.dbPath, store.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	r, err := st2.AddIgnoreRule(ctx, store.IgnoreRule{Substring: "probe", Description: "maintenance window", ValidUntil: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := st2.AddIgnoreRule(ctx, store.IgnoreRule{Substring: "scanner"})
	if err != nil {
		t.Fatal(err)
	}
	if n := e.srv.ExpireIgnoreRules(ctx); n != 0 {
		t.Errorf("ExpireIgnoreRules(before expiry) = %d", n)
	}
	clock.Add(time.Hour)
	if n := e.srv.ExpireIgnoreRules(ctx); n != 1 {
		t.Errorf("ExpireIgnoreRules(at expiry) = %d, want 1", n)
	}
	rules, _ := e.st.IgnoreRules(ctx)
	if len(rules) != 1 || rules[0].ID != keep.ID {
		t.Errorf("rules after expiry = %+v", rules)
	}
	lines := e.logs.lines("event=ignore_rule_expired", "id="+itoa(r.ID))
	if len(lines) != 1 || !strings.Contains(lines[0], `description="maintenance window"`) || !strings.Contains(lines[0], "level=info") {
		t.Errorf("expiry log = %q\n%s", lines, e.logs)
	}
}
