package configfile

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written as a Go duration string such as "30s" or "2m30s".
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write it like \"30s\", \"1m30s\" or \"2h\")", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return v, nil
}

// Time is a point in time written in RFC 3339 form, e.g. "2026-03-01T00:00:00Z".
type Time struct{ time.Time }

// UnmarshalText parses an RFC 3339 time.
func (t *Time) UnmarshalText(b []byte) error {
	v, err := parseTime(string(b))
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// MarshalText writes t in RFC 3339 form; the zero Time as "".
func (t Time) MarshalText() ([]byte, error) {
	if t.IsZero() {
		return nil, nil
	}
	return []byte(t.Format(time.RFC3339)), nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (write it like \"2026-03-01T00:00:00Z\")", s)
	}
	return v, nil
}
