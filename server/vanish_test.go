package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// TestPartnerVanishes closes the partner's connection without ESID, once between commands
// and once in the middle of a file: the server logs the end as partner_connection_lost (never
// normal), and the internal server receives an ESID.
func TestPartnerVanishes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before func(t *testing.T, rp *servertest.RawPartner)
	}{
		{"between commands", func(*testing.T, *servertest.RawPartner) {}},
		{"mid-file", func(t *testing.T, rp *servertest.RawPartner) {
			write(t, rp, mustAppend(t, &oftp2.SFID{DatasetName: "VANISH", Stamp: oftp2.Timestamp{Time: time.Now().Truncate(time.Second), Counter: 1},
				Destination: "O0013COMPANY", Originator: "O0013PARTNER", Format: oftp2.FormatUnstructured, FileSize: 4, OriginalFileSize: 4}))
			b, err := rp.Read(10 * time.Second)
			if err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSFPA {
				t.Fatalf("after SFID: %q, %v; want SFPA", b, err)
			}
			write(t, rp, []byte{byte(oftp2.CodeDATA), 0x05, 'h', 'e', 'l', 'l', 'o'})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := servertest.NewPKI(t)
			env := newEnv(t, p, p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER")), envOptions{})
			leaf := p.Partner(t, "O0013PARTNER", nil)
			rp, err := servertest.DialPartner(env.s.PartnerAddr(), &leaf.TLS, env.pki.CompanyCA.Pool())
			if err != nil {
				t.Fatal(err)
			}
			defer rp.Close()
			if err := rp.ExpectSSRM(); err != nil {
				t.Fatal(err)
			}
			write(t, rp, servertest.SSID(t, "O0013PARTNER", "", func(s *oftp2.SSID) { s.Mode = oftp2.ModeSender }))
			if b, err := rp.Read(10 * time.Second); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
				t.Fatalf("waiting for the responder's SSID: %q, %v", b, err)
			}
			tc.before(t, rp)
			rp.Close()

			ended := env.logEntry(t, EventSessionEnded, nil)
			if got := ended.Data["reason"]; got != "partner_connection_lost" {
				t.Errorf("session_ended reason = %v, want partner_connection_lost", got)
			}
			if ended.Level > logrus.WarnLevel {
				t.Errorf("session_ended logged at %s, want warning", ended.Level)
			}
			results, err := env.responder.WaitResults(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			var se *endpoint.SessionError
			if !errors.As(results[0].Err, &se) || !se.Remote || se.Reason != oftp2.ESIDLocalEmergency {
				t.Errorf("internal server ended with %v, want ESID 05 from the proxy", results[0].Err)
			}
		})
	}
}
