package event

import "strconv"

// Kind is the JSON type of a log field.
type Kind int

// The kinds of log fields.
const (
	// String fields are JSON strings (the default of a field not in the table).
	String Kind = iota
	// Number fields are JSON numbers: counts, ids, indexes, versions.
	Number
	// Bool fields are JSON true or false.
	Bool
)

// String returns the kind's JSON name.
func (k Kind) String() string {
	switch k {
	case Number:
		return "number"
	case Bool:
		return "boolean"
	}
	return "string"
}

// fieldKinds declares the type of every log field that is not a string. A field has one type in
// every line of every daemon, so that a log pipeline can index it: tunnel_index is a number,
// never "0"; esid_reason is the two digits the partner received, always a string; status is a
// word (SERVING, updated), an HTTP status is http_status.
var fieldKinds = map[string]Kind{
	"session_id":            Number,
	"local_session_id":      Number,
	"server_session_id":     Number,
	"tunnel_session_id":     Number,
	"tunnel_index":          Number,
	"tunnel":                Number,
	"streams":               Number,
	"sessions":              Number,
	"config_version":        Number,
	"revision":              Number,
	"problems":              Number,
	"count":                 Number,
	"dropped":               Number,
	"dropped_total":         Number,
	"attempt":               Number,
	"failures":              Number,
	"bytes":                 Number,
	"http_status":           Number,
	"open_sessions":         Number,
	"frames":                Number,
	"server_config_version": Number,
	"accepted":              Number,
	"duplicates":            Number,
	"stale_pid":             Number,
	"pid":                   Number,
	"suppressed":            Number,
	"sources":               Number,
	"max_sessions":          Number,
	"bytes_in":              Number,
	"bytes_out":             Number,
	"bytes_from_partner":    Number,
	"bytes_to_partner":      Number,
	"license_valid":         Bool,
	"valid":                 Bool,
	"changed":               Bool,
	"generated":             Bool,
	"applied":               Bool,
	"complete":              Bool,
}

// KindOf returns the declared kind of field key.
func KindOf(key string) Kind { return fieldKinds[key] }

// Value returns the text value v of field key in the key's declared kind: a number field whose
// text is a number becomes that number, a bool field's "true" or "false" a bool. Text that does
// not parse stays text (and a test over the daemons' logs reports it).
func Value(key, v string) any {
	switch fieldKinds[key] {
	case Number:
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			return n
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	case Bool:
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	}
	return v
}
