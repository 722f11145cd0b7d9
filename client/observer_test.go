package client_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/client"
	"smartproxy/client/clienttest"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/event"
)

// recorder is a client.Observer that keeps what it is told.
type recorder struct {
	mu       sync.Mutex
	results  []client.ConfigResult
	events   []*tunnelv1.Event
	urls     [][]string
	licenses []*tunnelv1.LicenseStatus
	own      []event.Event
}

func (r *recorder) ConfigResult(cr client.ConfigResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, cr)
}

func (r *recorder) ServerEvent(ev *tunnelv1.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) CRLURLs(urls []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.urls = append(r.urls, urls)
}

func (r *recorder) LicenseStatus(l *tunnelv1.LicenseStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.licenses = append(r.licenses, l)
}

func (r *recorder) ClientEvent(e event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.own = append(r.own, e)
}

func (r *recorder) snapshot() recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return recorder{results: append([]client.ConfigResult(nil), r.results...), events: append([]*tunnelv1.Event(nil), r.events...),
		urls: append([][]string(nil), r.urls...), licenses: append([]*tunnelv1.LicenseStatus(nil), r.licenses...),
		own: append([]event.Event(nil), r.own...)}
}

func TestObserver(t *testing.T) {
	rec := &recorder{}
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305", observer: rec, server: clienttest.ServerConfig{
		ProxyID: "PROXY-1", License: &tunnelv1.LicenseStatus{Valid: false, Reason: "no license installed"}}})
	conn := e.srv.WaitConn(t, waitLong)
	snap := conn.WaitConfig(t, waitLong)
	waitFor(t, "the configuration result", func() bool { return len(rec.snapshot().results) == 1 })
	if got := rec.snapshot().results[0]; got.Version != snap.GetVersion() || !got.Applied || got.ProxyID != "PROXY-1" || len(got.Errors) != 0 {
		t.Errorf("ConfigResult = %+v, want version %d applied by PROXY-1", got, snap.GetVersion())
	}
	if got := rec.snapshot().licenses; len(got) != 1 || got[0].GetProxyId() != "PROXY-1" || got[0].GetValid() {
		t.Errorf("LicenseStatus from Welcome = %v, want the invalid license of PROXY-1", got)
	}
	ctx := context.Background()
	for _, f := range []*tunnelv1.Frame{
		{Kind: &tunnelv1.Frame_Event{Event: &tunnelv1.Event{Name: "partner_unknown", Severity: tunnelv1.Severity_SEVERITY_CRITICAL, OdetteId: "STRANGER"}}},
		{Kind: &tunnelv1.Frame_CrlUrlReport{CrlUrlReport: &tunnelv1.CrlUrlReport{Urls: []string{"http://crl.other.test/a.crl"}}}},
		{Kind: &tunnelv1.Frame_LicenseStatus{LicenseStatus: &tunnelv1.LicenseStatus{ProxyId: "PROXY-1", Valid: true}}},
	} {
		if err := conn.Send(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the second license state", func() bool { return len(rec.snapshot().licenses) == 2 })
	got := rec.snapshot()
	if len(got.events) != 1 || got.events[0].GetName() != "partner_unknown" || got.events[0].GetOdetteId() != "STRANGER" {
		t.Errorf("ServerEvent = %v, want the partner_unknown event", got.events)
	}
	if len(got.urls) != 1 || len(got.urls[0]) != 1 || got.urls[0][0] != "http://crl.other.test/a.crl" {
		t.Errorf("CRLURLs = %v, want the reported URL", got.urls)
	}
	if !got.licenses[1].GetValid() {
		t.Errorf("second LicenseStatus = %v, want valid", got.licenses[1])
	}
	// The client's own warnings reach the Observer as it emits them; the server's events are
	// relayed as ServerEvent only.
	conn.Drop()
	waitFor(t, "the client's own tunnel_down event", func() bool {
		return slices.ContainsFunc(rec.snapshot().own, func(e event.Event) bool { return e.Name == client.EventTunnelDown })
	})
	for _, e := range rec.snapshot().own {
		if e.Name == "partner_unknown" || e.Level() > logrus.WarnLevel {
			t.Errorf("ClientEvent(%+v): want only the client's own warnings and errors", e)
		}
	}
}

func TestSetLicense(t *testing.T) {
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305", server: clienttest.ServerConfig{ProxyID: "PROXY-1"}})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	if err := e.client.SetLicense(nil); err == nil {
		t.Error("SetLicense(nil) = nil, want an error")
	}
	lic := []byte("license file v1")
	if err := e.client.SetLicense(lic); err != nil {
		t.Fatal(err)
	}
	waitLicense := func(c *clienttest.Conn, want []byte) {
		t.Helper()
		select {
		case got := <-c.Licenses():
			if !bytes.Equal(got, want) {
				t.Errorf("pushed license = %q, want %q", got, want)
			}
		case <-time.After(waitLong):
			t.Fatalf("no LicenseUpdate with %q", want)
		}
	}
	waitLicense(conn, lic)
	// The same content again is not pushed again; new content is.
	if err := e.client.SetLicense(append([]byte(nil), lic...)); err != nil {
		t.Fatal(err)
	}
	lic2 := []byte("license file v2")
	if err := e.client.SetLicense(lic2); err != nil {
		t.Fatal(err)
	}
	waitLicense(conn, lic2)
	// A reconnect to the same server (Proxy ID) does not push the license it already has.
	conn.Drop()
	conn2 := e.srv.WaitConn(t, waitLong)
	conn2.WaitConfig(t, waitLong)
	select {
	case got := <-conn2.Licenses():
		t.Errorf("license %q pushed again after a reconnect to the same server", got)
	case <-time.After(300 * time.Millisecond):
	}
	select {
	case got := <-conn.Licenses():
		t.Errorf("unexpected further license %q on the first stream", got)
	default:
	}
}
