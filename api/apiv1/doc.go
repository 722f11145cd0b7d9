// Package apiv1 is version 1 of the HTTP contract between the internal proxy client
// (smartproxy-client) and its backend: the JSON documents, the paths, the header names, the
// error body, and the validation rules both ends share.
//
// The same contract is written down as OpenAPI 3.1 in docs/api/openapi.yaml; a test keeps the
// two in step. The package holds no HTTP client or server code: the client is package apiclient,
// the reference backend is package backend, and both import this package.
//
// # Conventions
//
// All paths are below /v1. Bodies are JSON in UTF-8 with snake_case keys, except the CRL and
// license downloads, which are raw bytes. Every endpoint except GET /v1/health requires
// "Authorization: Bearer <token>". Cacheable documents (the configuration, a CRL, the license)
// carry a strong, quoted ETag; a request with "If-None-Match" naming the current ETag is answered
// with 304 Not Modified. GET /v1/config with "If-None-Match" and "?wait=<seconds>" is a long
// poll: the backend holds the request until the configuration changes (then 200) or the wait has
// passed (then 304).
//
// Every non-2xx answer has a JSON ErrorBody, whose Code is one of the Code* constants. Unknown
// JSON fields in a request body are refused with CodeInvalidJSON, and request bodies larger than
// MaxRequestBytes (MaxEventsRequestBytes for events) with CodeBodyTooLarge.
//
// Secrets in documents (partner passwords, private keys) have the type Secret, whose String
// method redacts them, so that printing a document with %v or %+v never reveals them.
package apiv1
