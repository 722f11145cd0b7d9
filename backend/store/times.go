package store

import (
	"database/sql"
	"fmt"
	"time"
)

// timeFormat is how times are stored: fixed width and UTC, so that they
// compare correctly as strings in SQL.
const timeFormat = "2006-01-02T15:04:05.000000000Z"

// ts formats t for storage.
func ts(t time.Time) string { return t.UTC().Format(timeFormat) }

// nullTS formats t for storage, the zero time as NULL.
func nullTS(t time.Time) sql.NullString {
	if t.IsZero() {
		return sql.NullString{}
	}
	return sql.NullString{String: ts(t), Valid: true}
}

// parseTS parses a stored time; NULL or "" is the zero time.
func parseTS(s sql.NullString) (time.Time, error) {
	if !s.Valid || s.String == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(timeFormat, s.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: stored time %q: %w", s.String, err)
	}
	return t, nil
}

// mustTS parses a stored time that the schema declares NOT NULL.
func mustTS(s string) (time.Time, error) { return parseTS(sql.NullString{String: s, Valid: true}) }
