package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// License is a license file stored for one DMZ server (by its Proxy ID).
type License struct {
	// ProxyID is the Proxy ID the license is for.
	ProxyID string
	// Customer, NotBefore and NotAfter are read from the file.
	Customer            string
	NotBefore, NotAfter time.Time
	// SHA256 is the SHA-256 of File, lower-case hex.
	SHA256 string
	// File is the license file.
	File []byte
	// ImportedAt is when it was stored.
	ImportedAt time.Time
}

// PutLicense stores a license file, replacing the one for the same Proxy ID.
// The caller has verified the file.
func (s *Store) PutLicense(ctx context.Context, l License) error {
	if l.ProxyID == "" || len(l.File) == 0 || l.SHA256 == "" {
		return invalid("license", "proxy ID, file and hash are required")
	}
	if err := checkText("license.customer", l.Customer, maxText); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO licenses (proxy_id, customer, not_before, not_after, sha256, file, imported_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (proxy_id) DO UPDATE SET customer = excluded.customer,
			not_before = excluded.not_before, not_after = excluded.not_after, sha256 = excluded.sha256,
			file = excluded.file, imported_at = excluded.imported_at WHERE sha256 <> excluded.sha256`,
			l.ProxyID, l.Customer, ts(l.NotBefore), ts(l.NotAfter), l.SHA256, l.File, ts(s.now()))
		if err != nil {
			return fmt.Errorf("store: store license: %w", err)
		}
		return nil
	})
}

const licenseColumns = `proxy_id, customer, not_before, not_after, sha256, file, imported_at`

func scanLicense(row interface{ Scan(...any) error }) (License, error) {
	var (
		l                    License
		from, until, import_ string
	)
	if err := row.Scan(&l.ProxyID, &l.Customer, &from, &until, &l.SHA256, &l.File, &import_); err != nil {
		return License{}, err
	}
	var err error
	if l.NotBefore, err = mustTS(from); err != nil {
		return License{}, err
	}
	if l.NotAfter, err = mustTS(until); err != nil {
		return License{}, err
	}
	if l.ImportedAt, err = mustTS(import_); err != nil {
		return License{}, err
	}
	return l, nil
}

// LicenseFor returns the license stored for proxyID.
func (s *Store) LicenseFor(ctx context.Context, proxyID string) (License, error) {
	l, err := scanLicense(s.r.QueryRowContext(ctx, `SELECT `+licenseColumns+` FROM licenses WHERE proxy_id = ?`, proxyID))
	if errors.Is(err, sql.ErrNoRows) {
		return License{}, notFound("license for proxy", proxyID)
	}
	return l, err
}

// Licenses returns every stored license by Proxy ID.
func (s *Store) Licenses(ctx context.Context) ([]License, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+licenseColumns+` FROM licenses ORDER BY proxy_id`)
	if err != nil {
		return nil, fmt.Errorf("store: read licenses: %w", err)
	}
	defer rows.Close()
	var list []License
	for rows.Next() {
		l, err := scanLicense(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, l)
	}
	return list, rows.Err()
}

// LicenseStatus is what a client last reported about its DMZ server's
// license.
type LicenseStatus struct {
	// ProxyID is the DMZ server's Proxy ID.
	ProxyID string
	// Valid says whether the server has a valid license.
	Valid bool
	// ExpiresAt is the end of the installed license; zero if none.
	ExpiresAt time.Time
	// Reason says why the license is not valid.
	Reason string
	// ReportedAt is when the client reported it; set by the store.
	ReportedAt time.Time
}

// SetLicenseStatus records a client's license status report.
func (s *Store) SetLicenseStatus(ctx context.Context, clientID int64, st LicenseStatus) error {
	if err := checkText("proxy_id", st.ProxyID, 256); err != nil {
		return err
	}
	if err := checkText("reason", st.Reason, maxText); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO license_status (client_id, proxy_id, valid, expires_at, reason, reported_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET proxy_id = excluded.proxy_id,
			valid = excluded.valid, expires_at = excluded.expires_at, reason = excluded.reason, reported_at = excluded.reported_at`,
			clientID, st.ProxyID, st.Valid, nullTS(st.ExpiresAt), st.Reason, ts(s.now()))
		if err != nil {
			return fmt.Errorf("store: license status: %w", err)
		}
		return nil
	})
}

// ConfigStatus is what a client reported the DMZ server answered for a
// configuration.
type ConfigStatus struct {
	// Revision and ETag identify the configuration document.
	Revision int64
	ETag     string
	// Applied says whether the server applied it.
	Applied bool
	// Errors say why not: pairs of field and message.
	Errors []FieldMessage
	// ReportedAt is set by the store.
	ReportedAt time.Time
}

// FieldMessage is one problem of a configuration.
type FieldMessage struct {
	// Field is the JSON path of the offending field.
	Field string `json:"field"`
	// Message says what is wrong with it.
	Message string `json:"message"`
}

// configStatusKept is how many configuration status reports are kept per
// client.
const configStatusKept = 100

// AddConfigStatus records a client's configuration status report.
func (s *Store) AddConfigStatus(ctx context.Context, clientID int64, st ConfigStatus) error {
	if err := checkText("etag", st.ETag, 256); err != nil {
		return err
	}
	for i, e := range st.Errors {
		if err := checkText(fieldf("errors[%d].field", i), e.Field, maxText); err != nil {
			return err
		}
		if err := checkText(fieldf("errors[%d].message", i), e.Message, maxText); err != nil {
			return err
		}
	}
	errs := []FieldMessage{}
	errs = append(errs, st.Errors...)
	b, err := json.Marshal(errs)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO config_status (client_id, revision, etag, applied, errors, reported_at)
			VALUES (?, ?, ?, ?, ?, ?)`, clientID, st.Revision, st.ETag, st.Applied, string(b), ts(s.now())); err != nil {
			return fmt.Errorf("store: config status: %w", err)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM config_status WHERE client_id = ? AND id NOT IN
			(SELECT id FROM config_status WHERE client_id = ? ORDER BY id DESC LIMIT ?)`, clientID, clientID, configStatusKept)
		return err
	})
}

// ClientStatus is a proxy client with what it last reported.
type ClientStatus struct {
	Client
	// Tokens is the number of valid tokens.
	Tokens int
	// License is the last license status report; nil if none.
	License *LicenseStatus
	// Config is the last configuration status report; nil if none.
	Config *ConfigStatus
}

// Clients returns every proxy client with its last reports, by name.
func (s *Store) Clients(ctx context.Context) ([]ClientStatus, error) {
	var list []ClientStatus
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT c.id, c.name, c.created_at, c.last_seen_at, c.last_remote_addr,
			(SELECT count(*) FROM tokens t WHERE t.client_id = c.id AND t.revoked_at IS NULL),
			l.proxy_id, l.valid, l.expires_at, l.reason, l.reported_at,
			s.revision, s.etag, s.applied, s.errors, s.reported_at
			FROM clients c LEFT JOIN license_status l ON l.client_id = c.id
			LEFT JOIN config_status s ON s.id = (SELECT max(id) FROM config_status WHERE client_id = c.id)
			ORDER BY c.name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				c                                 ClientStatus
				created                           string
				seen, lExp, lAt, sEtag, sErr, sAt sql.NullString
				lProxy, lReason                   sql.NullString
				lValid, sApplied                  sql.NullBool
				sRev                              sql.NullInt64
			)
			if err := rows.Scan(&c.ID, &c.Name, &created, &seen, &c.LastRemoteAddr, &c.Tokens,
				&lProxy, &lValid, &lExp, &lReason, &lAt, &sRev, &sEtag, &sApplied, &sErr, &sAt); err != nil {
				return err
			}
			if c.CreatedAt, err = mustTS(created); err != nil {
				return err
			}
			if c.LastSeenAt, err = parseTS(seen); err != nil {
				return err
			}
			if lProxy.Valid {
				l := &LicenseStatus{ProxyID: lProxy.String, Valid: lValid.Bool, Reason: lReason.String}
				if l.ExpiresAt, err = parseTS(lExp); err != nil {
					return err
				}
				if l.ReportedAt, err = parseTS(lAt); err != nil {
					return err
				}
				c.License = l
			}
			if sRev.Valid {
				st := &ConfigStatus{Revision: sRev.Int64, ETag: sEtag.String, Applied: sApplied.Bool}
				if err := json.Unmarshal([]byte(sErr.String), &st.Errors); err != nil {
					return err
				}
				if st.ReportedAt, err = parseTS(sAt); err != nil {
					return err
				}
				c.Config = st
			}
			list = append(list, c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: read clients: %w", err)
	}
	return list, nil
}

// ClientLicenseStatus returns the last license status the client reported.
func (s *Store) ClientLicenseStatus(ctx context.Context, clientID int64) (LicenseStatus, error) {
	var (
		st  LicenseStatus
		exp sql.NullString
		at  string
	)
	err := s.r.QueryRowContext(ctx, `SELECT proxy_id, valid, expires_at, reason, reported_at FROM license_status
		WHERE client_id = ?`, clientID).Scan(&st.ProxyID, &st.Valid, &exp, &st.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return LicenseStatus{}, notFound("license status of client", clientID)
	}
	if err != nil {
		return LicenseStatus{}, err
	}
	if st.ExpiresAt, err = parseTS(sql.NullString(exp)); err != nil {
		return LicenseStatus{}, err
	}
	if st.ReportedAt, err = mustTS(at); err != nil {
		return LicenseStatus{}, err
	}
	return st, nil
}
