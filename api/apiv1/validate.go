package apiv1

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"smartproxy/oftp2"
)

// FieldError is a validation failure of one field. The backend answers it as 400 with
// CodeInvalidField and Field in the ErrorBody.
type FieldError struct {
	// Field is the JSON path of the field, e.g. "events[2].severity".
	Field string
	// Message says what is wrong; it never repeats a secret value.
	Message string
}

// Error returns "field: message".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// prefixed returns err with its field path below prefix.
func prefixed(prefix string, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	f := prefix
	if fe.Field != "" {
		if strings.HasPrefix(fe.Field, "[") {
			f += fe.Field
		} else {
			f += "." + fe.Field
		}
	}
	return &FieldError{Field: f, Message: fe.Message}
}

// Length limits of text fields.
const (
	// MaxIDLength is the longest event ID and CRL ID, in bytes.
	MaxIDLength = 128
	// MaxNameLength is the longest event name, in bytes.
	MaxNameLength = 128
	// MaxTextLength is the longest free text (event message, rule substring and description,
	// partner name), in bytes.
	MaxTextLength = 4096
	// MaxFields is the largest number of entries in Event.Fields.
	MaxFields = 64
	// MaxFieldValueLength is the longest Event.Fields value, in bytes.
	MaxFieldValueLength = 4096
	// MaxAddressLength is the longest address or Odette ID text in an event, in bytes.
	MaxAddressLength = 256
	// MaxCertificateBindings is the largest number of certificate bindings of one partner.
	MaxCertificateBindings = 64
)

// ValidateOdetteID checks that id can be sent as SSIDCODE (RFC 5024 §5.3.2, §5.4) under the
// given charset policy ("" means strict), by the same rules the OFTP2 codec applies on the wire.
func ValidateOdetteID(id string, cs Charset) error {
	return checkSSID("odette_id", id, "", cs)
}

// checkSSID validates an SSID with id and password through the codec and names field in the
// error. The message never repeats the password.
func checkSSID(field, id, password string, cs Charset) error {
	opts := &oftp2.ParseOptions{Charset: oftp2.CharsetStrict}
	if cs == CharsetLenient {
		opts.Charset = oftp2.CharsetLenient
	}
	if id == "" {
		return fieldErr(field, "is empty")
	}
	ssid := &oftp2.SSID{Level: 5, ID: id, Password: oftp2.Password(password), BufferSize: oftp2.MaxExchangeBuffer,
		Mode: oftp2.ModeBoth, Credit: oftp2.MaxCredit}
	err := oftp2.Validate(ssid, opts)
	if err == nil {
		return nil
	}
	var pe *oftp2.ProtocolError
	if errors.As(err, &pe) {
		return fieldErr(field, "%s", pe.Msg)
	}
	return fieldErr(field, "%v", err)
}

// ValidatePartner checks a partner: its Odette ID and password by the OFTP2 field rules for its
// charset, direction, charset, networks, certificate bindings and caps.
func ValidatePartner(p *Partner) error {
	if p.Charset != "" && !p.Charset.Valid() {
		return fieldErr("charset", "%q is not \"strict\" or \"lenient\"", p.Charset)
	}
	if p.Direction != "" && !p.Direction.Valid() {
		return fieldErr("direction", "%q is not \"both\", \"incoming\" or \"outgoing\"", p.Direction)
	}
	if p.Revocation != "" && !p.Revocation.Valid() {
		return fieldErr("revocation", "%q is not \"soft\" or \"hard\"", p.Revocation)
	}
	if err := checkSSID("odette_id", p.OdetteID, "", p.Charset); err != nil {
		return err
	}
	if p.Password != "" {
		if err := checkSSID("password", "O0000", string(p.Password), p.Charset); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return fieldErr("password", "is not a valid SSID password (up to 8 characters of the partner's charset)")
			}
			return err
		}
	}
	if err := checkText("name", p.Name, MaxTextLength); err != nil {
		return err
	}
	if len(p.CertificateBindings) > MaxCertificateBindings {
		return fieldErr("certificate_bindings", "has %d entries, at most %d allowed", len(p.CertificateBindings), MaxCertificateBindings)
	}
	for i := range p.CertificateBindings {
		if err := ValidateCertificateBinding(&p.CertificateBindings[i]); err != nil {
			return prefixed("certificate_bindings["+strconv.Itoa(i)+"]", err)
		}
	}
	for i, n := range p.AllowedNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return fieldErr("allowed_networks["+strconv.Itoa(i)+"]", "%q is not a CIDR network such as 192.0.2.0/24 or 2001:db8::/32", n)
		}
	}
	if p.MaxCredit > oftp2.MaxCredit {
		return fieldErr("max_credit", "%d is above %d", p.MaxCredit, oftp2.MaxCredit)
	}
	if p.MaxBufferSize != 0 && (p.MaxBufferSize < oftp2.MinExchangeBuffer || p.MaxBufferSize > oftp2.MaxExchangeBuffer) {
		return fieldErr("max_buffer_size", "%d is not within %d–%d", p.MaxBufferSize, oftp2.MinExchangeBuffer, oftp2.MaxExchangeBuffer)
	}
	return nil
}

// ValidateCertificateBinding checks that b names at least one attribute and that its
// fingerprint, if any, is 64 hexadecimal digits.
func ValidateCertificateBinding(b *CertificateBinding) error {
	if b.SubjectSerialNumber == "" && b.SHA256Fingerprint == "" && b.Subject == "" {
		return fieldErr("", "names no attribute (subject_serial_number, sha256_fingerprint or subject)")
	}
	if b.SHA256Fingerprint != "" && !isHex(b.SHA256Fingerprint, 64) {
		return fieldErr("sha256_fingerprint", "is not 64 hexadecimal digits")
	}
	if err := checkText("subject_serial_number", b.SubjectSerialNumber, MaxAddressLength); err != nil {
		return err
	}
	return checkText("subject", b.Subject, MaxTextLength)
}

// ValidateIgnoreRule checks a log-ignore rule: a substring of printable text, a description, and
// a window whose end (if any) is after its start (if any). The ID is not checked.
func ValidateIgnoreRule(r *LogIgnoreRule) error {
	if strings.TrimSpace(r.Substring) == "" {
		return fieldErr("substring", "is empty")
	}
	if err := checkText("substring", r.Substring, MaxTextLength); err != nil {
		return err
	}
	if err := checkText("description", r.Description, MaxTextLength); err != nil {
		return err
	}
	if r.ValidFrom != nil && r.ValidFrom.IsZero() {
		return fieldErr("valid_from", "is the zero time; use null for \"already valid\"")
	}
	if r.ValidUntil != nil && r.ValidUntil.IsZero() {
		return fieldErr("valid_until", "is the zero time; use null for \"without end\"")
	}
	if r.ValidFrom != nil && r.ValidUntil != nil && !r.ValidUntil.After(*r.ValidFrom) {
		return fieldErr("valid_until", "%s is not after valid_from %s",
			r.ValidUntil.Format(timeLayout), r.ValidFrom.Format(timeLayout))
	}
	return nil
}

const timeLayout = "2006-01-02T15:04:05.999999999Z07:00"

// ValidateEventID checks an event ID: 1 to MaxIDLength characters of A–Z, a–z, 0–9, "-" and
// "_".
func ValidateEventID(id string) error {
	if id == "" {
		return fieldErr("id", "is empty")
	}
	if len(id) > MaxIDLength {
		return fieldErr("id", "is %d bytes long, at most %d allowed", len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !idChar(id[i]) || id[i] == '.' {
			return fieldErr("id", "has %q at offset %d; only A–Z, a–z, 0–9, \"-\" and \"_\" are allowed", id[i], i)
		}
	}
	return nil
}

// ValidateCRLID checks a CRL ID: 1 to MaxIDLength characters of A–Z, a–z, 0–9, "-", "_" and
// ".", not "." or "..", so that it is one safe path segment.
func ValidateCRLID(id string) error {
	if id == "" {
		return fieldErr("id", "is empty")
	}
	if len(id) > MaxIDLength {
		return fieldErr("id", "is %d bytes long, at most %d allowed", len(id), MaxIDLength)
	}
	if id == "." || id == ".." {
		return fieldErr("id", "%q is not a CRL ID", id)
	}
	for i := 0; i < len(id); i++ {
		if !idChar(id[i]) {
			return fieldErr("id", "has %q at offset %d; only A–Z, a–z, 0–9, \"-\", \"_\" and \".\" are allowed", id[i], i)
		}
	}
	return nil
}

func idChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
}

// ValidateEvent checks one event: its ID, a set time, severity, name and source, and text fields
// that are valid UTF-8 within their limits.
func ValidateEvent(e *Event) error {
	if err := ValidateEventID(e.ID); err != nil {
		return err
	}
	if e.Time.IsZero() {
		return fieldErr("time", "is missing")
	}
	if !e.Severity.Valid() {
		return fieldErr("severity", "%q is not debug, info, warning, error or critical", e.Severity)
	}
	if e.Name == "" {
		return fieldErr("name", "is empty")
	}
	if len(e.Name) > MaxNameLength {
		return fieldErr("name", "is %d bytes long, at most %d allowed", len(e.Name), MaxNameLength)
	}
	for i := 0; i < len(e.Name); i++ {
		if c := e.Name[i]; c <= ' ' || c >= 0x7f {
			return fieldErr("name", "has %q at offset %d; only printable ASCII without spaces is allowed", c, i)
		}
	}
	if !e.Source.Valid() {
		return fieldErr("source", "%q is not \"server\" or \"client\"", e.Source)
	}
	if err := checkUTF8("odette_id", e.OdetteID, MaxAddressLength); err != nil {
		return err
	}
	if err := checkUTF8("remote_addr", e.RemoteAddr, MaxAddressLength); err != nil {
		return err
	}
	if err := checkUTF8("message", e.Message, MaxTextLength); err != nil {
		return err
	}
	if len(e.Fields) > MaxFields {
		return fieldErr("fields", "has %d entries, at most %d allowed", len(e.Fields), MaxFields)
	}
	for k, v := range e.Fields {
		if k == "" || len(k) > MaxNameLength || !utf8.ValidString(k) {
			return fieldErr("fields", "has a key that is empty, longer than %d bytes or not UTF-8", MaxNameLength)
		}
		if err := checkUTF8("fields."+k, v, MaxFieldValueLength); err != nil {
			return err
		}
	}
	return nil
}

// ValidateEventsRequest checks a batch of 1 to MaxEventsPerRequest events; errors name the event
// as "events[i].field".
func ValidateEventsRequest(r *EventsRequest) error {
	if len(r.Events) == 0 {
		return fieldErr("events", "is empty")
	}
	if len(r.Events) > MaxEventsPerRequest {
		return fieldErr("events", "has %d events, at most %d allowed per request", len(r.Events), MaxEventsPerRequest)
	}
	for i := range r.Events {
		if err := ValidateEvent(&r.Events[i]); err != nil {
			return prefixed("events["+strconv.Itoa(i)+"]", err)
		}
	}
	return nil
}

// ValidateCRLURL checks a CRL distribution point: an absolute http or https URL with a host, at
// most MaxURLLength bytes.
func ValidateCRLURL(s string) error {
	if len(s) > MaxURLLength {
		return fieldErr("", "is %d bytes long, at most %d allowed", len(s), MaxURLLength)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fieldErr("", "is not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fieldErr("", "%q is not an http or https URL", s)
	}
	if u.Host == "" {
		return fieldErr("", "%q has no host", s)
	}
	return nil
}

// ValidateCRLURLsRequest checks 1 to MaxCRLURLsPerRequest URLs with ValidateCRLURL.
func ValidateCRLURLsRequest(r *CRLURLsRequest) error {
	if len(r.URLs) == 0 {
		return fieldErr("urls", "is empty")
	}
	if len(r.URLs) > MaxCRLURLsPerRequest {
		return fieldErr("urls", "has %d URLs, at most %d allowed per request", len(r.URLs), MaxCRLURLsPerRequest)
	}
	for i, u := range r.URLs {
		if err := ValidateCRLURL(u); err != nil {
			return prefixed("urls["+strconv.Itoa(i)+"]", err)
		}
	}
	return nil
}

// ValidateLicenseStatus checks a license status: a proxy ID of printable text, and an
// expiry when valid.
func ValidateLicenseStatus(s *LicenseStatus) error {
	if s.ProxyID == "" {
		return fieldErr("proxy_id", "is empty")
	}
	if err := checkText("proxy_id", s.ProxyID, MaxIDLength); err != nil {
		return err
	}
	if s.Valid && (s.ExpiresAt == nil || s.ExpiresAt.IsZero()) {
		return fieldErr("expires_at", "is missing for a valid license")
	}
	if t := s.Tunnel; t != nil {
		if t.Streams < 0 || t.Streams > MaxTunnelStreams {
			return fieldErr("tunnel.streams", "%d is out of range; want 0 to %d", t.Streams, MaxTunnelStreams)
		}
		if t.OpenSessions < 0 {
			return fieldErr("tunnel.open_sessions", "%d is negative", t.OpenSessions)
		}
		if (t.Streams == 0) != (t.ConnectedAt == nil) {
			return fieldErr("tunnel.connected_at", "is given if and only if streams is not 0")
		}
	}
	return checkUTF8("reason", s.Reason, MaxTextLength)
}

// MaxTunnelStreams is the largest TunnelState.Streams accepted.
const MaxTunnelStreams = 1024

// ValidateConfigStatus checks a configuration status: a non-negative revision, the ETag, and
// the error entries.
func ValidateConfigStatus(s *ConfigStatus) error {
	if s.Revision < 0 {
		return fieldErr("revision", "%d is negative", s.Revision)
	}
	if s.ETag != "" {
		if err := ValidateETag(s.ETag); err != nil {
			return prefixed("etag", err)
		}
	}
	if len(s.Errors) > MaxEventsPerRequest {
		return fieldErr("errors", "has %d entries, at most %d allowed", len(s.Errors), MaxEventsPerRequest)
	}
	for i, e := range s.Errors {
		p := "errors[" + strconv.Itoa(i) + "]"
		if err := checkUTF8(p+".field", e.Field, MaxTextLength); err != nil {
			return err
		}
		if err := checkUTF8(p+".message", e.Message, MaxTextLength); err != nil {
			return err
		}
	}
	return nil
}

// ValidateETag checks that s is a strong entity tag (RFC 9110 §8.8.3): a quoted string of
// visible ASCII characters other than '"', not prefixed with W/.
func ValidateETag(s string) error {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return fieldErr("", "%q is not a quoted strong entity tag", s)
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; c <= 0x20 || c == '"' || c >= 0x7f {
			return fieldErr("", "%q has a character not allowed in an entity tag", s)
		}
	}
	return nil
}

// checkUTF8 checks that s is valid UTF-8 of at most max bytes.
func checkUTF8(field, s string, max int) error {
	if len(s) > max {
		return fieldErr(field, "is %d bytes long, at most %d allowed", len(s), max)
	}
	if !utf8.ValidString(s) {
		return fieldErr(field, "is not valid UTF-8")
	}
	return nil
}

// checkText is checkUTF8 that also refuses control characters.
func checkText(field, s string, max int) error {
	if err := checkUTF8(field, s, max); err != nil {
		return err
	}
	for i, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fieldErr(field, "has the control character %U at offset %d", r, i)
		}
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
