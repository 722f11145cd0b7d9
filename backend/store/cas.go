package store

import (
	"context"
	"crypto/x509"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// CA is a trusted CA certificate: partner certificates must chain to one.
type CA struct {
	// ID identifies the CA for `ca remove`.
	ID int64
	// SHA256 is the fingerprint of the certificate, lower-case hex.
	SHA256 string
	// Subject is the certificate's subject DN.
	Subject string
	// NotAfter is the end of the certificate's validity.
	NotAfter time.Time
	// DER is the certificate.
	DER []byte
	// AddedAt is when the CA was added.
	AddedAt time.Time
}

// AddCA stores a trusted CA certificate given in DER. The certificate must be
// a CA certificate; adding one twice is ErrConflict.
func (s *Store) AddCA(ctx context.Context, der []byte) (CA, error) {
	list, err := s.AddCAs(ctx, [][]byte{der})
	if err != nil {
		return CA{}, err
	}
	return list[0], nil
}

// AddCAs stores several trusted CA certificates in one transaction: when one
// is not a CA certificate or is stored already, none is stored.
func (s *Store) AddCAs(ctx context.Context, ders [][]byte) ([]CA, error) {
	if len(ders) == 0 {
		return nil, invalid("trusted_ca_certificates_pem", "no certificate given")
	}
	cas := make([]CA, len(ders))
	now := s.now().UTC()
	for i, der := range ders {
		field := fieldf("trusted_ca_certificates_pem[%d]", i)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, invalid(field, "not a certificate: %v", err)
		}
		if !cert.IsCA || !cert.BasicConstraintsValid {
			return nil, invalid(field, "%s is not a CA certificate (basic constraints)", cert.Subject)
		}
		cas[i] = CA{SHA256: Fingerprint(cert), Subject: cert.Subject.String(), NotAfter: cert.NotAfter.UTC(), DER: cert.Raw, AddedAt: now}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for i := range cas {
			ca := &cas[i]
			res, err := tx.ExecContext(ctx, `INSERT INTO trusted_cas (sha256, subject, not_after, der, added_at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (sha256) DO NOTHING`, ca.SHA256, ca.Subject, ts(ca.NotAfter), ca.DER, ts(ca.AddedAt))
			if err != nil {
				return fmt.Errorf("store: add CA: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return conflict("CA", ca.Subject+" (sha256 "+ca.SHA256+")")
			}
			if ca.ID, err = res.LastInsertId(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cas, nil
}

// CAs returns the trusted CA certificates in the order they were added.
func (s *Store) CAs(ctx context.Context) ([]CA, error) {
	var list []CA
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = readCAs(ctx, tx)
		return err
	})
	return list, err
}

func readCAs(ctx context.Context, q execQueryer) ([]CA, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, sha256, subject, not_after, der, added_at FROM trusted_cas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: read CAs: %w", err)
	}
	defer rows.Close()
	var list []CA
	for rows.Next() {
		var (
			c            CA
			until, added string
		)
		if err := rows.Scan(&c.ID, &c.SHA256, &c.Subject, &until, &c.DER, &added); err != nil {
			return nil, err
		}
		if c.NotAfter, err = mustTS(until); err != nil {
			return nil, err
		}
		if c.AddedAt, err = mustTS(added); err != nil {
			return nil, err
		}
		list = append(list, c)
	}
	return list, rows.Err()
}

// RemoveCA removes a trusted CA given by id or by its SHA-256 fingerprint
// (or a unique prefix of at least 8 hex digits).
func (s *Store) RemoveCA(ctx context.Context, ref string) (CA, error) {
	var removed CA
	err := s.write(ctx, func(tx *sql.Tx) error {
		list, err := readCAs(ctx, tx)
		if err != nil {
			return err
		}
		var match []CA
		ref := strings.ToLower(strings.ReplaceAll(ref, ":", ""))
		for _, c := range list {
			if fmt.Sprint(c.ID) == ref || len(ref) >= 8 && strings.HasPrefix(c.SHA256, ref) {
				match = append(match, c)
			}
		}
		switch len(match) {
		case 0:
			return notFound("CA", ref)
		case 1:
		default:
			return invalid("ca", "%q matches %d CAs; give more of the fingerprint", ref, len(match))
		}
		removed = match[0]
		_, err = tx.ExecContext(ctx, `DELETE FROM trusted_cas WHERE id = ?`, removed.ID)
		return err
	})
	return removed, err
}
