package apiv1

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Error codes of ErrorDetail.Code. They are stable: clients branch on them.
const (
	// CodeUnauthorized (401): the bearer token is missing or not valid.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden (403): the token is valid but may not do this.
	CodeForbidden = "forbidden"
	// CodeNotFound (404): the path or the document does not exist.
	CodeNotFound = "not_found"
	// CodeInvalidJSON (400): the body is not JSON of the expected shape, or has unknown fields.
	CodeInvalidJSON = "invalid_json"
	// CodeInvalidField (400): a field or query parameter has an invalid value; Field names it.
	CodeInvalidField = "invalid_field"
	// CodeBodyTooLarge (413): the request body exceeds the endpoint's limit.
	CodeBodyTooLarge = "body_too_large"
	// CodeConflict (409): the request conflicts with the stored state.
	CodeConflict = "conflict"
	// CodeInternal (500): the backend failed; the request may be retried.
	CodeInternal = "internal"
	// CodeMethodNotAllowed (405): the path does not take this method.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeUnsupportedMediaType (415): the request body is not application/json.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeUnavailable (503): the backend is temporarily unable to serve; retry after Retry-After.
	CodeUnavailable = "unavailable"
	// CodeTooManyRequests (429): the caller sends too fast; retry after Retry-After.
	CodeTooManyRequests = "too_many_requests"
)

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	// Error describes what went wrong.
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of ErrorBody.
type ErrorDetail struct {
	// Code is one of the Code* constants.
	Code string `json:"code"`
	// Message is a human-readable explanation.
	Message string `json:"message"`
	// Field is the JSON path of the offending field (e.g. "events[2].time") or the name of the
	// offending query parameter; empty when not about one field.
	Field string `json:"field,omitempty"`
}

// NewErrorBody returns an ErrorBody with the given code, message and field.
func NewErrorBody(code, message, field string) *ErrorBody {
	return &ErrorBody{Error: ErrorDetail{Code: code, Message: message, Field: field}}
}

// ParseError decodes an error body. It fails when body is not an ErrorBody or has no code.
func ParseError(body []byte) (*ErrorBody, error) {
	var eb ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		return nil, fmt.Errorf("error body is not JSON: %w", err)
	}
	if eb.Error.Code == "" {
		return nil, errors.New("error body has no error.code")
	}
	return &eb, nil
}
