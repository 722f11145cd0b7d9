package apiv1

import (
	"net/http"
	"net/url"
	"time"
)

// Paths of the v1 endpoints. PathCRLPrefix is followed by a CRL's ID; use CRLPath to build it.
const (
	// PathConfig is GET: the proxy configuration (ConfigDocument), with ETag and long poll.
	PathConfig = "/v1/config"
	// PathCRLPrefix followed by a CRL's ID is GET: that CRL's DER bytes.
	PathCRLPrefix = "/v1/crls/"
	// PathCRL is the OpenAPI template of the CRL download path.
	PathCRL = "/v1/crls/{id}"
	// PathCRLURLs is POST: CRL distribution points the DMZ server reported (CRLURLsRequest).
	PathCRLURLs = "/v1/crl-urls"
	// PathEvents is POST: a batch of events (EventsRequest), answered with EventsResponse.
	PathEvents = "/v1/events"
	// PathLicenseStatus is PUT: the DMZ server's license status (LicenseStatus).
	PathLicenseStatus = "/v1/license-status"
	// PathLicense is GET: the license file for this proxy, with ETag.
	PathLicense = "/v1/license"
	// PathConfigStatus is POST: what the DMZ server answered for a configuration (ConfigStatus).
	PathConfigStatus = "/v1/config-status"
	// PathHealth is GET without authentication: HealthResponse.
	PathHealth = "/v1/health"
)

// Endpoint is one method and path of the contract.
type Endpoint struct {
	// Method is the HTTP method, e.g. "GET".
	Method string
	// Path is the path, with "{id}" style parameters as in OpenAPI.
	Path string
	// Auth says whether the endpoint requires a bearer token.
	Auth bool
}

// Endpoints returns every endpoint of v1, in a new slice.
func Endpoints() []Endpoint {
	return []Endpoint{
		{http.MethodGet, PathConfig, true},
		{http.MethodGet, PathCRL, true},
		{http.MethodPost, PathCRLURLs, true},
		{http.MethodPost, PathEvents, true},
		{http.MethodPut, PathLicenseStatus, true},
		{http.MethodGet, PathLicense, true},
		{http.MethodPost, PathConfigStatus, true},
		{http.MethodGet, PathHealth, false},
	}
}

// CRLPath returns the download path of the CRL with the given ID, escaped for use in a URL.
func CRLPath(id string) string { return PathCRLPrefix + url.PathEscape(id) }

// Header names used by the contract.
const (
	// HeaderAuthorization carries "Bearer <token>" on every authenticated request.
	HeaderAuthorization = "Authorization"
	// HeaderETag is the strong, quoted entity tag of a cacheable document.
	HeaderETag = "ETag"
	// HeaderIfNoneMatch names the ETag the caller already has.
	HeaderIfNoneMatch = "If-None-Match"
	// HeaderRetryAfter is sent with 429 and 503: seconds to wait before retrying.
	HeaderRetryAfter = "Retry-After"
	// HeaderContentType is the media type of a body.
	HeaderContentType = "Content-Type"
)

// Media types of bodies.
const (
	// ContentTypeJSON is the media type of every JSON document and of the error body.
	ContentTypeJSON = "application/json"
	// ContentTypeCRL is the media type of a CRL download (DER, RFC 5280).
	ContentTypeCRL = "application/pkix-crl"
	// ContentTypeLicense is the media type of the license download.
	ContentTypeLicense = "application/octet-stream"
)

// BearerPrefix precedes the token in the Authorization header.
const BearerPrefix = "Bearer "

// QueryWait is the query parameter of GET /v1/config that asks for a long poll: whole seconds,
// 0 to MaxWait. It has an effect only together with If-None-Match.
const QueryWait = "wait"

// MaxWait is the longest long poll a backend must honour; a larger wait is refused with
// CodeInvalidField.
const MaxWait = 60 * time.Second

// Request body limits. A larger body is refused with 413 and CodeBodyTooLarge.
const (
	// MaxRequestBytes is the limit of every request body except events.
	MaxRequestBytes = 1 << 20
	// MaxEventsRequestBytes is the limit of a POST /v1/events body.
	MaxEventsRequestBytes = 4 << 20
)

// Limits of request contents.
const (
	// MaxEventsPerRequest is the largest number of events in one EventsRequest.
	MaxEventsPerRequest = 1000
	// MaxCRLURLsPerRequest is the largest number of URLs in one CRLURLsRequest.
	MaxCRLURLsPerRequest = 1000
	// MaxURLLength is the longest CRL URL accepted, in bytes.
	MaxURLLength = 2048
)
