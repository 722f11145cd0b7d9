package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Audit says who makes a change, for the audit log. A change made with a
// context from WithAudit is recorded in the audit log in the same
// transaction as the change itself: either both are stored or neither.
type Audit struct {
	// Actor is who makes the change, e.g. "alice" (web admin) or "cli:root".
	Actor string
	// RemoteAddr is where the change came from; empty for the CLI.
	RemoteAddr string
	// Action says what is done, e.g. "partner add".
	Action string
	// Target names what the change is about, e.g. an Odette ID. It never
	// holds a secret.
	Target string
}

type auditKey struct{}

// WithAudit returns a context whose changes are recorded as a.
func WithAudit(ctx context.Context, a Audit) context.Context {
	return context.WithValue(ctx, auditKey{}, a)
}

// AuditEntry is one recorded change.
type AuditEntry struct {
	Audit
	// ID is the entry's row id.
	ID int64
	// Time is when the change was made.
	Time time.Time
}

// maxAuditText bounds each text of an audit entry.
const maxAuditText = 512

func clip(s string) string {
	if len(s) <= maxAuditText {
		return s
	}
	return s[:maxAuditText] + "…"
}

// recordAudit writes the audit entry of ctx, if any, in tx.
func (s *Store) recordAudit(ctx context.Context, tx *sql.Tx) error {
	a, ok := ctx.Value(auditKey{}).(Audit)
	if !ok {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (time, actor, remote_addr, action, target) VALUES (?, ?, ?, ?, ?)`,
		ts(s.now()), clip(a.Actor), clip(a.RemoteAddr), clip(a.Action), clip(a.Target)); err != nil {
		return fmt.Errorf("store: audit log: %w", err)
	}
	return nil
}

// AuditFilter selects audit entries.
type AuditFilter struct {
	// Query selects entries whose actor, action or target contains it; empty:
	// all.
	Query string
	// Before selects entries older than this id (paging); 0: the newest.
	Before int64
	// Limit is the most entries returned. If zero, 50.
	Limit int
}

// AuditLog returns audit entries, newest first.
func (s *Store) AuditLog(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	q := `SELECT id, time, actor, remote_addr, action, target FROM audit_log WHERE 1 = 1`
	var args []any
	if f.Before > 0 {
		q, args = q+` AND id < ?`, append(args, f.Before)
	}
	if f.Query != "" {
		like := "%" + likeEscape(f.Query) + "%"
		q, args = q+` AND (actor LIKE ? ESCAPE '\' OR action LIKE ? ESCAPE '\' OR target LIKE ? ESCAPE '\')`, append(args, like, like, like)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: read audit log: %w", err)
	}
	defer rows.Close()
	var list []AuditEntry
	for rows.Next() {
		var (
			e  AuditEntry
			at string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.RemoteAddr, &e.Action, &e.Target); err != nil {
			return nil, err
		}
		if e.Time, err = mustTS(at); err != nil {
			return nil, err
		}
		list = append(list, e)
	}
	return list, rows.Err()
}
