package servertest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"smartproxy/oftp2"
)

// RawPartner is a partner connection driven command by command, for tests that need to send
// exactly the bytes they choose (broken SSIDs, out-of-order commands). It is not safe for
// concurrent use.
type RawPartner struct {
	// Conn is the TLS connection.
	Conn *tls.Conn
	r    *oftp2.Reader
	w    *oftp2.Writer
}

// DialPartner connects to addr with TLS, presenting cert (nil for none) and trusting roots for
// the server certificate (server name "localhost"). The handshake is done; with TLS 1.3 a
// refused client certificate shows only on the first read.
func DialPartner(addr string, cert *tls.Certificate, roots *x509.CertPool) (*RawPartner, error) {
	return DialPartnerWith(addr, cert, roots, Dial{})
}

// Dial says how DialPartnerWith connects.
type Dial struct {
	// Local is the local IP address to connect from, e.g. "127.0.0.2"; empty: the system's
	// choice.
	Local string
	// Before is written on the TCP connection before the TLS handshake (a PROXY protocol
	// header, as a load balancer sends it).
	Before []byte
}

// DialPartnerWith is DialPartner with the options of d.
func DialPartnerWith(addr string, cert *tls.Certificate, roots *x509.CertPool, d Dial) (*RawPartner, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if d.Local != "" {
		ip := net.ParseIP(d.Local)
		if ip == nil {
			return nil, fmt.Errorf("servertest: local address %q is not an IP address", d.Local)
		}
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	raw, err := nd.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if len(d.Before) > 0 {
		raw.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := raw.Write(d.Before); err != nil {
			raw.Close()
			return nil, err
		}
	}
	conn := tls.Client(raw, cfg)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return &RawPartner{Conn: conn, r: oftp2.NewReader(conn, 0), w: oftp2.NewWriter(conn)}, nil
}

// Close closes the connection.
func (p *RawPartner) Close() error { return p.Conn.Close() }

// Read reads one exchange buffer within timeout and returns a copy of it.
func (p *RawPartner) Read(timeout time.Duration) ([]byte, error) {
	p.Conn.SetReadDeadline(time.Now().Add(timeout))
	b, err := p.r.ReadBuffer()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// Write writes one exchange buffer.
func (p *RawPartner) Write(b []byte) error {
	p.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return p.w.WriteBuffer(b)
}

// WriteRaw writes bytes without stream framing (for broken stream headers).
func (p *RawPartner) WriteRaw(b []byte) error {
	p.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := p.Conn.Write(b)
	return err
}

// ExpectSSRM reads the server's first command and fails unless it is SSRM.
func (p *RawPartner) ExpectSSRM() error {
	b, err := p.Read(10 * time.Second)
	if err != nil {
		return fmt.Errorf("reading SSRM: %w", err)
	}
	var ssrm oftp2.SSRM
	if err := ssrm.Decode(b, nil); err != nil {
		return fmt.Errorf("first command %q is not SSRM: %w", b, err)
	}
	return nil
}

// ReadESID reads commands until an ESID and returns it. Any other command is an error.
func (p *RawPartner) ReadESID(timeout time.Duration) (*oftp2.ESID, error) {
	b, err := p.Read(timeout)
	if err != nil {
		return nil, fmt.Errorf("waiting for ESID: %w", err)
	}
	cmd, err := oftp2.Parse(b, &oftp2.ParseOptions{Charset: oftp2.CharsetLenient})
	if err != nil {
		return nil, fmt.Errorf("waiting for ESID: %w", err)
	}
	esid, ok := cmd.(*oftp2.ESID)
	if !ok {
		return nil, fmt.Errorf("waiting for ESID: got %s", cmd.Code())
	}
	return esid, nil
}

// SSID returns a valid initiator SSID exchange buffer for id and password with the
// endpoint's defaults; mod, if not nil, changes the command before encoding.
func SSID(tb testing.TB, id, password string, mod func(*oftp2.SSID)) []byte {
	tb.Helper()
	s := &oftp2.SSID{
		Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: 4096, Mode: oftp2.ModeBoth,
		Compression: true, Restart: true, Credit: 64,
	}
	if mod != nil {
		mod(s)
	}
	b, err := s.Append(nil)
	if err != nil {
		tb.Fatalf("servertest.SSID: %v", err)
	}
	return b
}

// IsTLSAlert reports whether err is (or wraps) a TLS alert received from the peer, the way a
// refused client certificate shows.
func IsTLSAlert(err error) bool {
	if err == nil {
		return false
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return true
	}
	return strings.Contains(err.Error(), "remote error: tls:")
}
