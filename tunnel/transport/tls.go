package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/credentials"
)

// Reasons of a refused tunnel client, the reason field of an
// event=tunnel_client_rejected log line.
const (
	// RejectNoCertificate: the client presented no certificate.
	RejectNoCertificate = "no_client_certificate"
	// RejectUnknownAuthority: the certificate does not chain to the tunnel CA.
	RejectUnknownAuthority = "unknown_authority"
	// RejectExpired: the certificate is expired or not yet valid.
	RejectExpired = "certificate_expired"
	// RejectBadCertificate: the certificate chains to the tunnel CA but is
	// unusable otherwise (wrong key usage, constraint violation, …).
	RejectBadCertificate = "bad_certificate"
	// RejectNotAllowed: the certificate is valid but its identity is not on
	// the server's allow-list.
	RejectNotAllowed = "identity_not_allowed"
	// RejectHandshake: the TLS handshake failed for another reason (TLS
	// below 1.3, no common cipher, not TLS at all, connection closed
	// during the handshake, timeout).
	RejectHandshake = "tls_handshake_failed"
)

// EventClientRejected is the event name logged for a refused tunnel client.
const EventClientRejected = "tunnel_client_rejected"

// RejectError is the error of a refused peer certificate. Reason is one of
// the Reject* constants.
type RejectError struct {
	// Reason is the stable reason name.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

func (e *RejectError) Error() string {
	if e.Err == nil {
		return "transport: peer rejected: " + e.Reason
	}
	return "transport: peer rejected: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *RejectError) Unwrap() error { return e.Err }

// rejectReason classifies a handshake or verification error.
func rejectReason(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return RejectHandshake
}

// verifyReason classifies an x509 verification error.
func verifyReason(err error) string {
	var (
		ua x509.UnknownAuthorityError
		ci x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &ua):
		return RejectUnknownAuthority
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return RejectExpired
	}
	return RejectBadCertificate
}

// verifyChain verifies certs (leaf first) against roots for usage.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, dnsName string) error {
	if len(certs) == 0 {
		return &RejectError{Reason: RejectNoCertificate}
	}
	if roots == nil {
		return &RejectError{Reason: RejectUnknownAuthority, Err: errors.New("no tunnel CA loaded")}
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
		DNSName:       dnsName,
		CurrentTime:   time.Now(),
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &RejectError{Reason: verifyReason(err), Err: err}
	}
	return nil
}

// ServerTLSConfig returns the TLS configuration of the tunnel listener: TLS
// 1.3 only, the certificate of creds (looked up on every handshake), and a
// client certificate that must chain to creds.Roots() (also looked up on every
// handshake) with the clientAuth usage. A failed client check ends the
// handshake with a *RejectError.
func ServerTLSConfig(creds Credentials) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return creds.Certificate(), nil
		},
		// The chain is verified in VerifyConnection against the current
		// pool, so that a rotated CA file takes effect; requesting (not
		// requiring) the certificate lets a missing one be reported as such.
		ClientAuth: tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, creds.Roots(), x509.ExtKeyUsageClientAuth, "")
		},
		// Tunnel connections live long; resumption would only add a second
		// path through which a peer is admitted.
		SessionTicketsDisabled: true,
	}
}

// ClientTLSConfig returns the TLS configuration of a tunnel client: TLS 1.3
// only, the certificate of creds, and a server certificate that must chain to
// creds.Roots() (and nothing else — the system roots are never consulted),
// carry the serverAuth usage and name serverName.
func ClientTLSConfig(creds Credentials, serverName string) (*tls.Config, error) {
	if serverName == "" {
		return nil, errors.New("transport: server name for certificate verification is empty")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return creds.Certificate(), nil
		},
		// The standard verification would use a RootCAs pool fixed at
		// creation; VerifyConnection below does the same checks against the
		// current pool and the configured name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, creds.Roots(), x509.ExtKeyUsageServerAuth, serverName)
		},
		SessionTicketsDisabled: true,
	}, nil
}

// serverCreds wraps gRPC TLS credentials and logs every failed handshake as a
// security event.
type serverCreds struct {
	credentials.TransportCredentials
	log logrus.FieldLogger
}

func newServerCreds(creds Credentials, log logrus.FieldLogger) credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: credentials.NewTLS(ServerTLSConfig(creds)), log: log}
}

func (c *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		logRejected(c.log, raw.RemoteAddr().String(), rejectReason(err), handshakeDetail(err))
	}
	return conn, info, err
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log}
}

// handshakeDetail describes a handshake error for the log.
func handshakeDetail(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "connection closed during the TLS handshake"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "TLS handshake timed out"
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// logRejected writes the security event line of a refused tunnel client.
func logRejected(log logrus.FieldLogger, remote, reason, detail string) {
	log.WithFields(logrus.Fields{
		"event":       EventClientRejected,
		"remote_addr": remote,
		"reason":      reason,
		"detail":      detail,
	}).Warn("tunnel client rejected")
}

// splitHostPortDefault splits "host[:port]" and fills in port def when none
// is given. IPv6 literals need brackets when a port is given.
func splitHostPortDefault(addr string, def int) (host, port string, err error) {
	if addr == "" {
		return "", "", errors.New("transport: empty server address")
	}
	if h, p, err := net.SplitHostPort(addr); err == nil {
		if h == "" {
			return "", "", fmt.Errorf("transport: server address %q has no host", addr)
		}
		return h, p, nil
	}
	host = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", "", fmt.Errorf("transport: invalid server address %q", addr)
	}
	return host, fmt.Sprint(def), nil
}
