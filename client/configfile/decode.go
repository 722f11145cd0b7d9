package configfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decode parses data into f. Before handing data to encoding/json it walks the document once
// against the shape of File, so that every problem is reported with the path of the field
// (partners[2].enabled), its line and column, and problems encoding/json lets pass are caught:
// duplicate keys (the later one would silently win), keys differing only in case (encoding/json
// would accept them), trailing data after the document.
func decode(data []byte, f *File) error {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, n := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		line, col := position(data, int64(off))
		return &FieldError{Line: line, Column: col, Msg: "the file is not valid UTF-8"}
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) == 0 {
		return &FieldError{Msg: "the file is empty; it must hold one JSON object"}
	} else if trimmed[0] != '{' {
		line, col := position(data, int64(bytes.Index(data, trimmed[:1])))
		return &FieldError{Line: line, Column: col, Msg: "the file must hold one JSON object, starting with {"}
	}
	w := &walker{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	w.dec.UseNumber()
	if err := w.value(reflect.TypeFor[File](), ""); err != nil {
		return err
	}
	if _, err := w.dec.Token(); err != io.EOF {
		return w.errorf("", "unexpected data after the end of the document")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(f); err != nil {
		// The walk has checked everything encoding/json checks; this is a safety net.
		return &FieldError{Msg: err.Error()}
	}
	return nil
}

type walker struct {
	data []byte
	dec  *json.Decoder
}

// errorf returns a FieldError at the decoder's current position.
func (w *walker) errorf(field, format string, args ...any) error {
	line, col := position(w.data, w.dec.InputOffset())
	return &FieldError{Field: field, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

func (w *walker) token(field string) (json.Token, error) {
	tok, err := w.dec.Token()
	if err == nil {
		return tok, nil
	}
	if errors.Is(err, io.EOF) {
		return nil, w.errorf(field, "unexpected end of the document")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(w.data, se.Offset)
		return nil, &FieldError{Field: field, Line: line, Column: col, Msg: "invalid JSON: " + strings.TrimPrefix(se.Error(), "json: ")}
	}
	return nil, w.errorf(field, "invalid JSON: %v", err)
}

var (
	durationType = reflect.TypeFor[Duration]()
	timeType     = reflect.TypeFor[Time]()
)

// value consumes one JSON value that must fit type t at path field. null is accepted for every
// field and means "not set".
func (w *walker) value(t reflect.Type, field string) error {
	tok, err := w.token(field)
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		s, ok := tok.(string)
		if !ok {
			return w.wrongType(field, "a duration string such as \"30s\"", tok)
		}
		if _, err := parseDuration(s); err != nil {
			return w.errorf(field, "%v", err)
		}
		return nil
	case t == timeType:
		s, ok := tok.(string)
		if !ok {
			return w.wrongType(field, "an RFC 3339 time string", tok)
		}
		if _, err := parseTime(s); err != nil {
			return w.errorf(field, "%v", err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if tok != json.Delim('{') {
			return w.wrongType(field, "an object", tok)
		}
		return w.object(t, field)
	case reflect.Slice:
		if tok != json.Delim('[') {
			return w.wrongType(field, "a list", tok)
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(t.Elem(), fmt.Sprintf("%s[%d]", field, i)); err != nil {
				return err
			}
		}
		_, err := w.token(field) // ']'
		return err
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return w.wrongType(field, "a string", tok)
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return w.wrongType(field, "true or false", tok)
		}
	case reflect.Uint32, reflect.Uint64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.wrongType(field, "a whole number", tok)
		}
		bits := 64
		if t.Kind() == reflect.Uint32 {
			bits = 32
		}
		if _, err := strconv.ParseUint(string(n), 10, bits); err != nil {
			return w.errorf(field, "%s is not a whole number from 0 to %d", n, uint64(1)<<bits-1)
		}
	case reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.wrongType(field, "a number", tok)
		}
		v, err := strconv.ParseFloat(string(n), 64)
		if err != nil || math.IsInf(v, 0) {
			return w.errorf(field, "%s is not a usable number", n)
		}
	default:
		return w.errorf(field, "internal error: no rule for %v", t)
	}
	return nil
}

// object consumes the members of an object (after '{') that must fit struct type t.
func (w *walker) object(t reflect.Type, field string) error {
	fields := jsonFields(t)
	seen := make(map[string]bool)
	for w.dec.More() {
		tok, err := w.token(field)
		if err != nil {
			return err
		}
		key := tok.(string) // object keys are always strings
		path := key
		if field != "" {
			path = field + "." + key
		}
		ft, ok := fields[key]
		if !ok {
			for name := range fields {
				if strings.EqualFold(name, key) {
					return w.errorf(path, "unknown field (did you mean %q? names are case-sensitive)", name)
				}
			}
			return w.errorf(path, "unknown field; known fields here: %s", knownList(fields))
		}
		if seen[key] {
			return w.errorf(path, "field given twice")
		}
		seen[key] = true
		if err := w.value(ft, path); err != nil {
			return err
		}
	}
	_, err := w.token(field) // '}'
	return err
}

func (w *walker) wrongType(field, want string, tok json.Token) error {
	var got string
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			got = "an object"
		case '[':
			got = "a list"
		default:
			got = string(v)
		}
	case string:
		got = fmt.Sprintf("the string %q", v)
	case json.Number:
		got = "the number " + string(v)
	case bool:
		got = strconv.FormatBool(v)
	default:
		got = fmt.Sprint(v)
	}
	return w.errorf(field, "want %s, got %s", want, got)
}

// jsonFields maps the JSON names of t's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "" || name == "-" || !sf.IsExported() {
			continue
		}
		m[name] = sf.Type
	}
	return m
}

func knownList(fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
