package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"smartproxy/internal/event"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Observer is told what the DMZ servers report over the tunnels, so that it can pass it on (to
// the backend, in smartproxy-client). Its methods are called on a tunnel's reading goroutine:
// they must return quickly and never block, or that tunnel stalls.
type Observer interface {
	// ConfigResult reports a server's answer to a configuration version.
	ConfigResult(r ConfigResult)
	// ServerEvent reports a security or system event of a server.
	ServerEvent(ev *tunnelv1.Event)
	// CRLURLs reports CRL distribution points a server saw in partner certificates that no
	// CRL of the configuration covers.
	CRLURLs(urls []string)
	// LicenseStatus reports a server's license state (from its Welcome and whenever it changes).
	LicenseStatus(l *tunnelv1.LicenseStatus)
	// ClientEvent reports one of the client's own events of WARNING or worse, as it is logged.
	ClientEvent(e event.Event)
}

// ConfigResult is a server's answer to a configuration version.
type ConfigResult struct {
	// Version is the configuration version the answer is about.
	Version uint64
	// Applied is true when the version is in force on the server.
	Applied bool
	// Errors say why the server refused the version; empty when applied.
	Errors []*tunnelv1.ConfigError
	// Tunnel is the index of the tunnel stream that carried the answer.
	Tunnel int
	// ProxyID is the answering server's Proxy ID.
	ProxyID string
}

// SetLicense makes file the license the client pushes to the DMZ servers (LicenseUpdate): now on
// every connected tunnel, and on tunnels that connect later, once per server (Proxy ID) and
// license content. The server verifies the file, stores it and answers with its license state.
func (c *Client) SetLicense(file []byte) error {
	if len(file) == 0 {
		return errors.New("client: SetLicense: empty license file")
	}
	sum := sha256.Sum256(file)
	c.mu.Lock()
	defer c.mu.Unlock()
	if sum == c.licenseSum {
		return nil
	}
	c.licenseFile = append([]byte(nil), file...)
	c.licenseSum = sum
	close(c.licChanged)
	c.licChanged = make(chan struct{})
	c.log.WithFields(logrus.Fields{"license_sha256": shortSum(sum), "tunnels": len(c.streams)}).Info("new license file; pushing it to the server")
	return nil
}

// licenseState returns the license to push and the channel closed at its next change.
func (c *Client) licenseState() ([]byte, [32]byte, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.licenseFile, c.licenseSum, c.licChanged
}

// pushLicense sends the license on st unless the server (by Proxy ID) already got this content
// from this process.
func (c *Client) pushLicense(ctx context.Context, st *stream, file []byte, sum [32]byte) {
	if len(file) == 0 {
		return
	}
	st.mu.Lock()
	proxyID := st.welcome.GetProxyId()
	st.mu.Unlock()
	c.mu.Lock()
	if c.licensePushed[proxyID] == sum {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	f := &tunnelv1.Frame{Kind: &tunnelv1.Frame_LicenseUpdate{LicenseUpdate: &tunnelv1.LicenseUpdate{License: file}}}
	if err := st.mux.SendControl(ctx, f); err != nil {
		st.log.WithError(err).Warn("license not pushed: the stream ended")
		return
	}
	c.mu.Lock()
	c.licensePushed[proxyID] = sum
	c.mu.Unlock()
	st.log.WithFields(logrus.Fields{"event": EventLicensePushed, "proxy_id": proxyID, "license_sha256": shortSum(sum)}).
		Info("license pushed to the server")
}

func shortSum(sum [32]byte) string {
	const hexDigits = "0123456789abcdef"
	out := make([]byte, 16)
	for i := 0; i < 8; i++ {
		out[2*i], out[2*i+1] = hexDigits[sum[i]>>4], hexDigits[sum[i]&15]
	}
	return string(out)
}

// observe calls fn with the observer, if there is one.
func (c *Client) observe(fn func(o Observer)) {
	if c.cfg.Observer != nil {
		fn(c.cfg.Observer)
	}
}
