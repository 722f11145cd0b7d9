package client

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Snapshot is one version of the client's configuration: the security configuration it pushes
// to the DMZ server and the settings it needs itself. A Snapshot is immutable once handed to the
// Client; a change is a new Snapshot with a higher Version.
//
// Its String method leaves secrets out; never log Security itself: its String includes the
// company's private key and the partners' passwords.
type Snapshot struct {
	// Version orders configurations: the server keeps the highest it has seen. Never 0.
	Version uint64
	// Digest is the SHA-256 of the configuration's content (Security and Internal),
	// for logs and to tell a real change from a reload of identical files.
	Digest [32]byte
	// Source says where the configuration came from, for logs, e.g. "file /etc/smartproxy/client.json".
	Source string
	// Origin is the kind of source, OriginFile or OriginBackend: the server compares versions
	// only between configurations of one origin (ConfigSnapshot.origin). Empty compares with
	// any origin.
	Origin string
	// Security is the configuration the DMZ server enforces. A CRL is either inline (der set;
	// the Client splits a large one into ConfigChunk frames when it sends) or streamed: der
	// empty with its size and sha256 set, its bytes read from CRLSource whenever the
	// configuration is pushed, so that the client does not hold them in memory.
	Security *tunnelv1.SecurityConfig
	// CRLSource opens the bytes of a streamed CRL by its id. Required when Security lists a
	// streamed CRL; the bytes must have the listed size and SHA-256 (the server checks both).
	CRLSource func(id string) (io.ReadCloser, error)
	// Internal says how incoming sessions reach the internal OFTP2 server.
	Internal InternalServer
}

// Origins of a Snapshot (Snapshot.Origin).
const (
	// OriginFile is a local configuration file, versioned by its modification time.
	OriginFile = "file"
	// OriginBackend is the backend, versioned by the document's revision.
	OriginBackend = "backend"
)

// String describes s without secrets.
func (s *Snapshot) String() string {
	if s == nil {
		return "<nil snapshot>"
	}
	sec := s.Security
	return fmt.Sprintf("config version %d (sha256 %x, %s): %d partners, %d trusted CAs, %d CRLs, company key [redacted], internal server %s",
		s.Version, s.Digest[:8], s.Source, len(sec.GetPartners()), len(sec.GetTrustedCaCertificates()),
		len(sec.GetCrls()), s.Internal.Address)
}

// Partner returns the configured partner with Odette ID id, or nil.
func (s *Snapshot) Partner(id string) *tunnelv1.Partner {
	for _, p := range s.Security.GetPartners() {
		if p.GetOdetteId() == id {
			return p
		}
	}
	return nil
}

// InternalServer says how to reach the internal OFTP2 server.
type InternalServer struct {
	// Address is the server's "host:port". Required.
	Address string
	// ConnectTimeout bounds the TCP connect and, with TLS, the handshake. If zero,
	// DefaultConnectTimeout is used.
	ConnectTimeout time.Duration
	// SSRMTimeout bounds the wait for the server's SSRM once connected. If zero,
	// DefaultSSRMTimeout is used.
	SSRMTimeout time.Duration
	// TLS, if not nil, makes the client speak TLS to the server with this configuration
	// (ServerName set). If nil, the connection is plain TCP.
	TLS *tls.Config
}

// Defaults for InternalServer.
const (
	// DefaultConnectTimeout is InternalServer.ConnectTimeout when zero.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultSSRMTimeout is InternalServer.SSRMTimeout when zero.
	DefaultSSRMTimeout = 30 * time.Second
)

// Secret is a string that must not appear in logs: its String and GoString methods and its
// JSON encoding redact it. Compare it with Equal.
type Secret string

// String returns "[redacted]" (or "" for an empty secret).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns the same as String, so that %#v redacts too.
func (s Secret) GoString() string { return s.String() }

// MarshalText redacts the secret in encodings that use it (JSON, logrus' JSON formatter).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// Equal reports whether s equals the clear text t, in time independent of where they differ.
func (s Secret) Equal(t string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(t)) == 1
}

// streamed reports whether c is a streamed CRL (see Snapshot.Security).
func streamed(c *tunnelv1.Crl) bool { return len(c.GetDer()) == 0 && c.GetSize() > 0 }

// check reports a snapshot the Client cannot send.
func (s *Snapshot) check() error {
	for i, c := range s.Security.GetCrls() {
		if streamed(c) && s.CRLSource == nil {
			return fmt.Errorf("crls[%d] (%s) is streamed (no der, size %d) but the snapshot has no CRLSource", i, c.GetId(), c.GetSize())
		}
		if len(c.GetDer()) == 0 && c.GetSize() == 0 {
			return errors.New("crls[" + fmt.Sprint(i) + "] has neither der nor size")
		}
	}
	return nil
}
