package apiclient

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
)

// Token is a bearer token. Its String and GoString methods redact it.
type Token string

// String returns "[redacted]", or "" for an empty Token.
func (t Token) String() string {
	if t == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns the quoted String.
func (t Token) GoString() string { return strconv.Quote(t.String()) }

// Defaults of Config.
const (
	// DefaultTimeout bounds one attempt of a JSON call.
	DefaultTimeout = 30 * time.Second
	// DefaultDownloadTimeout bounds one attempt of a CRL or license download.
	DefaultDownloadTimeout = 5 * time.Minute
	// DefaultMaxResponseBytes bounds JSON and license bodies.
	DefaultMaxResponseBytes = 4 << 20
	// DefaultMaxCRLBytes bounds a CRL body.
	DefaultMaxCRLBytes = 64 << 20
	// DefaultUserAgent is sent when Config.UserAgent is empty.
	DefaultUserAgent = "smartproxy-apiclient/1"
)

// Config configures a Client. Only BaseURL is required; every other zero value has a documented
// default. Its String method redacts the token and the base URL's password.
type Config struct {
	// BaseURL is the backend's "https://host[:port][/prefix]"; the API paths are appended to the
	// prefix. User information ("https://user:password@host/") is sent as HTTP basic
	// authentication on every request and is never shown in errors or logs; it cannot be
	// combined with Token, since both use the Authorization header. Required.
	BaseURL string
	// Token is the bearer token sent on every request except Health. If empty, no bearer token is
	// sent (the base URL's user information may authenticate instead).
	Token Token
	// RootCAs are the CAs the backend's certificate must chain to. If nil and CAFile is empty,
	// the system's roots are used (unless PinSHA256 is set, see there).
	RootCAs *x509.CertPool
	// CAFile is a PEM file with the CAs the backend's certificate must chain to, read by New. It
	// may not be combined with RootCAs.
	CAFile string
	// PinSHA256 is the SHA-256 fingerprint of the backend's leaf certificate (64 hexadecimal
	// digits, colons or spaces allowed), as the reference backend prints it for a certificate it
	// generated. If set, the backend must present exactly that certificate; when neither RootCAs
	// nor CAFile is set, the pin replaces chain and host name verification. If empty, no pin.
	PinSHA256 string
	// Transport, if not nil, sends the requests instead of the client's own HTTPS transport; the
	// TLS options (RootCAs, CAFile, PinSHA256) must then be empty, as they would have no effect.
	Transport http.RoundTripper
	// Timeout bounds one attempt of a JSON call, from sending the request to reading the whole
	// answer; a long poll gets its wait on top. If zero, DefaultTimeout.
	Timeout time.Duration
	// DownloadTimeout bounds one attempt of a CRL or license download. If zero,
	// DefaultDownloadTimeout.
	DownloadTimeout time.Duration
	// MaxResponseBytes bounds JSON and license bodies; a larger answer fails with
	// ErrResponseTooLarge. If zero, DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// MaxCRLBytes bounds a CRL body; a larger one fails with ErrResponseTooLarge. If zero,
	// DefaultMaxCRLBytes.
	MaxCRLBytes int64
	// Retry is the retry policy of idempotent calls.
	Retry Retry
	// Logger receives one line per retry (event=api_retry). If nil, nothing is logged.
	Logger logrus.FieldLogger
	// UserAgent is the User-Agent header. If empty, DefaultUserAgent.
	UserAgent string
}

// Retry is the retry policy of idempotent calls: the delay before retry n (n = 1, 2, …) is
// uniformly random in [0, min(Cap, Base·2^(n-1))) ("full jitter"), or the answer's Retry-After
// when it has one.
type Retry struct {
	// Attempts is the total number of attempts of one call, the first included. If zero, 4; 1
	// means no retries; negative is invalid.
	Attempts int
	// Base is the backoff's first ceiling. If zero, 200ms.
	Base time.Duration
	// Cap is the backoff's largest ceiling, and the longest Retry-After the client waits for:
	// an answer asking for a longer wait is returned as an *APIError with RetryAfter set. If
	// zero, 10s.
	Cap time.Duration
}

// String describes c with the token and the base URL's password redacted.
func (c Config) String() string {
	return fmt.Sprintf("apiclient.Config{BaseURL: %s, Token: %s, CAFile: %q, PinSHA256: %q, Timeout: %v, Retry: %+v, UserAgent: %q}",
		redactURL(c.BaseURL), c.Token, c.CAFile, c.PinSHA256, c.Timeout, c.Retry, c.UserAgent)
}

// GoString is String.
func (c Config) GoString() string { return c.String() }

// redactURL returns s with its password replaced, or a placeholder when s is not a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid URL>"
	}
	return u.Redacted()
}
