package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"smartproxy/internal/event"
	"smartproxy/internal/proxyproto"
)

// PROXY protocol v2 on the partner listener (SecurityConfig.proxy_protocol; off by default).
// Behind a TCP load balancer every partner connection comes from the balancer's address, which
// would put all partners under one per-address limit and hide them from allowed networks,
// events, logs and fail2ban. With PROXY protocol on, the balancer sends a binary header with the
// partner's address before the partner's first TLS byte, and the server uses that address:
//
//	accept ─ peer in Policy.ProxySources? ─ yes ─ pre-admission slot without a source
//	                                               (total cap only; the balancer is exempt
//	                                               from the per-address rate and caps)
//	                                            ─ read the header under the TLS deadline,
//	                                               at most proxyproto.MaxLen bytes
//	                                                 closed or reset before a byte: a TCP
//	                                                   health check, closed quietly
//	                                                 LOCAL: a health check, closed quietly
//	                                                 malformed, missing, not TCP, too slow:
//	                                                   partner_proxy_invalid, closed
//	                                                 PROXY: the partner's address replaces
//	                                                   the peer's; its rate and caps apply
//	                                            ─ TLS, SSID, … as for any partner
//	                                     ─ no  ─ starts with the header signature?
//	                                               partner_proxy_refused, closed
//	                                             else TLS as for any partner
//
// While PROXY protocol is off nothing is read before TLS, so a header is an ordinary TLS
// failure (partner_tls_rejected). The header read is bounded by the TLS handshake deadline,
// which is shorter than the drain timeout, so a shutdown waits for it at most that long.

// Reasons of partner_proxy_invalid and partner_proxy_refused events.
const (
	reasonProxyNotAllowed  = "source_not_allowed"
	reasonProxyMissing     = "missing_header"
	reasonProxyMalformed   = "malformed_header"
	reasonProxyTruncated   = "truncated_header"
	reasonProxyUnsupported = "unsupported_family"
	reasonProxyTimeout     = "header_timeout"
	reasonProxyReadError   = "read_error"
)

// refuseConn refuses a connection before it has a session (over a limit at accept, or at its
// PROXY header): one security event and the admission metric. The caller closes the connection.
func (s *Server) refuseConn(ev event.Event) {
	s.metrics.admissions.WithLabelValues(ev.Name).Inc()
	s.emit(ev)
}

// proxyHeader runs the PROXY protocol step of a connection accepted under pol while PROXY
// protocol is on (pol.ProxySources not empty), before TLS. It returns the connection to run
// TLS on, the partner's address and, for a connection relayed by a balancer, the balancer's
// address; ok is false when the connection is to be closed (refused, with its event, or a
// health check).
func (s *Server) proxyHeader(raw net.Conn, pol *Policy, peer netip.AddrPort, slot *preSlot) (conn net.Conn, remote, via netip.AddrPort, ok bool) {
	if !pol.proxyAllowed(peer.Addr()) {
		conn, sent := peekSignature(raw)
		if sent {
			s.refuseConn(event.Security(EventPartnerProxyRefused, peer.String(), "", reasonProxyNotAllowed,
				"a PROXY protocol header from a source that is not an allowed load balancer"))
			return nil, peer, via, false
		}
		return conn, peer, via, true
	}
	h, err := proxyproto.Read(raw)
	if err != nil {
		if errors.Is(err, errEvicted) {
			// Without remote_addr: the address is the balancer's, which fail2ban must not ban.
			s.refuseConn(event.Security(EventPartnerEvicted, "", "", reasonEvicted, "no PROXY header yet: "+err.Error()).With("proxy_addr", peer.String()))
			return nil, peer, via, false
		}
		if !slot.spoke.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
			// Closed (or reset, as HAProxy ends its checks) before its first byte: a
			// balancer's TCP connect check.
			s.log.WithField("remote_addr", peer.String()).Debug("load balancer connection closed before a PROXY header (TCP health check)")
			return nil, peer, via, false
		}
		reason := reasonProxyReadError
		var fe *proxyproto.FormatError
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = reasonProxyTimeout
		case errors.Is(err, proxyproto.ErrNoSignature):
			reason = reasonProxyMissing
		case errors.Is(err, proxyproto.ErrUnsupported):
			reason = reasonProxyUnsupported
		case errors.Is(err, io.ErrUnexpectedEOF):
			reason = reasonProxyTruncated
		case errors.As(err, &fe):
			reason = reasonProxyMalformed
		}
		ev := event.Security(EventPartnerProxyInvalid, peer.String(), "", reason, "connection from a load balancer without a valid PROXY protocol v2 header: "+err.Error())
		if fe != nil {
			ev = ev.With("field", fe.Field)
		}
		s.refuseConn(ev)
		return nil, peer, via, false
	}
	if h.Command == proxyproto.Local {
		s.log.WithField("remote_addr", peer.String()).Debug("PROXY protocol LOCAL header (load balancer health check); closed")
		return nil, peer, via, false
	}
	remote, via = h.Source, peer
	refuse := func(name, reason, msg string) {
		s.refuseConn(event.Security(name, remote.String(), "", reason, msg).With("proxy_addr", via.String()))
	}
	if !s.rate.allow(remote.Addr(), pol.Limits.PerIPRate, pol.Limits.PerIPBurst) {
		refuse(EventPartnerRateLimited, "per_ip_rate", "connection rate of the source exceeded")
		return nil, remote, via, false
	}
	if reason := slot.identify(remote.Addr()); reason != "" {
		refuse(EventPartnerSourceLimit, reason, "the source or its network has its maximum of connections in admission")
		return nil, remote, via, false
	}
	return raw, remote, via, true
}

// peekSignature reads from a connection of a source that may not send a PROXY header as much
// as tells whether it starts with the header's signature: one byte when that is not the
// signature's first (a TLS record starts with 0x16), else up to the signature's length. It
// returns the connection with the bytes read put back in front, for the TLS handshake. A read
// error is left for the handshake to meet again (a deadline stays expired, a closed
// connection stays closed).
func peekSignature(c net.Conn) (net.Conn, bool) {
	var b [len(proxyproto.Signature)]byte
	n, err := io.ReadFull(c, b[:1])
	if err == nil && b[0] == proxyproto.Signature[0] {
		var m int
		m, err = io.ReadFull(c, b[1:])
		n += m
	}
	if err == nil && n == len(b) && bytes.Equal(b[:], proxyproto.Signature[:]) {
		return nil, true
	}
	return &prefixConn{Conn: c, pre: append([]byte(nil), b[:n]...)}, false
}

// prefixConn is a connection whose first bytes were already read: Read returns them first.
type prefixConn struct {
	net.Conn
	pre []byte // owned by the reader
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// proxySourcesText describes the PROXY protocol sources of a policy for the log, "off" when none.
func proxySourcesText(p []netip.Prefix) string {
	if len(p) == 0 {
		return "off"
	}
	return fmt.Sprint(p)
}
