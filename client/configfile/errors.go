package configfile

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one field of a configuration file.
type FieldError struct {
	// Field is the path of the field, e.g. "partners[2].odette_id"; empty for the whole file.
	Field string
	// Line and Column locate the problem in the file (1-based) where known; 0 otherwise.
	Line, Column int
	// Msg says what is wrong.
	Msg string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d column %d: ", e.Line, e.Column)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Error is returned by Load for a configuration file that cannot be used. It lists every
// problem found, each naming its field.
type Error struct {
	// Path is the configuration file.
	Path string
	// Problems are the problems, in the order of the file; never empty.
	Problems []*FieldError
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config file %s: ", e.Path)
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// Fields returns the paths of the fields with problems, in order, for tests and tools.
func (e *Error) Fields() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.Field
	}
	return out
}

// problems collects FieldErrors during validation.
type problems []*FieldError

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}
