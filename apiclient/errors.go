package apiclient

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"smartproxy/api/apiv1"
)

// Sentinel errors. An *APIError matches ErrUnauthorized and ErrNotFound through errors.Is.
var (
	// ErrUnauthorized matches an *APIError with status 401: the token or the basic
	// authentication was refused.
	ErrUnauthorized = errors.New("apiclient: unauthorized")
	// ErrForbidden matches an *APIError with status 403: the credentials are valid but not
	// allowed this call.
	ErrForbidden = errors.New("apiclient: forbidden")
	// ErrNotFound matches an *APIError with status 404: the document does not exist (e.g. no
	// license is stored).
	ErrNotFound = errors.New("apiclient: not found")
	// ErrCertificateMismatch is wrapped when the backend's certificate does not have the pinned
	// SHA-256 fingerprint (Config.PinSHA256).
	ErrCertificateMismatch = errors.New("apiclient: backend certificate does not match the pinned fingerprint")
	// ErrCertificateUntrusted is wrapped when the backend's certificate does not verify: an
	// unknown authority (no pin and no CA given for a self-signed certificate), a wrong host
	// name or an expired certificate.
	ErrCertificateUntrusted = errors.New("apiclient: backend certificate not trusted")
	// ErrResponseTooLarge is wrapped when an answer's body exceeds its limit.
	ErrResponseTooLarge = errors.New("apiclient: response body too large")
	// ErrRequestTooLarge is wrapped when a request body would exceed the backend's limit
	// (apiv1.MaxRequestBytes, apiv1.MaxEventsRequestBytes); nothing was sent.
	ErrRequestTooLarge = errors.New("apiclient: request body too large")
)

// APIError is an answer of the backend that is neither 2xx nor 304.
type APIError struct {
	// Op is the call, e.g. "GET /v1/config".
	Op string
	// Status is the HTTP status code.
	Status int
	// Code is the error body's code (one of the apiv1.Code* constants), or "" when the body was
	// not an apiv1.ErrorBody (e.g. an HTML page of a gateway).
	Code string
	// Message is the error body's message, or a description of the body that was not an
	// apiv1.ErrorBody.
	Message string
	// Field is the error body's field: the offending field or query parameter, if any.
	Field string
	// RetryAfter is the answer's Retry-After; zero if none.
	RetryAfter time.Duration
}

// Error returns "apiclient: <op>: <status> <code>: <message> (field <field>)".
func (e *APIError) Error() string {
	s := fmt.Sprintf("apiclient: %s: backend answered %d %s", e.Op, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Field != "" {
		s += " (field " + e.Field + ")"
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	return s
}

// Is reports whether target is ErrUnauthorized for a 401, ErrForbidden for a 403 or ErrNotFound
// for a 404.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Code == apiv1.CodeUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	}
	return false
}

// Temporary reports whether the call may succeed when repeated later: 408, 429 and 5xx
// answers other than 501 and 505.
func (e *APIError) Temporary() bool { return retryableStatus(e.Status) }

func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return code >= 500 && code <= 599
}

// OpError is a failure of a call that is not an answer of the backend: a network or TLS error,
// a body that could not be read or decoded, a body over its limit. It never contains
// credentials.
type OpError struct {
	// Op is the call, e.g. "GET /v1/config".
	Op string
	// Err is the cause.
	Err error
}

// Error returns "apiclient: <op>: <cause>".
func (e *OpError) Error() string { return "apiclient: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *OpError) Unwrap() error { return e.Err }

// Is makes a failed verification of the backend's certificate match ErrCertificateUntrusted.
func (e *OpError) Is(target error) bool {
	return target == ErrCertificateUntrusted && certificateUntrusted(e.Err)
}
