package apiclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
)

// maxErrorBodyBytes bounds the body of an error answer that is read for its message.
const maxErrorBodyBytes = 64 << 10

// Client calls the backend API v1. It is safe for concurrent use. Make it with New.
type Client struct {
	// All fields are immutable after New.
	base      string // scheme://host[:port][/prefix] without user information or trailing slash
	basicUser string
	basicPass string
	hasBasic  bool
	token     Token
	hc        *http.Client
	own       *http.Transport // nil when Config.Transport is used
	timeout   time.Duration
	download  time.Duration
	maxResp   int64
	maxCRL    int64
	retry     Retry
	log       logrus.FieldLogger
	userAgent string
}

// New checks cfg and returns a Client. It reads Config.CAFile. Errors never contain the token or
// the base URL's password.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || cfg.BaseURL == "" {
		// The parser's message may quote the URL, password included.
		return nil, errors.New("apiclient: BaseURL is not a valid URL (want https://[user:password@]host[:port][/prefix])")
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("apiclient: BaseURL has the scheme %q, want https", u.Scheme)
	}
	if u.Host == "" || u.Opaque != "" {
		return nil, errors.New("apiclient: BaseURL has no host (want https://host[:port][/prefix])")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, errors.New("apiclient: BaseURL may not have a query or fragment")
	}
	c := &Client{
		token: cfg.Token, timeout: cfg.Timeout, download: cfg.DownloadTimeout, maxResp: cfg.MaxResponseBytes,
		maxCRL: cfg.MaxCRLBytes, retry: cfg.Retry, log: cfg.Logger, userAgent: cfg.UserAgent,
	}
	if u.User != nil {
		c.hasBasic = true
		c.basicUser = u.User.Username()
		c.basicPass, _ = u.User.Password()
		if strings.ContainsAny(c.basicUser, ":\r\n") {
			return nil, errors.New("apiclient: the user name in BaseURL may not contain ':' or line breaks")
		}
		if cfg.Token != "" {
			return nil, errors.New("apiclient: BaseURL has user information and Token is set; both use the Authorization header, give one")
		}
		u.User = nil
	}
	for i := 0; i < len(cfg.Token); i++ {
		if b := cfg.Token[i]; b <= ' ' || b >= 0x7f {
			return nil, fmt.Errorf("apiclient: Token has a space, control or non-ASCII character at offset %d", i)
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = strings.TrimSuffix(u.RawPath, "/")
	c.base = u.String()

	if c.timeout < 0 || c.download < 0 || c.maxResp < 0 || c.maxCRL < 0 {
		return nil, errors.New("apiclient: Timeout, DownloadTimeout, MaxResponseBytes and MaxCRLBytes may not be negative")
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.download == 0 {
		c.download = DefaultDownloadTimeout
	}
	if c.maxResp == 0 {
		c.maxResp = DefaultMaxResponseBytes
	}
	if c.maxCRL == 0 {
		c.maxCRL = DefaultMaxCRLBytes
	}
	if c.retry.Attempts < 0 || c.retry.Base < 0 || c.retry.Cap < 0 {
		return nil, errors.New("apiclient: Retry.Attempts, Retry.Base and Retry.Cap may not be negative")
	}
	if c.retry.Attempts == 0 {
		c.retry.Attempts = 4
	}
	if c.retry.Base == 0 {
		c.retry.Base = 200 * time.Millisecond
	}
	if c.retry.Cap == 0 {
		c.retry.Cap = 10 * time.Second
	}
	if c.retry.Cap < c.retry.Base {
		return nil, fmt.Errorf("apiclient: Retry.Cap %v is below Retry.Base %v", c.retry.Cap, c.retry.Base)
	}
	if c.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.log = l
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}

	rt := cfg.Transport
	if rt != nil {
		if cfg.RootCAs != nil || cfg.CAFile != "" || cfg.PinSHA256 != "" {
			return nil, errors.New("apiclient: RootCAs, CAFile and PinSHA256 have no effect with Transport; leave them empty")
		}
	} else {
		tc, err := tlsConfig(&cfg, u.Hostname())
		if err != nil {
			return nil, err
		}
		c.own = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tc,
			TLSHandshakeTimeout:   10 * time.Second,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          8,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		rt = c.own
	}
	c.hc = &http.Client{
		Transport: rt,
		// A redirect is answered as an *APIError, never followed: credentials stay with the
		// configured host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// tlsConfig builds the TLS configuration of the client's own transport.
func tlsConfig(cfg *Config, host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, RootCAs: cfg.RootCAs}
	if cfg.CAFile != "" {
		if cfg.RootCAs != nil {
			return nil, errors.New("apiclient: give RootCAs or CAFile, not both")
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("apiclient: CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("apiclient: CAFile %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.PinSHA256 != "" {
		pin, err := parseFingerprint(cfg.PinSHA256)
		if err != nil {
			return nil, err
		}
		if tc.RootCAs == nil {
			// The pin is the trust anchor: the backend presents a certificate it generated,
			// which no CA signed. VerifyConnection below checks it on every handshake.
			tc.InsecureSkipVerify = true
		}
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the backend presented no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got != pin {
				return &pinError{got: got, want: pin}
			}
			return nil
		}
	}
	return tc, nil
}

// pinError is a backend certificate that does not match Config.PinSHA256.
type pinError struct{ got, want [sha256.Size]byte }

func (e *pinError) Error() string {
	return fmt.Sprintf("the backend's certificate has the SHA-256 fingerprint %s, not the pinned %s",
		formatFingerprint(e.got), formatFingerprint(e.want))
}

// Is makes a pin mismatch match ErrCertificateMismatch.
func (e *pinError) Is(target error) bool { return target == ErrCertificateMismatch }

// permanentTransportError reports whether a transport error cannot go away by retrying: the
// backend's certificate is not trusted.
func permanentTransportError(err error) bool {
	return errors.Is(err, ErrCertificateMismatch) || certificateUntrusted(err)
}

// certificateUntrusted reports whether err is a failed verification of the backend's
// certificate chain or name (not a pin mismatch).
func certificateUntrusted(err error) bool {
	var (
		ve *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &ve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// parseFingerprint reads 64 hexadecimal digits, optionally separated by colons or spaces.
func parseFingerprint(s string) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	clean := strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s))
	b, err := hex.DecodeString(clean)
	if err != nil || len(b) != sha256.Size {
		return out, errors.New("apiclient: PinSHA256 is not a SHA-256 fingerprint (64 hexadecimal digits, colons allowed)")
	}
	copy(out[:], b)
	return out, nil
}

// Fingerprint returns the SHA-256 fingerprint of cert in the form PinSHA256 accepts: upper-case
// hexadecimal byte pairs separated by colons.
func Fingerprint(cert *x509.Certificate) string {
	return formatFingerprint(sha256.Sum256(cert.Raw))
}

func formatFingerprint(sum [sha256.Size]byte) string {
	var sb strings.Builder
	for i, b := range sum {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02X", b)
	}
	return sb.String()
}

// String describes c without credentials.
func (c *Client) String() string { return "apiclient.Client(" + c.base + ")" }

// GoString is String.
func (c *Client) GoString() string { return c.String() }

// Close closes idle connections. Calls made after Close open new ones.
func (c *Client) Close() {
	if c.own != nil {
		c.own.CloseIdleConnections()
		return
	}
	c.hc.CloseIdleConnections()
}

// call is one logical API call.
type call struct {
	method     string
	path       string // below /v1, escaped
	query      url.Values
	etag       string // If-None-Match, if not empty
	body       []byte // JSON request body; nil for none
	auth       bool   // send the bearer token
	accept     string // Accept header; the error body is always JSON
	idempotent bool   // may be retried
	timeout    time.Duration
	// handle reads a 2xx or 304 answer. It reports whether a failure may be retried.
	handle func(resp *http.Response) (retry bool, err error)
}

// op names the call in errors and logs.
func (cl *call) op() string { return cl.method + " /v1" + cl.path }

// do runs cl with retries.
func (c *Client) do(ctx context.Context, cl *call) error {
	attempts := c.retry.Attempts
	if !cl.idempotent {
		attempts = 1
	}
	for n := 1; ; n++ {
		retry, wait, err := c.attempt(ctx, cl)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return &OpError{Op: cl.op(), Err: ctx.Err()}
		}
		if !retry || n >= attempts {
			return err
		}
		delay := wait
		if delay == 0 {
			delay = c.backoff(n)
		}
		c.log.WithFields(logrus.Fields{"event": "api_retry", "op": cl.op(), "attempt": n, "delay": delay.String(),
			"error": err.Error()}).Info("backend call failed; retrying")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return &OpError{Op: cl.op(), Err: ctx.Err()}
		case <-t.C:
		}
	}
}

// backoff is the full-jitter delay before retry n.
func (c *Client) backoff(n int) time.Duration {
	ceil := c.retry.Cap
	if n-1 < 32 {
		if d := c.retry.Base << (n - 1); d > 0 && d < ceil {
			ceil = d
		}
	}
	return rand.N(ceil) + 1
}

// attempt makes one request of cl. It reports whether a failure may be retried, and after how
// long if the backend said so.
func (c *Client) attempt(ctx context.Context, cl *call) (retry bool, wait time.Duration, err error) {
	actx, cancel := context.WithTimeout(ctx, cl.timeout)
	defer cancel()
	u := c.base + "/v1" + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, u, body)
	if err != nil {
		return false, 0, &OpError{Op: cl.op(), Err: err}
	}
	req.Header.Set("User-Agent", c.userAgent)
	if cl.accept != "" {
		req.Header.Set("Accept", cl.accept)
	}
	if cl.body != nil {
		req.Header.Set(apiv1.HeaderContentType, apiv1.ContentTypeJSON)
	}
	if cl.etag != "" {
		req.Header.Set(apiv1.HeaderIfNoneMatch, cl.etag)
	}
	if c.hasBasic {
		req.SetBasicAuth(c.basicUser, c.basicPass)
	} else if cl.auth && c.token != "" {
		req.Header.Set(apiv1.HeaderAuthorization, apiv1.BearerPrefix+string(c.token))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return !permanentTransportError(err), 0, &OpError{Op: cl.op(), Err: transportCause(err, actx, cl.timeout)}
	}
	defer func() {
		// Drain a little so that the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
	}()
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		retry, err := cl.handle(resp)
		if err != nil {
			if actx.Err() != nil && ctx.Err() == nil {
				// The attempt's limit passed while the answer was read: a timeout like one
				// before the answer, retried the same way.
				err = fmt.Errorf("%w (the attempt's limit of %v passed)", err, cl.timeout)
				retry = true
			}
			return retry, 0, &OpError{Op: cl.op(), Err: err}
		}
		return false, 0, nil
	}
	ae := readAPIError(cl.op(), resp)
	retry = retryableStatus(resp.StatusCode)
	if ae.RetryAfter > c.retry.Cap {
		// The backend asks for a longer pause than a call may take; the caller schedules it.
		retry = false
	}
	return retry, ae.RetryAfter, ae
}

// transportCause strips the request URL from a transport error (the cause names the address)
// and explains an attempt's timeout.
func transportCause(err error, actx context.Context, limit time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) && actx.Err() != nil {
		return fmt.Errorf("no answer within the attempt's limit of %v: %w", limit, err)
	}
	return err
}

// readAPIError builds the *APIError of a non-2xx answer.
func readAPIError(op string, resp *http.Response) *APIError {
	ae := &APIError{Op: op, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get(apiv1.HeaderRetryAfter))}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	if err != nil {
		ae.Message = "reading the error body: " + err.Error()
		return ae
	}
	if resp.StatusCode/100 == 3 {
		ae.Message = "redirect to " + strconv.Quote(resp.Header.Get("Location")) + " not followed"
		return ae
	}
	if eb, err := apiv1.ParseError(body); err == nil {
		ae.Code, ae.Message, ae.Field = eb.Error.Code, eb.Error.Message, eb.Error.Field
		return ae
	}
	ae.Message = fmt.Sprintf("the body is not an API error (Content-Type %q, %d bytes)", resp.Header.Get(apiv1.HeaderContentType), len(body))
	if s := snippet(body); s != "" {
		ae.Message += ": " + s
	}
	return ae
}

// snippet returns up to 200 printable characters of b for an error message.
func snippet(b []byte) string {
	var sb strings.Builder
	for _, r := range string(b) {
		if sb.Len() >= 200 {
			sb.WriteString("…")
			break
		}
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			sb.WriteByte(' ')
		case r < 0x20 || r == 0x7f || r == 0xfffd:
			sb.WriteByte('?')
		default:
			sb.WriteRune(r)
		}
	}
	return strings.TrimSpace(sb.String())
}

// parseRetryAfter reads delay-seconds or an HTTP date; zero if absent or invalid.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > 86400 {
			n = 86400
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// readBody reads a body of at most limit bytes.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: the answer announces %d bytes, the limit is %d", ErrResponseTooLarge, resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: the answer exceeds the limit of %d bytes", ErrResponseTooLarge, limit)
	}
	return b, nil
}

// readJSON decodes a JSON answer of at most c.maxResp bytes into v; strict refuses unknown
// fields. It reports whether a failure may be retried (a body cut short).
func (c *Client) readJSON(resp *http.Response, v any, strict bool) (bool, error) {
	if err := checkMediaType(resp, apiv1.ContentTypeJSON); err != nil {
		return false, err
	}
	b, err := readBody(resp, c.maxResp)
	if err != nil {
		return !errors.Is(err, ErrResponseTooLarge), err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return false, fmt.Errorf("decoding the answer: %w", err)
	}
	if dec.More() {
		return false, errors.New("decoding the answer: data after the JSON document")
	}
	return false, nil
}

// checkMediaType checks that a 200 answer has one of the wanted media types; an absent
// Content-Type is accepted.
func checkMediaType(resp *http.Response, want ...string) error {
	ct := resp.Header.Get(apiv1.HeaderContentType)
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, w := range want {
			if mt == w {
				return nil
			}
		}
	}
	return fmt.Errorf("the answer has Content-Type %q, want %s", ct, strings.Join(want, " or "))
}

// checkETagArg checks an ETag passed in by the caller before it becomes a header.
func checkETagArg(etag string) error {
	if len(etag) > 1024 {
		return errors.New("the ETag is longer than 1024 bytes")
	}
	for i := 0; i < len(etag); i++ {
		if b := etag[i]; b < 0x20 || b == 0x7f {
			return fmt.Errorf("the ETag has a control character at offset %d", i)
		}
	}
	return nil
}

// marshal encodes a request body and checks it against the backend's limit.
func marshal(v any, limit int) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%w: %d bytes, the backend accepts at most %d", ErrRequestTooLarge, len(b), limit)
	}
	return b, nil
}
