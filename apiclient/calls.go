package apiclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"smartproxy/api/apiv1"
)

// Config fetches the configuration document. With etag (the ETag of the document the caller
// has) the backend answers "not modified" while the document is unchanged; then doc is nil,
// newETag is etag and changed is false. With etag and wait > 0 the call is a long poll: it
// returns as soon as the document changes, or "not modified" after wait (rounded up to whole
// seconds, at most apiv1.MaxWait). Each attempt may take Config.Timeout plus the wait.
//
// A document with a field this client does not know is refused, since ignoring a setting of the
// security configuration could weaken it silently.
func (c *Client) Config(ctx context.Context, etag string, wait time.Duration) (doc *apiv1.ConfigDocument, newETag string, changed bool, err error) {
	op := http.MethodGet + " " + apiv1.PathConfig
	if wait < 0 || wait > apiv1.MaxWait {
		return nil, "", false, &OpError{Op: op, Err: fmt.Errorf("wait %v is outside 0–%v", wait, apiv1.MaxWait)}
	}
	if err := checkETagArg(etag); err != nil {
		return nil, "", false, &OpError{Op: op, Err: err}
	}
	secs := int64((wait + time.Second - 1) / time.Second)
	cl := &call{method: http.MethodGet, path: "/config", etag: etag, auth: true, idempotent: true, timeout: c.timeout,
		accept: apiv1.ContentTypeJSON}
	if etag != "" && secs > 0 {
		cl.query = url.Values{apiv1.QueryWait: {strconv.FormatInt(secs, 10)}}
		cl.timeout += time.Duration(secs) * time.Second
	}
	cl.handle = func(resp *http.Response) (bool, error) {
		if resp.StatusCode == http.StatusNotModified {
			if etag == "" {
				return false, errors.New("the backend answered 304 Not Modified to a request without If-None-Match")
			}
			doc, newETag, changed = nil, etag, false
			return false, nil
		}
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("unexpected status %d", resp.StatusCode)
		}
		var d apiv1.ConfigDocument
		if retry, err := c.readJSON(resp, &d, true); err != nil {
			return retry, err
		}
		doc, newETag, changed = &d, resp.Header.Get(apiv1.HeaderETag), true
		return false, nil
	}
	if err := c.do(ctx, cl); err != nil {
		return nil, "", false, err
	}
	return doc, newETag, changed, nil
}

// CRL streams the body of the CRL with the given ID (apiv1.CRLInfo.ID) into w. With etag (the
// ETag the caller has) an unchanged CRL is answered without a body: newETag is etag and changed
// is false, and nothing is written. The body is limited to Config.MaxCRLBytes.
//
// The call is retried only while nothing has been written to w. On error w may hold part of the
// body, which the caller must discard.
func (c *Client) CRL(ctx context.Context, id, etag string, w io.Writer) (newETag string, changed bool, err error) {
	op := http.MethodGet + " " + apiv1.PathCRL
	if err := apiv1.ValidateCRLID(id); err != nil {
		return "", false, &OpError{Op: op, Err: err}
	}
	if err := checkETagArg(etag); err != nil {
		return "", false, &OpError{Op: op, Err: err}
	}
	cl := &call{method: http.MethodGet, path: "/crls/" + url.PathEscape(id), etag: etag, auth: true, idempotent: true,
		timeout: c.download, accept: apiv1.ContentTypeCRL + ", " + apiv1.ContentTypeJSON}
	cl.handle = func(resp *http.Response) (bool, error) {
		if resp.StatusCode == http.StatusNotModified {
			if etag == "" {
				return false, errors.New("the backend answered 304 Not Modified to a request without If-None-Match")
			}
			newETag, changed = etag, false
			return false, nil
		}
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("unexpected status %d", resp.StatusCode)
		}
		if err := checkMediaType(resp, apiv1.ContentTypeCRL, apiv1.ContentTypeLicense); err != nil {
			return false, err
		}
		n, err := copyLimited(w, resp, c.maxCRL)
		if err != nil {
			return n == 0 && !errors.Is(err, ErrResponseTooLarge) && !errors.Is(err, errWrite), err
		}
		newETag, changed = resp.Header.Get(apiv1.HeaderETag), true
		return false, nil
	}
	if err := c.do(ctx, cl); err != nil {
		return "", false, err
	}
	return newETag, changed, nil
}

// errWrite marks a failure of the caller's writer.
var errWrite = errors.New("writing the body")

// copyLimited copies the body into w, at most limit bytes, and fails when the body is longer.
func copyLimited(w io.Writer, resp *http.Response, limit int64) (int64, error) {
	if resp.ContentLength > limit {
		return 0, fmt.Errorf("%w: the answer announces %d bytes, the limit is %d", ErrResponseTooLarge, resp.ContentLength, limit)
	}
	n, err := io.Copy(writerFunc(func(p []byte) (int, error) {
		n, err := w.Write(p)
		if err != nil {
			return n, fmt.Errorf("%w: %w", errWrite, err)
		}
		return n, nil
	}), io.LimitReader(resp.Body, limit))
	if err != nil {
		if errors.Is(err, errWrite) {
			return n, err
		}
		return n, fmt.Errorf("reading the answer after %d bytes: %w", n, err)
	}
	if n == limit {
		var one [1]byte
		if m, _ := io.ReadFull(resp.Body, one[:]); m > 0 {
			return n, fmt.Errorf("%w: the answer exceeds the limit of %d bytes", ErrResponseTooLarge, limit)
		}
	}
	return n, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// License fetches the license file stored for this proxy, at most Config.MaxResponseBytes. With
// etag an unchanged license is answered without a body: license is nil, newETag is etag and
// changed is false. When no license is stored the error matches ErrNotFound.
func (c *Client) License(ctx context.Context, etag string) (license []byte, newETag string, changed bool, err error) {
	op := http.MethodGet + " " + apiv1.PathLicense
	if err := checkETagArg(etag); err != nil {
		return nil, "", false, &OpError{Op: op, Err: err}
	}
	cl := &call{method: http.MethodGet, path: "/license", etag: etag, auth: true, idempotent: true, timeout: c.download,
		accept: apiv1.ContentTypeLicense + ", " + apiv1.ContentTypeJSON}
	cl.handle = func(resp *http.Response) (bool, error) {
		if resp.StatusCode == http.StatusNotModified {
			if etag == "" {
				return false, errors.New("the backend answered 304 Not Modified to a request without If-None-Match")
			}
			license, newETag, changed = nil, etag, false
			return false, nil
		}
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("unexpected status %d", resp.StatusCode)
		}
		b, err := readBody(resp, c.maxResp)
		if err != nil {
			return !errors.Is(err, ErrResponseTooLarge), err
		}
		license, newETag, changed = b, resp.Header.Get(apiv1.HeaderETag), true
		return false, nil
	}
	if err := c.do(ctx, cl); err != nil {
		return nil, "", false, err
	}
	return license, newETag, changed, nil
}

// ReportCRLURLs reports CRL distribution points the DMZ server saw (POST /v1/crl-urls). The urls
// are checked with apiv1.ValidateCRLURLsRequest first. The call is not retried.
func (c *Client) ReportCRLURLs(ctx context.Context, urls []string) error {
	req := &apiv1.CRLURLsRequest{URLs: urls}
	return c.post(ctx, http.MethodPost, "/crl-urls", req, apiv1.ValidateCRLURLsRequest(req), apiv1.MaxRequestBytes, false)
}

// PostEvents stores events (POST /v1/events) and answers how many the backend stored now and
// how many it had already. The events are checked with apiv1.ValidateEventsRequest first, and the
// encoded batch must fit apiv1.MaxEventsRequestBytes (else ErrRequestTooLarge: split it). The call
// is retried, since the backend stores each event ID once. An answer whose counts do not add up
// to len(events) is an error, so that the caller keeps the events.
func (c *Client) PostEvents(ctx context.Context, events []apiv1.Event) (accepted, duplicates int, err error) {
	op := http.MethodPost + " " + apiv1.PathEvents
	req := &apiv1.EventsRequest{Events: events}
	if err := apiv1.ValidateEventsRequest(req); err != nil {
		return 0, 0, &OpError{Op: op, Err: err}
	}
	body, err := marshal(req, apiv1.MaxEventsRequestBytes)
	if err != nil {
		return 0, 0, &OpError{Op: op, Err: err}
	}
	var out apiv1.EventsResponse
	cl := &call{method: http.MethodPost, path: "/events", body: body, auth: true, idempotent: true, timeout: c.timeout,
		accept: apiv1.ContentTypeJSON}
	cl.handle = func(resp *http.Response) (bool, error) {
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("unexpected status %d, want 200", resp.StatusCode)
		}
		return c.readJSON(resp, &out, false)
	}
	if err := c.do(ctx, cl); err != nil {
		return 0, 0, err
	}
	if out.Accepted < 0 || out.Duplicates < 0 || out.Accepted+out.Duplicates != len(events) {
		return out.Accepted, out.Duplicates, &OpError{Op: op, Err: fmt.Errorf("the backend counted %d accepted and %d duplicates of %d events",
			out.Accepted, out.Duplicates, len(events))}
	}
	return out.Accepted, out.Duplicates, nil
}

// PutLicenseStatus reports the DMZ server's license status (PUT /v1/license-status), checked with
// apiv1.ValidateLicenseStatus first. The call is retried.
func (c *Client) PutLicenseStatus(ctx context.Context, s *apiv1.LicenseStatus) error {
	return c.post(ctx, http.MethodPut, "/license-status", s, apiv1.ValidateLicenseStatus(s), apiv1.MaxRequestBytes, true)
}

// ReportConfigStatus reports what the DMZ server answered for a configuration (POST
// /v1/config-status), checked with apiv1.ValidateConfigStatus first. The call is not retried.
func (c *Client) ReportConfigStatus(ctx context.Context, s *apiv1.ConfigStatus) error {
	return c.post(ctx, http.MethodPost, "/config-status", s, apiv1.ValidateConfigStatus(s), apiv1.MaxRequestBytes, false)
}

// post sends a JSON body that the backend answers with 2xx and no content of interest.
func (c *Client) post(ctx context.Context, method, path string, v any, invalid error, limit int, idempotent bool) error {
	op := method + " /v1" + path
	if invalid != nil {
		return &OpError{Op: op, Err: invalid}
	}
	body, err := marshal(v, limit)
	if err != nil {
		return &OpError{Op: op, Err: err}
	}
	cl := &call{method: method, path: path, body: body, auth: true, idempotent: idempotent, timeout: c.timeout,
		accept: apiv1.ContentTypeJSON}
	cl.handle = func(resp *http.Response) (bool, error) {
		if resp.StatusCode/100 != 2 {
			return false, fmt.Errorf("unexpected status %d", resp.StatusCode)
		}
		return false, nil
	}
	return c.do(ctx, cl)
}

// Health asks whether the backend serves requests (GET /v1/health, without the bearer token). It
// returns nil when the backend answers status "ok".
func (c *Client) Health(ctx context.Context) error {
	var out apiv1.HealthResponse
	cl := &call{method: http.MethodGet, path: "/health", idempotent: true, timeout: c.timeout, accept: apiv1.ContentTypeJSON}
	cl.handle = func(resp *http.Response) (bool, error) {
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("unexpected status %d, want 200", resp.StatusCode)
		}
		if retry, err := c.readJSON(resp, &out, false); err != nil {
			return retry, err
		}
		if out.Status != apiv1.HealthOK {
			return false, fmt.Errorf("the backend reports status %q", snippet([]byte(out.Status)))
		}
		return false, nil
	}
	return c.do(ctx, cl)
}
