package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
)

// OpenError is why an incoming session could not be opened: the partner was refused by the
// client's own checks, or the internal OFTP2 server could not be reached or misbehaved. It
// becomes SessionOpened{accepted: false} with its Reason, ESID reason and text.
type OpenError struct {
	// Reason is the tunnel's reason: ABORT_REASON_REFUSED or ABORT_REASON_CONNECT_FAILED.
	Reason tunnelv1.AbortReason
	// ESID is the reason code the partner receives in its ESID.
	ESID oftp2.ESIDReason
	// Event is the stable event name of the log line, e.g. "internal_connect_failed".
	Event string
	// Text explains it, for logs and the SessionOpened text.
	Text string
	// Err is the underlying error, if any.
	Err error
}

func (e *OpenError) Error() string {
	if e.Err != nil {
		return e.Text + ": " + e.Err.Error()
	}
	return e.Text
}

// Unwrap returns the underlying error.
func (e *OpenError) Unwrap() error { return e.Err }

// Event names of incoming sessions that could not be opened, the event field of their log line.
const (
	// EventPartnerRefused: the client's own check of the partner failed (unknown, disabled,
	// incoming not allowed, wrong password, SSID not matching the SessionOpen).
	EventPartnerRefused = "session_refused_by_client"
	// EventInternalConnectFailed: the internal OFTP2 server could not be reached, or ended the
	// connection, before the session started.
	EventInternalConnectFailed = "internal_connect_failed"
	// EventInternalProtocolError: the internal OFTP2 server did not start with a valid SSRM.
	EventInternalProtocolError = "internal_protocol_error"
)

// checkIncoming checks an incoming SessionOpen against the configuration in force: the partner
// must be configured, enabled and allowed incoming sessions; the SSID must be a valid SSID of
// that partner under its charset policy and carry its password where one is configured. The DMZ
// server has checked the same before; this is defence in depth, and it catches a partner removed
// by a configuration version the server has not applied yet.
func checkIncoming(snap *Snapshot, open *tunnelv1.SessionOpen) (*tunnelv1.Partner, *OpenError) {
	refuse := func(esid oftp2.ESIDReason, format string, args ...any) *OpenError {
		return &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_REFUSED, ESID: esid, Event: EventPartnerRefused, Text: fmt.Sprintf(format, args...)}
	}
	id := open.GetPartnerOdetteId()
	p := snap.Partner(id)
	switch {
	case p == nil:
		return nil, refuse(oftp2.ESIDUserCodeNotKnown, "partner %q is not in configuration version %d", id, snap.Version)
	case !p.GetEnabled():
		return nil, refuse(oftp2.ESIDUserCodeNotKnown, "partner %q is disabled", id)
	case p.GetDirectionPolicy() == tunnelv1.DirectionPolicy_DIRECTION_POLICY_OUTGOING_ONLY:
		return nil, refuse(oftp2.ESIDUserCodeNotKnown, "partner %q may not start sessions (direction outgoing)", id)
	}
	opts := &oftp2.ParseOptions{Charset: oftp2.CharsetStrict}
	if p.GetCharsetPolicy() == tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT {
		opts.Charset = oftp2.CharsetLenient
	}
	cmd, err := oftp2.Parse(open.GetSsid(), opts)
	if err != nil {
		return nil, refuse(oftp2.ReasonOf(err), "the SSID of the session is invalid: %v", err)
	}
	ssid, ok := cmd.(*oftp2.SSID)
	if !ok {
		return nil, refuse(oftp2.ESIDProtocolViolation, "the session carries %s instead of an SSID", cmd.Code())
	}
	if ssid.ID != id {
		return nil, refuse(oftp2.ESIDUserCodeNotKnown, "the SSID names %q, the session partner %q", ssid.ID, id)
	}
	if pw := p.GetPassword(); pw != "" && !Secret(pw).Equal(string(ssid.Password)) {
		return nil, refuse(oftp2.ESIDInvalidPassword, "partner %q sent a wrong SSID password", id)
	}
	return p, nil
}

// internalConn is a connection to the internal OFTP2 server whose SSRM has been read and
// checked and to which the partner's SSID has been written.
type internalConn struct {
	conn net.Conn
	r    *oftp2.Reader // owned by the relay's reading goroutine
	w    *oftp2.Writer // owned by the relay's writing goroutine
}

// connectInternal connects to the internal OFTP2 server, reads its SSRM under a deadline without
// passing it on (the partner already received the DMZ server's SSRM), and writes ssid, the
// partner's SSID. Every failure is an *OpenError with ABORT_REASON_CONNECT_FAILED and ESID 08
// (resources not available), or the internal server's own reason when it answered with ESID.
func connectInternal(ctx context.Context, is InternalServer, sourceIP net.IP, ssid []byte) (*internalConn, error) {
	fail := func(event string, esid oftp2.ESIDReason, err error, format string, args ...any) error {
		return &OpenError{Reason: tunnelv1.AbortReason_ABORT_REASON_CONNECT_FAILED, ESID: esid, Event: event, Text: fmt.Sprintf(format, args...), Err: err}
	}
	connectTimeout := is.ConnectTimeout
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	ssrmTimeout := is.SSRMTimeout
	if ssrmTimeout <= 0 {
		ssrmTimeout = DefaultSSRMTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	d := &net.Dialer{}
	if sourceIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: sourceIP}
	}
	conn, err := d.DialContext(dctx, "tcp", is.Address)
	if err != nil {
		return nil, fail(EventInternalConnectFailed, oftp2.ESIDResourcesNotAvailable, err, "connecting to the internal OFTP2 server %s", is.Address)
	}
	if is.TLS != nil {
		tc := tls.Client(conn, is.TLS)
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, fail(EventInternalConnectFailed, oftp2.ESIDResourcesNotAvailable, err, "TLS handshake with the internal OFTP2 server %s", is.Address)
		}
		conn = tc
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	// The deadline covers reading SSRM and writing SSID; ctx ending (shutdown, tunnel lost)
	// interrupts both.
	conn.SetDeadline(time.Now().Add(ssrmTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	ic := &internalConn{conn: conn, r: oftp2.NewReader(conn, 0), w: oftp2.NewWriter(conn)}
	buf, err := ic.r.ReadBuffer()
	if err != nil {
		var pe *oftp2.ProtocolError
		switch {
		case errors.As(err, &pe):
			return nil, fail(EventInternalProtocolError, oftp2.ESIDResourcesNotAvailable, err, "the internal OFTP2 server %s sent a malformed stream header instead of SSRM", is.Address)
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil:
			return nil, fail(EventInternalConnectFailed, oftp2.ESIDResourcesNotAvailable, err, "no SSRM from the internal OFTP2 server %s within %v", is.Address, ssrmTimeout)
		}
		return nil, fail(EventInternalConnectFailed, oftp2.ESIDResourcesNotAvailable, err, "reading SSRM from the internal OFTP2 server %s", is.Address)
	}
	cmd, err := oftp2.Parse(buf, nil)
	if err != nil {
		return nil, fail(EventInternalProtocolError, oftp2.ESIDResourcesNotAvailable, err, "the internal OFTP2 server %s sent an invalid first command", is.Address)
	}
	switch c := cmd.(type) {
	case *oftp2.SSRM:
	case *oftp2.ESID:
		// The server refuses (busy, shutting down): the partner learns its reason.
		return nil, fail(EventInternalConnectFailed, c.Reason, nil, "the internal OFTP2 server %s ended the session before it started: ESID %s %q", is.Address, c.Reason, c.Text)
	default:
		return nil, fail(EventInternalProtocolError, oftp2.ESIDResourcesNotAvailable, nil, "the internal OFTP2 server %s sent %s instead of SSRM", is.Address, cmd.Code())
	}
	if err := ic.w.WriteBuffer(ssid); err != nil {
		return nil, fail(EventInternalConnectFailed, oftp2.ESIDResourcesNotAvailable, err, "writing the partner's SSID to the internal OFTP2 server %s", is.Address)
	}
	if !stop() {
		// ctx ended between the write and here; the deadline set by the AfterFunc stays.
		return nil, fail(EventInternalConnectFailed, oftp2.ESIDResourcesNotAvailable, ctx.Err(), "opening the session was cancelled")
	}
	conn.SetDeadline(time.Time{})
	ok = true
	return ic, nil
}
