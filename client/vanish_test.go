package client_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"smartproxy/client"
	"smartproxy/client/clienttest"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// TestInternalVanishes: the internal OFTP2 server answers the SSID and then closes its
// connection without ESID. That is an abnormal end: the client logs the connection as lost and
// aborts the session, so that the DMZ server sends the partner an ESID — never a half-close that
// looks like a normal end.
func TestInternalVanishes(t *testing.T) {
	opened := make(chan struct{})
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		if _, err := r.ReadBuffer(); err != nil {
			return
		}
		<-opened
		w.WriteCommand(responderSSID)
		// Return: the connection closes without ESID.
	})
	e := newEnv(t, envOptions{internalAddr: internal.addr()})
	conn := e.srv.WaitConn(t, waitLong)
	conn.WaitConfig(t, waitLong)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ts, err := conn.Open(ctx, clienttest.PartnerID, "192.0.2.1:5000", ssid(t, clienttest.PartnerID, clienttest.PartnerPassword))
	if err != nil {
		t.Fatalf("Open() = %v, want accepted", err)
	}
	close(opened)
	// The internal server's SSID may be dropped with the abort that follows it at once.
	for err == nil {
		var b []byte
		if b, err = ts.ReadBuffer(ctx); err == nil && oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
			t.Fatalf("buffer %q from the client; want only the internal server's SSID", b)
		}
	}
	var ce *tunnel.CloseError
	if !errors.As(err, &ce) || !ce.Remote || ce.Reason != tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED || ce.ESID != uint32(oftp2.ESIDLocalEmergency) {
		t.Fatalf("ReadBuffer() after the internal server closed = %v, want an abort PEER_CLOSED with ESID 05", err)
	}
	waitFor(t, "the session_ended line", func() bool { return e.logged(client.EventSessionEnded) != nil })
	if got := e.logged(client.EventSessionEnded).Data["reason"]; got != "internal_connection_lost" {
		t.Errorf("session_ended reason = %v, want internal_connection_lost", got)
	}
}
