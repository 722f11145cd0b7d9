package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
	d, err := NewDailyFile(dir, "srv", func() time.Time { return now })
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
