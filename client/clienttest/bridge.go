package clienttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// Bridge plays the DMZ server for one partner connection, without its checks: it sends SSRM to
// partner, reads the partner's SSID, opens an incoming session with it on c, and relays
// exchange buffers both ways until the session ends. When the session is aborted, the partner
// receives an ESID with the session's reason. Bridge closes partner before it returns, with nil
// after a clean end of the session and otherwise why it ended.
func (c *Conn) Bridge(ctx context.Context, partner net.Conn) error {
	defer partner.Close()
	r, w := oftp2.NewReader(partner, 0), oftp2.NewWriter(partner)
	if err := w.WriteCommand(&oftp2.SSRM{}); err != nil {
		return err
	}
	partner.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf, err := r.ReadBuffer()
	if err != nil {
		return fmt.Errorf("clienttest: reading the partner's SSID: %w", err)
	}
	partner.SetReadDeadline(time.Time{})
	cmd, err := oftp2.Parse(buf, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient})
	if err != nil {
		return err
	}
	ssid, ok := cmd.(*oftp2.SSID)
	if !ok {
		return fmt.Errorf("clienttest: partner sent %s instead of SSID", cmd.Code())
	}
	ts, err := c.Open(ctx, ssid.ID, partner.RemoteAddr().String(), append([]byte(nil), buf...))
	if err != nil {
		var ce *tunnel.CloseError
		if errors.As(err, &ce) {
			w.WriteCommand(&oftp2.ESID{Reason: oftp2.ESIDReason(ce.ESID), Text: "refused"})
		}
		return err
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			b, err := r.ReadBuffer()
			if errors.Is(err, io.EOF) {
				ts.CloseWrite()
				return
			}
			if err != nil {
				ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, 0, "partner connection lost")
				return
			}
			if err := ts.WriteBuffer(ctx, b); err != nil {
				return
			}
		}
	}()
	var result error
	for {
		b, err := ts.ReadBuffer(ctx)
		if errors.Is(err, io.EOF) {
			if hc, ok := partner.(interface{ CloseWrite() error }); ok {
				hc.CloseWrite()
			}
			<-readerDone
			break
		}
		if err != nil {
			var ce *tunnel.CloseError
			if errors.As(err, &ce) {
				partner.SetWriteDeadline(time.Now().Add(5 * time.Second))
				w.WriteCommand(&oftp2.ESID{Reason: oftp2.ESIDReason(ce.ESID), Text: "proxy: " + tunnel.ReasonString(ce.Reason)})
			}
			result = err
			break
		}
		if err := w.WriteBuffer(b); err != nil {
			ts.Abort(tunnelv1.AbortReason_ABORT_REASON_PEER_CLOSED, 0, "writing to the partner failed")
			result = err
			break
		}
	}
	partner.Close()
	<-readerDone
	if result == nil {
		result = ts.Err()
	}
	return result
}
