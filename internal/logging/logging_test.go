package logging

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestNewFormats(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := New(Options{Format: "json", Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	log.WithField("event", "x").Info("hello")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("json output %q: %v", buf.String(), err)
	}
	if m["event"] != "x" || m["msg"] != "hello" || m["level"] != "info" {
		t.Errorf("json line = %v, want event=x msg=hello level=info", m)
	}
	if _, _, err := New(Options{Format: "xml"}); err == nil {
		t.Error(`New(Format "xml") = nil error, want error`)
	}
	if got := log.GetLevel(); got != logrus.InfoLevel {
		t.Errorf("default level = %v, want info", got)
	}
}

func TestDailyFileRolls(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 3, 1, 23, 59, 59, 0, time.Local)
	d, err := NewDailyFile(dir, "srv", Retention{}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Write([]byte("one\n"))
	now = now.Add(2 * time.Second)
	d.Write([]byte("two\n"))
	for name, want := range map[string]string{"srv-2026-03-01.log": "one\n", "srv-2026-03-02.log": "two\n"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if string(b) != want {
			t.Errorf("%s = %q, want %q", name, b, want)
		}
	}
}

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	base, _, err := New(Options{Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	lv := NewLevels(base)
	s1 := lv.Session("s1")
	s2 := lv.Session("s2")
	if err := lv.SetSession("s1", logrus.DebugLevel, "test"); err != nil {
		t.Fatal(err)
	}
	s1.Debug("s1 debug")
	s2.Debug("s2 debug")
	if !strings.Contains(buf.String(), "s1 debug") || strings.Contains(buf.String(), "s2 debug") {
		t.Errorf("per-session level: log = %q, want s1 debug only", buf.String())
	}
	if !strings.Contains(buf.String(), "event=log_level_changed") {
		t.Errorf("session level change not logged: %q", buf.String())
	}
	// A global change moves s2 (no override) but not s1.
	if got := lv.Step(-1, "SIGUSR2"); got != logrus.WarnLevel {
		t.Errorf("Step(-1) from info = %v, want warning", got)
	}
	if s2.GetLevel() != logrus.WarnLevel || s1.GetLevel() != logrus.DebugLevel {
		t.Errorf("after global step: s1 %v s2 %v, want debug warning", s1.GetLevel(), s2.GetLevel())
	}
	for i := 0; i < 10; i++ {
		lv.Step(+1, "SIGUSR1")
	}
	if got := lv.Global(); got != logrus.TraceLevel {
		t.Errorf("Step up past trace = %v, want trace", got)
	}
	if got, own := lv.SessionLevel("s1"); !own || got != logrus.DebugLevel {
		t.Errorf("SessionLevel(s1) = %v, %v, want debug, true", got, own)
	}
	if _, own := lv.SessionLevel("s2"); own {
		t.Errorf("SessionLevel(s2) override = true, want false")
	}
	if err := lv.FollowGlobal("s1", "test"); err != nil {
		t.Fatal(err)
	}
	lv.SetGlobal(logrus.InfoLevel, "test")
	if _, own := lv.SessionLevel("s1"); own || s1.GetLevel() != logrus.InfoLevel {
		t.Errorf("after FollowGlobal and SetGlobal(info): s1 = %v (override %v), want info, false", s1.GetLevel(), own)
	}
	if err := lv.FollowGlobal("nope", "test"); err == nil {
		t.Error("FollowGlobal(unknown) = nil error, want error")
	}
	if err := lv.SetSession("nope", logrus.InfoLevel, "test"); err == nil {
		t.Error("SetSession(unknown) = nil error, want error")
	}
	lv.Release("s1")
	if got := lv.SessionIDs(); len(got) != 1 || got[0] != "s2" {
		t.Errorf("SessionIDs after Release = %v, want [s2]", got)
	}
}

func TestParseLevel(t *testing.T) {
	if l, err := ParseLevel("WARN"); err != nil || l != logrus.WarnLevel {
		t.Errorf("ParseLevel(WARN) = %v, %v, want warning", l, err)
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel(loud) = nil error, want error")
	}
}

// TestDailyFileRetention checks that opening a day's file removes this prefix's files older than
// MaxAge or beyond the newest MaxFiles, and nothing else.
func TestDailyFileRetention(t *testing.T) {
	names := func(t *testing.T, dir string) []string {
		t.Helper()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var list []string
		for _, e := range entries {
			list = append(list, e.Name())
		}
		return list
	}
	seed := func(t *testing.T) string {
		t.Helper()
		dir := t.TempDir()
		for _, n := range []string{"srv-2026-01-01.log", "srv-2026-02-20.log", "srv-2026-02-27.log", "srv-2026-02-28.log",
			"other-2025-01-01.log", "srv-notes.txt", "srv-2020-13-40.log"} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("x\n"), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// 2026-03-01 is the day the daemon (re)starts; later it rolls into 2026-03-02.
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	clock := func() time.Time { return now }
	tests := []struct {
		name string
		keep Retention
		want []string
	}{
		{"keep everything", Retention{}, []string{"other-2025-01-01.log", "srv-2020-13-40.log", "srv-2026-01-01.log", "srv-2026-02-20.log",
			"srv-2026-02-27.log", "srv-2026-02-28.log", "srv-2026-03-01.log", "srv-notes.txt"}},
		{"seven days", Retention{MaxAge: 7 * 24 * time.Hour}, []string{"other-2025-01-01.log", "srv-2020-13-40.log",
			"srv-2026-02-27.log", "srv-2026-02-28.log", "srv-2026-03-01.log", "srv-notes.txt"}},
		{"three files", Retention{MaxFiles: 3}, []string{"other-2025-01-01.log", "srv-2020-13-40.log",
			"srv-2026-02-27.log", "srv-2026-02-28.log", "srv-2026-03-01.log", "srv-notes.txt"}},
		{"one file", Retention{MaxFiles: 1, MaxAge: 365 * 24 * time.Hour}, []string{"other-2025-01-01.log", "srv-2020-13-40.log",
			"srv-2026-03-01.log", "srv-notes.txt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := seed(t)
			d, err := NewDailyFile(dir, "srv", tt.keep, clock)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if got := names(t, dir); !slices.Equal(got, tt.want) {
				t.Errorf("files after opening with %+v = %v, want %v", tt.keep, got, tt.want)
			}
		})
	}

	// A new day removes what became too old while the daemon ran.
	dir := seed(t)
	now = time.Date(2026, 3, 1, 23, 0, 0, 0, time.Local)
	d, err := NewDailyFile(dir, "srv", Retention{MaxFiles: 2}, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	now = now.Add(2 * time.Hour)
	if _, err := d.Write([]byte("next day\n")); err != nil {
		t.Fatal(err)
	}
	want := []string{"other-2025-01-01.log", "srv-2020-13-40.log", "srv-2026-03-01.log", "srv-2026-03-02.log", "srv-notes.txt"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("files after rolling into 2026-03-02 with two kept = %v, want %v", got, want)
	}
}

func TestRetentionFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    Retention
		wantErr bool
	}{
		{nil, Retention{MaxAge: 30 * 24 * time.Hour}, false},
		{[]string{"--log-max-age", "7d", "--log-max-files", "10"}, Retention{MaxAge: 7 * 24 * time.Hour, MaxFiles: 10}, false},
		{[]string{"--log-max-age", "36h"}, Retention{MaxAge: 36 * time.Hour}, false},
		{[]string{"--log-max-age", "0"}, Retention{}, false},
		{[]string{"--log-max-age", "-1d"}, Retention{}, true},
		{[]string{"--log-max-age", "week"}, Retention{}, true},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		r := AddRetentionFlags(fs)
		err := fs.Parse(tt.args)
		if (err != nil) != tt.wantErr {
			t.Errorf("parse %q: error %v, want error %v", tt.args, err, tt.wantErr)
			continue
		}
		if err == nil && *r != tt.want {
			t.Errorf("parse %q = %+v, want %+v", tt.args, *r, tt.want)
		}
	}
}

// TestLevelChangeToErrorLogged checks that lowering the level to error, which hides warnings, is
// still logged, for the daemon and for one session.
func TestLevelChangeToErrorLogged(t *testing.T) {
	var buf bytes.Buffer
	base, _, err := New(Options{Output: &buf, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	lv := NewLevels(base)
	lv.Session("s1")
	lv.SetGlobal(logrus.ErrorLevel, "SIGUSR2")
	if err := lv.SetSession("s1", logrus.ErrorLevel, "admin"); err != nil {
		t.Fatal(err)
	}
	base.Warn("hidden warning")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log = %q, want exactly the two level changes", buf.String())
	}
	for i, want := range []string{"", "s1"} {
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatal(err)
		}
		if m["event"] != "log_level_changed" || m["new_level"] != "error" || (want != "" && m["session_id"] != want) {
			t.Errorf("line %d = %v, want the change to error (session %q)", i, m, want)
		}
	}
	if base.GetLevel() != logrus.ErrorLevel {
		t.Errorf("level = %v, want error", base.GetLevel())
	}
}
