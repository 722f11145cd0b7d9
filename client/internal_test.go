package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
)

func ssidBuffer(t *testing.T, id, password string) []byte {
	t.Helper()
	b, err := (&oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: 4096, Mode: oftp2.ModeSender,
		Restart: true, Credit: 16}).Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckIncoming(t *testing.T) {
	snap := &Snapshot{Version: 7, Security: &tunnelv1.SecurityConfig{Partners: []*tunnelv1.Partner{
		{OdetteId: "PARTNER", Enabled: true, Password: "SECRET"},
		{OdetteId: "NOPW", Enabled: true},
		{OdetteId: "lower_case", Enabled: true, CharsetPolicy: tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT},
		{OdetteId: "OFF", Enabled: false},
		{OdetteId: "OUTONLY", Enabled: true, DirectionPolicy: tunnelv1.DirectionPolicy_DIRECTION_POLICY_OUTGOING_ONLY},
	}}}
	ssrm, _ := (&oftp2.SSRM{}).Append(nil)
	tests := []struct {
		name     string
		partner  string
		ssid     []byte
		wantESID oftp2.ESIDReason // 0 with wantOK
		wantOK   bool
		wantText string
	}{
		{"partner with password", "PARTNER", ssidBuffer(t, "PARTNER", "SECRET"), 0, true, ""},
		{"partner without password", "NOPW", ssidBuffer(t, "NOPW", "ANY"), 0, true, ""},
		{"lenient partner", "lower_case", ssidBuffer(t, "lower_case", ""), 0, true, ""},
		{"wrong password", "PARTNER", ssidBuffer(t, "PARTNER", "WRONG"), oftp2.ESIDInvalidPassword, false, "wrong SSID password"},
		{"password case differs", "PARTNER", ssidBuffer(t, "PARTNER", "SECRE"), oftp2.ESIDInvalidPassword, false, "wrong SSID password"},
		{"unknown partner", "STRANGER", ssidBuffer(t, "STRANGER", ""), oftp2.ESIDUserCodeNotKnown, false, "not in configuration version 7"},
		{"disabled partner", "OFF", ssidBuffer(t, "OFF", ""), oftp2.ESIDUserCodeNotKnown, false, "disabled"},
		{"outgoing only", "OUTONLY", ssidBuffer(t, "OUTONLY", ""), oftp2.ESIDUserCodeNotKnown, false, "direction outgoing"},
		{"SSID of another partner", "NOPW", ssidBuffer(t, "PARTNER", "SECRET"), oftp2.ESIDUserCodeNotKnown, false, "the SSID names"},
		{"not an SSID", "NOPW", ssrm, oftp2.ESIDProtocolViolation, false, "instead of an SSID"},
		{"truncated SSID", "NOPW", ssidBuffer(t, "NOPW", "")[:40], oftp2.ESIDBufferSizeError, false, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, oe := checkIncoming(snap, &tunnelv1.SessionOpen{PartnerOdetteId: tt.partner, Ssid: tt.ssid})
			if tt.wantOK {
				if oe != nil || p.GetOdetteId() != tt.partner {
					t.Fatalf("checkIncoming(%s) = %v, %v; want partner %s", tt.name, p, oe, tt.partner)
				}
				return
			}
			if oe == nil {
				t.Fatalf("checkIncoming(%s) = nil error, want ESID %d", tt.name, tt.wantESID)
			}
			if oe.ESID != tt.wantESID || oe.Reason != tunnelv1.AbortReason_ABORT_REASON_REFUSED || oe.Event != EventPartnerRefused {
				t.Errorf("checkIncoming(%s) = ESID %d reason %v event %s, want ESID %d, REFUSED, %s", tt.name, oe.ESID, oe.Reason, oe.Event, tt.wantESID, EventPartnerRefused)
			}
			if !strings.Contains(oe.Text, tt.wantText) {
				t.Errorf("checkIncoming(%s) text = %q, want it to contain %q", tt.name, oe.Text, tt.wantText)
			}
			if strings.Contains(oe.Error(), "SECRET") || strings.Contains(oe.Error(), "WRONG") {
				t.Errorf("checkIncoming(%s) = %q shows a password", tt.name, oe)
			}
		})
	}
}

// fakeInternal is a scripted internal OFTP2 server on loopback: for each connection it runs
// script with a codec reader and writer.
type fakeInternal struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newFakeInternal(t *testing.T, tlsCfg *tls.Config, script func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer)) *fakeInternal {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	f := &fakeInternal{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer conn.Close()
				script(conn, oftp2.NewReader(conn, 0), oftp2.NewWriter(conn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeInternal) addr() string { return f.ln.Addr().String() }

func TestConnectInternal(t *testing.T) {
	ssid := ssidBuffer(t, "PARTNER", "SECRET")
	got := make(chan []byte, 1)
	srv := newFakeInternal(t, nil, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		if err := w.WriteCommand(&oftp2.SSRM{}); err != nil {
			return
		}
		b, err := r.ReadBuffer()
		if err != nil {
			return
		}
		got <- append([]byte(nil), b...)
		w.WriteCommand(&oftp2.SSID{Level: 5, ID: "COMPANY", BufferSize: 4096, Mode: oftp2.ModeReceiver, Credit: 16})
		r.ReadBuffer() // wait for the client to close
	})
	ic, err := connectInternal(context.Background(), InternalServer{Address: srv.addr()}, nil, ssid)
	if err != nil {
		t.Fatalf("connectInternal() = %v, want no error", err)
	}
	defer ic.conn.Close()
	if b := <-got; string(b) != string(ssid) {
		t.Errorf("internal server received %q, want the partner's SSID %q", b, ssid)
	}
	// The first buffer the client reads after connecting is the server's SSID: the SSRM was
	// consumed.
	b, err := ic.r.ReadBuffer()
	if err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
		t.Fatalf("first buffer after connect = %q, %v; want the internal server's SSID", b, err)
	}
}

func TestConnectInternalTLS(t *testing.T) {
	ca, err := pki.NewCA("internal CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Request{CommonName: "localhost", DNSNames: []string{"localhost"}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	srv := newFakeInternal(t, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		r.ReadBuffer()
		r.ReadBuffer()
	})
	ssid := ssidBuffer(t, "PARTNER", "")
	t.Run("trusted", func(t *testing.T) {
		ic, err := connectInternal(context.Background(), InternalServer{Address: srv.addr(), TLS: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}, nil, ssid)
		if err != nil {
			t.Fatalf("connectInternal() = %v, want no error", err)
		}
		ic.conn.Close()
	})
	t.Run("untrusted", func(t *testing.T) {
		_, err := connectInternal(context.Background(), InternalServer{Address: srv.addr(), TLS: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "localhost"}}, nil, ssid)
		var oe *OpenError
		if !errors.As(err, &oe) || oe.Reason != tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED || oe.ESID != oftp2.ESIDResourcesNotAvailable {
			t.Fatalf("connectInternal() = %v, want CONNECT_FAILED with ESID 08", err)
		}
		var ve *tls.CertificateVerificationError
		if !errors.As(err, &ve) {
			t.Errorf("connectInternal() = %v, want it to wrap the certificate verification error", err)
		}
	})
}

func TestConnectInternalFailures(t *testing.T) {
	ssid := ssidBuffer(t, "PARTNER", "")
	// A port nobody listens on: listen, note the address, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()

	busy := newFakeInternal(t, nil, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.ESID{Reason: oftp2.ESIDLocalEmergency, Text: "maintenance"})
	})
	wrong := newFakeInternal(t, nil, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteBuffer(ssid) // an SSID where the SSRM belongs
		r.ReadBuffer()
	})
	garbage := newFakeInternal(t, nil, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		conn.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
		r.ReadBuffer()
	})
	hangup := newFakeInternal(t, nil, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {})
	silent := newFakeInternal(t, nil, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) { r.ReadBuffer() })

	tests := []struct {
		name    string
		is      InternalServer
		cancel  bool
		esid    oftp2.ESIDReason
		event   string
		wantMsg string
	}{
		{"server down", InternalServer{Address: down}, false, oftp2.ESIDResourcesNotAvailable, EventInternalConnectFailed, "connecting to the internal OFTP2 server"},
		{"server answers ESID", InternalServer{Address: busy.addr()}, false, oftp2.ESIDLocalEmergency, EventInternalConnectFailed, `ESID 05`},
		{"SSID instead of SSRM", InternalServer{Address: wrong.addr()}, false, oftp2.ESIDResourcesNotAvailable, EventInternalProtocolError, "instead of SSRM"},
		{"not OFTP2", InternalServer{Address: garbage.addr()}, false, oftp2.ESIDResourcesNotAvailable, EventInternalProtocolError, "malformed stream header"},
		{"server hangs up", InternalServer{Address: hangup.addr()}, false, oftp2.ESIDResourcesNotAvailable, EventInternalConnectFailed, "reading SSRM"},
		{"no SSRM in time", InternalServer{Address: silent.addr(), SSRMTimeout: 100 * time.Millisecond}, false, oftp2.ESIDResourcesNotAvailable, EventInternalConnectFailed, "no SSRM"},
		{"cancelled while waiting", InternalServer{Address: silent.addr()}, true, oftp2.ESIDResourcesNotAvailable, EventInternalConnectFailed, "reading SSRM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			ic, err := connectInternal(ctx, tt.is, nil, ssid)
			if err == nil {
				ic.conn.Close()
				t.Fatalf("connectInternal() = nil error, want one")
			}
			var oe *OpenError
			if !errors.As(err, &oe) {
				t.Fatalf("connectInternal() = %v, want an *OpenError", err)
			}
			if oe.Reason != tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED || oe.ESID != tt.esid || oe.Event != tt.event {
				t.Errorf("connectInternal() = reason %v ESID %d event %s, want CONNECT_FAILED ESID %d %s", oe.Reason, oe.ESID, oe.Event, tt.esid, tt.event)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("connectInternal() = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}
