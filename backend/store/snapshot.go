package store

import (
	"context"
	"database/sql"
	"fmt"
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
