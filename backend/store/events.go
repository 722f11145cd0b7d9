package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Event is a security or system event reported by a proxy client.
type Event struct {
	// Seq is the store's sequence number; set by AddEvents.
	Seq int64
	// ID is the client's unique id of the event.
	ID string
	// Client is the name of the client that reported it.
	Client string
	// Time is when the event happened.
	Time time.Time
	// ReceivedAt is when the backend stored it.
	ReceivedAt time.Time
	// Severity is debug, info, warning, error or critical.
	Severity string
	// Name is the stable event name, e.g. "partner_unknown".
	Name string
	// SessionID is the session the event belongs to; 0 if none.
	SessionID uint64
	// OdetteID and RemoteAddr are the partner and address involved.
	OdetteID, RemoteAddr string
	// Message is a human-readable description.
	Message string
	// Fields are further structured fields.
	Fields map[string]string
	// Source is "server" or "client".
	Source string
	// Outcome records what the backend did with the event, e.g.
	// "ignored by rule 3" or "script exit 0"; empty when nothing yet.
	Outcome string
}

// AddEvents stores the events a client reported, in one transaction. An
// event whose id is stored already counts as a duplicate and is not stored
// again. It returns the events stored now, with their Seq.
func (s *Store) AddEvents(ctx context.Context, clientID int64, events []Event) ([]Event, int, error) {
	type prepared struct {
		e      Event
		fields string
	}
	list := make([]prepared, len(events))
	for i, e := range events {
		f := fieldf("events[%d]", i)
		if e.ID == "" || e.Name == "" {
			return nil, 0, invalid(f, "id and name are required")
		}
		for _, t := range []struct{ name, v string }{{"id", e.ID}, {"name", e.Name}, {"odette_id", e.OdetteID},
			{"remote_addr", e.RemoteAddr}, {"message", e.Message}, {"source", e.Source}} {
			if err := checkText(f+"."+t.name, t.v, maxText); err != nil {
				return nil, 0, err
			}
		}
		fields := "{}"
		if len(e.Fields) > 0 {
			b, err := json.Marshal(e.Fields)
			if err != nil {
				return nil, 0, invalid(f+".fields", "%v", err)
			}
			fields = string(b)
		}
		list[i] = prepared{e: e, fields: fields}
	}
	var (
		fresh []Event
		dups  int
	)
	now := s.now().UTC()
	err := s.write(ctx, func(tx *sql.Tx) error {
		fresh, dups = nil, 0
		var client string
		if err := tx.QueryRowContext(ctx, `SELECT name FROM clients WHERE id = ?`, clientID).Scan(&client); err != nil {
			return fmt.Errorf("store: client %d: %w", clientID, err)
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO events (event_id, client_id, time, received_at, severity, name,
			session_id, odette_id, remote_addr, message, fields, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (event_id) DO NOTHING`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, p := range list {
			e := p.e
			res, err := stmt.ExecContext(ctx, e.ID, clientID, ts(e.Time), ts(now), e.Severity, e.Name, int64(e.SessionID),
				e.OdetteID, e.RemoteAddr, e.Message, p.fields, e.Source)
			if err != nil {
				return fmt.Errorf("store: add event %s: %w", e.ID, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				dups++
				continue
			}
			if e.Seq, err = res.LastInsertId(); err != nil {
				return err
			}
			e.Client, e.ReceivedAt = client, now
			fresh = append(fresh, e)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return fresh, dups, nil
}

// SetEventOutcome records what the backend did with the event with seq.
func (s *Store) SetEventOutcome(ctx context.Context, seq int64, outcome string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE events SET outcome = ? WHERE seq = ?`, outcome, seq)
		return err
	})
}

// EventFilter selects events for Events.
type EventFilter struct {
	// Since selects events that happened at or after it; zero: all.
	Since time.Time
	// Name selects events of this name; empty: all.
	Name string
	// Limit is the largest number of events returned, the newest ones. If
	// zero, 100.
	Limit int
}

// Events returns stored events, oldest first.
func (s *Store) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	var (
		where []string
		args  []any
	)
	if !f.Since.IsZero() {
		where, args = append(where, "e.time >= ?"), append(args, ts(f.Since))
	}
	if f.Name != "" {
		where, args = append(where, "e.name = ?"), append(args, f.Name)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT e.seq, e.event_id, coalesce(c.name, ''), e.time, e.received_at, e.severity, e.name, e.session_id,
		e.odette_id, e.remote_addr, e.message, e.fields, e.source, e.outcome
		FROM events e LEFT JOIN clients c ON c.id = e.client_id`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q = `SELECT * FROM (` + q + ` ORDER BY e.time DESC, e.seq DESC LIMIT ?) ORDER BY 4, 1`
	rows, err := s.r.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: read events: %w", err)
	}
	defer rows.Close()
	return scanEvents(rows)
}

// PendingEvents returns up to limit events the backend has not finished
// with (no outcome recorded), oldest first: after a restart they are
// processed again.
func (s *Store) PendingEvents(ctx context.Context, limit int) ([]Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT e.seq, e.event_id, coalesce(c.name, ''), e.time, e.received_at, e.severity,
		e.name, e.session_id, e.odette_id, e.remote_addr, e.message, e.fields, e.source, e.outcome
		FROM events e LEFT JOIN clients c ON c.id = e.client_id WHERE e.outcome = '' ORDER BY e.seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: read pending events: %w", err)
	}
	defer rows.Close()
	return scanEvents(rows)
}

// SetEventOutcomes records what the backend did with several events, by
// seq, in one transaction.
func (s *Store) SetEventOutcomes(ctx context.Context, outcomes map[int64]string) error {
	if len(outcomes) == 0 {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		for seq, o := range outcomes {
			if _, err := tx.ExecContext(ctx, `UPDATE events SET outcome = ? WHERE seq = ?`, o, seq); err != nil {
				return fmt.Errorf("store: event outcome: %w", err)
			}
		}
		return nil
	})
}

func scanEvents(rows *sql.Rows) ([]Event, error) {
	var list []Event
	for rows.Next() {
		var (
			e           Event
			t, received string
			sid         int64
			fields      string
			err         error
		)
		if err = rows.Scan(&e.Seq, &e.ID, &e.Client, &t, &received, &e.Severity, &e.Name, &sid, &e.OdetteID,
			&e.RemoteAddr, &e.Message, &fields, &e.Source, &e.Outcome); err != nil {
			return nil, err
		}
		e.SessionID = uint64(sid)
		if e.Time, err = mustTS(t); err != nil {
			return nil, err
		}
		if e.ReceivedAt, err = mustTS(received); err != nil {
			return nil, err
		}
		if fields != "{}" {
			if err := json.Unmarshal([]byte(fields), &e.Fields); err != nil {
				return nil, fmt.Errorf("store: event %s fields: %w", e.ID, err)
			}
		}
		list = append(list, e)
	}
	return list, rows.Err()
}

// EventPageFilter selects a page of events for EventPage. Every field is
// optional.
type EventPageFilter struct {
	// Severity selects events of this severity or a more severe one.
	Severity string
	// Name, OdetteID and Client select events with exactly this value.
	Name, OdetteID, Client string
	// From and Until select events that happened in [From, Until).
	From, Until time.Time
	// BeforeTime and BeforeSeq continue a listing after the last event of
	// the previous page: only events older than that one are returned.
	BeforeTime time.Time
	BeforeSeq  int64
	// Limit is the most events returned. If zero, 50.
	Limit int
}

// severityOrder lists the severities from least to most severe.
var severityOrder = []string{"debug", "info", "warning", "error", "critical"}

// EventPage returns events that match f, newest first. Every filter is
// served by an index, so a page costs about the same whatever the number of
// stored events: a name, partner or client filter walks that column's index
// newest first; a severity filter alone walks the severity index once per
// severity asked for and merges the newest of each, so rare critical events
// are found without scanning the common ones.
func (s *Store) EventPage(ctx context.Context, f EventPageFilter) ([]Event, error) {
	var sevs []string
	if f.Severity != "" {
		i := slices.Index(severityOrder, f.Severity)
		if i < 0 {
			return nil, invalid("severity", "%q is not debug, info, warning, error or critical", f.Severity)
		}
		if i > 0 {
			sevs = severityOrder[i:]
		}
	}
	var (
		where []string
		args  []any
	)
	if f.Name != "" {
		where, args = append(where, "e.name = ?"), append(args, f.Name)
	}
	if f.OdetteID != "" {
		where, args = append(where, "e.odette_id = ?"), append(args, f.OdetteID)
	}
	if f.Client != "" {
		where, args = append(where, "e.client_id = (SELECT id FROM clients WHERE name = ?)"), append(args, f.Client)
	}
	byColumn := len(where) > 0
	if !f.From.IsZero() {
		where, args = append(where, "e.time >= ?"), append(args, ts(f.From))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "e.time < ?"), append(args, ts(f.Until))
	}
	if !f.BeforeTime.IsZero() {
		bt := ts(f.BeforeTime)
		where, args = append(where, "(e.time < ? OR (e.time = ? AND e.seq < ?))"), append(args, bt, bt, f.BeforeSeq)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	if len(sevs) > 0 && byColumn {
		// The unary + keeps SQLite from walking the severity index, which
		// would scan every event of a common severity to find one partner's.
		marks := strings.Repeat("?, ", len(sevs))
		where = append(where, "+e.severity IN ("+marks[:len(marks)-2]+")")
		for _, sv := range sevs {
			args = append(args, sv)
		}
		sevs = nil
	}
	cond := ""
	if len(where) > 0 {
		cond = " AND " + strings.Join(where, " AND ")
	}
	const order = ` ORDER BY e.time DESC, e.seq DESC LIMIT ?`
	var from string
	var all []any
	if len(sevs) == 0 {
		from, all = `(SELECT * FROM events e WHERE 1 = 1`+cond+order+`)`, append(args, limit)
	} else {
		parts := make([]string, len(sevs))
		for i, sv := range sevs {
			parts[i] = `SELECT * FROM (SELECT * FROM events e WHERE e.severity = ?` + cond + order + `)`
			all = append(append(append(all, sv), args...), limit)
		}
		from = `(` + strings.Join(parts, " UNION ALL ") + `)`
	}
	q := `SELECT e.seq, e.event_id, coalesce(c.name, ''), e.time, e.received_at, e.severity, e.name, e.session_id,
		e.odette_id, e.remote_addr, e.message, e.fields, e.source, e.outcome
		FROM ` + from + ` e LEFT JOIN clients c ON c.id = e.client_id` + order
	rows, err := s.r.QueryContext(ctx, q, append(all, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: read events: %w", err)
	}
	defer rows.Close()
	return scanEvents(rows)
}

// EventBySeq returns one event.
func (s *Store) EventBySeq(ctx context.Context, seq int64) (Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT e.seq, e.event_id, coalesce(c.name, ''), e.time, e.received_at, e.severity,
		e.name, e.session_id, e.odette_id, e.remote_addr, e.message, e.fields, e.source, e.outcome
		FROM events e LEFT JOIN clients c ON c.id = e.client_id WHERE e.seq = ?`, seq)
	if err != nil {
		return Event{}, fmt.Errorf("store: read event: %w", err)
	}
	defer rows.Close()
	list, err := scanEvents(rows)
	if err != nil {
		return Event{}, err
	}
	if len(list) == 0 {
		return Event{}, notFound("event", seq)
	}
	return list[0], nil
}
