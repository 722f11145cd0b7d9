package store

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by errors about a record that does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is wrapped by errors about a record that exists already.
var ErrConflict = errors.New("already exists")

// ErrNoDatabase is returned by Open when the database file does not exist and
// Options.Create is false.
var ErrNoDatabase = errors.New("database does not exist")

// ValidationError reports input that cannot be stored. Nothing was changed.
type ValidationError struct {
	// Field names the invalid input, as a JSON path of the configuration
	// document or a setting key, e.g. "partners.odette_id" or
	// "limits.max_sessions".
	Field string
	// Msg says what is wrong. It never repeats a secret value.
	Msg string
}

// Error implements error.
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// SchemaError reports a database whose schema this binary cannot work with.
type SchemaError struct {
	// Path is the database file.
	Path string
	// Database is the schema version recorded in the database.
	Database int
	// Binary is the newest schema version this binary knows.
	Binary int
}

// Error implements error.
func (e *SchemaError) Error() string {
	return fmt.Sprintf("database %s has schema version %d, newer than this binary's %d: use a newer smartproxy-api",
		e.Path, e.Database, e.Binary)
}

func notFound(kind string, key any) error {
	return fmt.Errorf("%s %v: %w", kind, key, ErrNotFound)
}

func conflict(kind string, key any) error {
	return fmt.Errorf("%s %v: %w", kind, key, ErrConflict)
}
