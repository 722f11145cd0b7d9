package clienttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"smartproxy/bridge"
	"smartproxy/oftp2"
	"smartproxy/tunnel"
)

// Bridge plays the DMZ server for one partner connection, without its checks: it sends SSRM to
// partner, reads the partner's SSID, opens an incoming session with it on c, and relays
// exchange buffers both ways on the proxy's session bridge until the session ends. When the
// session is aborted, the partner receives an ESID with the session's reason. Bridge closes
// partner before it returns, with nil after a normal end of the session (ESID 00) and otherwise
// why it ended.
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
	res := bridge.Run(ctx, bridge.Config{Conn: partner, Session: ts, ConnName: "partner", SessionName: "client"})
	if res.Normal() {
		return nil
	}
	return fmt.Errorf("clienttest: session ended: %s (ESID %02d): %s", res.Cause, uint8(res.ESID), res.Text)
}
