package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Snapshot is everything a configuration document holds, read in one
// transaction so that its parts belong to one revision.
type Snapshot struct {
	// Revision is the configuration revision the snapshot shows.
	Revision int64
	// Settings are the proxy settings.
	Settings Settings
	// CAs are the trusted CA certificates.
	CAs []CA
	// CRLs are the stored CRLs (metadata only).
	CRLs []CRL
	// Partners are the partners by Odette ID.
	Partners []Partner
	// Routes are the outgoing routes by name.
	Routes []Route
	// IgnoreRules are the log-ignore rules by id.
	IgnoreRules []IgnoreRule
}

// Snapshot reads the whole configuration at one revision.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := new(Snapshot)
	err := s.read(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&snap.Revision); err != nil {
			return err
		}
		kv, err := readSettings(ctx, tx)
		if err != nil {
			return err
		}
		if snap.Settings, err = settingsFrom(kv); err != nil {
			return err
		}
		if snap.CAs, err = readCAs(ctx, tx); err != nil {
			return err
		}
		if snap.CRLs, err = readCRLs(ctx, tx); err != nil {
			return err
		}
		if snap.Partners, err = readPartners(ctx, tx, ""); err != nil {
			return err
		}
		if snap.Routes, err = readRoutes(ctx, tx); err != nil {
			return err
		}
		snap.IgnoreRules, err = readIgnoreRules(ctx, tx, "")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: read configuration: %w", err)
	}
	s.publish(snap.Revision)
	return snap, nil
}

// TableCounts returns the number of rows of every table, by name.
func (s *Store) TableCounts(ctx context.Context) (map[string]int64, error) {
	counts := make(map[string]int64)
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
		if err != nil {
			return err
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			names = append(names, n)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, n := range names {
			var c int64
			// Table names come from sqlite_schema, quoted as identifiers.
			q := `SELECT count(*) FROM "` + strings.ReplaceAll(n, `"`, `""`) + `"`
			if err := tx.QueryRowContext(ctx, q).Scan(&c); err != nil {
				return err
			}
			counts[n] = c
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: count rows: %w", err)
	}
	return counts, nil
}
