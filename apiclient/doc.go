// Package apiclient is the typed HTTPS client of the backend API v1 (package apiv1,
// docs/api/openapi.yaml), used by the internal proxy client (smartproxy-client) and by nothing
// in the DMZ.
//
// A Client is made once with New from a Config and is safe for concurrent use. Every method
// takes a context and makes one logical call:
//
//	Config             GET  /v1/config          ETag and long poll
//	CRL                GET  /v1/crls/{id}       streamed into an io.Writer, bounded
//	License            GET  /v1/license         ETag
//	Health             GET  /v1/health          no token
//	ReportCRLURLs      POST /v1/crl-urls
//	PostEvents         POST /v1/events          idempotent by event ID
//	PutLicenseStatus   PUT  /v1/license-status
//	ReportConfigStatus POST /v1/config-status
//
// Idempotent calls (every GET and PUT, and PostEvents) are retried after network errors and
// after 408, 429 and 5xx answers, with full-jitter exponential backoff and Retry-After honoured;
// other 4xx answers are never retried. A backend answer that is not 2xx or 304 is returned as an
// *APIError; errors.Is(err, ErrUnauthorized) and errors.Is(err, ErrNotFound) test the common
// cases.
//
// Credentials never appear in errors or logs: the bearer token (Config.Token) and the password of
// the base URL's user information (sent as HTTP basic authentication) are kept out of every URL
// the client builds, and Config and Client print them redacted.
package apiclient
