package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
)

// TestSessionTrace sets one of two open sessions to TRACE through the admin backend: each
// command of that session, both ways, is logged with its key fields, and the other session
// logs no trace line.
func TestSessionTrace(t *testing.T) {
	p := servertest.NewPKI(t)
	env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
	leaf := p.Partner(t, "O0013PARTNER", nil)
	open := func() *servertest.RawPartner {
		rp, err := servertest.DialPartner(env.s.PartnerAddr(), &leaf.TLS, env.pki.CompanyCA.Pool())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rp.Close() })
		if err := rp.ExpectSSRM(); err != nil {
			t.Fatal(err)
		}
		write(t, rp, servertest.SSID(t, "O0013PARTNER", "", func(s *oftp2.SSID) { s.Mode = oftp2.ModeSender }))
		if b, err := rp.Read(10 * time.Second); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
			t.Fatalf("waiting for the responder's SSID: %q, %v", b, err)
		}
		return rp
	}
	traced, quiet := open(), open()
	ctx := context.Background()
	sessions, err := env.s.Admin().Sessions(ctx)
	if err != nil || len(sessions) != 2 {
		t.Fatalf("Sessions() = %v, %v; want the two open sessions", sessions, err)
	}
	tracedID, quietID := sessions[0].ID, sessions[1].ID
	if _, err := env.s.Admin().SetLogLevel(ctx, tracedID, tunnelv1.LogLevel_LOG_LEVEL_TRACE, "test"); err != nil {
		t.Fatal(err)
	}

	sfid := func(name string) []byte {
		return mustAppend(t, &oftp2.SFID{DatasetName: name, Stamp: oftp2.Timestamp{Time: time.Now().Truncate(time.Second), Counter: 1},
			Destination: "O0013COMPANY", Originator: "O0013PARTNER", Format: oftp2.FormatUnstructured, FileSize: 4, OriginalFileSize: 4})
	}
	// The sessions were opened in this order, so the lower id is the first partner's.
	for _, s := range []struct {
		rp   *servertest.RawPartner
		name string
	}{{traced, "TRACED"}, {quiet, "QUIET"}} {
		write(t, s.rp, sfid(s.name))
		if b, err := s.rp.Read(10 * time.Second); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSFPA {
			t.Fatalf("after SFID %s: %q, %v; want SFPA", s.name, b, err)
		}
	}

	var lines []string
	for _, en := range env.hook.AllEntries() {
		if en.Level != logrus.TraceLevel {
			continue
		}
		id := fmt.Sprint(en.Data["session_id"])
		if id == fmt.Sprint(quietID) {
			t.Errorf("trace line of the session without TRACE: %s %v", en.Message, en.Data)
		}
		if id == fmt.Sprint(tracedID) {
			lines = append(lines, fmt.Sprintf("%v>%v %s", en.Data["from"], en.Data["to"], en.Message))
		}
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{`partner>inside SFID len=`, `dataset="TRACED"`, `inside>partner SFPA len=`} {
		if !strings.Contains(text, want) {
			t.Errorf("trace lines of the traced session:\n%s\nwant one containing %q", text, want)
		}
	}
}
