package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// PeerInfo is the verified identity of the other end of a tunnel connection.
type PeerInfo struct {
	// RemoteAddr is the peer's network address.
	RemoteAddr net.Addr
	// Certificate is the peer's verified leaf certificate.
	Certificate *x509.Certificate
}

// Identity returns the name the peer is known by: the certificate's common
// name, else its first URI SAN, else its first DNS SAN, else "".
func (p PeerInfo) Identity() string {
	c := p.Certificate
	switch {
	case c == nil:
		return ""
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return ""
}

// String returns "identity@address".
func (p PeerInfo) String() string {
	addr := "?"
	if p.RemoteAddr != nil {
		addr = p.RemoteAddr.String()
	}
	return p.Identity() + "@" + addr
}

// AllowList is a set of permitted client identities. An entry matches a
// certificate when it equals the subject common name, a URI SAN, or
// (ignoring case) a DNS SAN. The empty list permits every certificate of the
// tunnel CA.
type AllowList []string

// Allows reports whether cert matches an entry, or the list is empty.
func (l AllowList) Allows(cert *x509.Certificate) bool {
	if len(l) == 0 {
		return true
	}
	if cert == nil {
		return false
	}
	for _, e := range l {
		if e == cert.Subject.CommonName {
			return true
		}
		for _, u := range cert.URIs {
			if e == u.String() {
				return true
			}
		}
		for _, d := range cert.DNSNames {
			if strings.EqualFold(e, d) {
				return true
			}
		}
	}
	return false
}

func (l AllowList) validate() error {
	for i, e := range l {
		if strings.TrimSpace(e) == "" {
			return fmt.Errorf("transport: allow-list entry %d is empty", i)
		}
	}
	return nil
}

type peerKey struct{}

// PeerFromContext returns the verified peer of an RPC on a [Server], as set by
// its authentication interceptor.
func PeerFromContext(ctx context.Context) (PeerInfo, bool) {
	p, ok := ctx.Value(peerKey{}).(PeerInfo)
	return p, ok
}

// connState is per-connection state, put into the connection's context by
// connTagger.
type connState struct {
	rejected atomic.Bool // a rejection was logged for this connection
}

type connStateKey struct{}

// connTagger is a stats.Handler that gives every connection a connState, so
// that an allow-list rejection is logged once per connection, not once per
// RPC.
type connTagger struct{}

func (connTagger) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connStateKey{}, &connState{})
}
func (connTagger) HandleConn(context.Context, stats.ConnStats) {}
func (connTagger) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}
func (connTagger) HandleRPC(context.Context, stats.RPCStats) {}

// errNoTLSPeer is returned when an RPC arrives without a TLS peer, which the
// server's credentials make impossible unless it is misconfigured.
var errNoTLSPeer = errors.New("no verified TLS peer")

// authenticate is the AuthFunc of the server's auth interceptors: it takes the
// verified client certificate of the connection, checks the allow-list and
// puts the PeerInfo into the context.
func authenticate(ctx context.Context, allow AllowList, log logrus.FieldLogger) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, errNoTLSPeer.Error())
	}
	remote := "?"
	if p.Addr != nil {
		remote = p.Addr.String()
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		// The TLS configuration refuses such connections in the handshake.
		rejectOnce(ctx, log, remote, RejectNoCertificate, "no verified client certificate on the connection")
		return nil, status.Error(codes.Unauthenticated, "client certificate required")
	}
	info := PeerInfo{RemoteAddr: p.Addr, Certificate: ti.State.PeerCertificates[0]}
	if !allow.Allows(info.Certificate) {
		rejectOnce(ctx, log, remote, RejectNotAllowed, fmt.Sprintf("identity %q (subject %q) is not on the allow-list", info.Identity(), info.Certificate.Subject))
		return nil, status.Errorf(codes.PermissionDenied, "client identity %q is not allowed", info.Identity())
	}
	return context.WithValue(ctx, peerKey{}, info), nil
}

// rejectOnce logs the rejection event for the connection of ctx unless one was
// logged already for it.
func rejectOnce(ctx context.Context, log logrus.FieldLogger, remote, reason, detail string) {
	if cs, ok := ctx.Value(connStateKey{}).(*connState); ok && !cs.rejected.CompareAndSwap(false, true) {
		log.WithFields(logrus.Fields{"remote_addr": remote, "reason": reason}).Debug("tunnel client rejected again on the same connection")
		return
	}
	logRejected(log, remote, reason, detail)
}
