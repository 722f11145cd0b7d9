package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"smartproxy/api/apiv1"
)

// Partner is a trading partner allowed to connect.
type Partner struct {
	// OdetteID is the partner's Odette ID (SSIDCODE). Required, unique.
	OdetteID string
	// Name is a human-readable name for logs.
	Name string
	// Enabled says whether the partner may connect.
	Enabled bool
	// Password is the SSID password the DMZ server checks; empty: not
	// checked. Secret.
	Password string
	// Direction is "both", "incoming" or "outgoing". If empty, "both".
	Direction string
	// Charset is "strict" or "lenient". If empty, "strict".
	Charset string
	// MaxCredit caps the SSID credit passed on (1 to 999); 0: no cap.
	MaxCredit uint32
	// MaxBufferSize caps the SSID exchange buffer (128 to 99999); 0: no cap.
	MaxBufferSize uint32
	// Revocation is "soft" or "hard": this partner's revocation policy for
	// certificates of unknown revocation state. If empty, the setting
	// `revocation` applies.
	Revocation string
	// CertificateBindings are the certificates the partner may present; if
	// empty, the certificate's subject serialNumber must equal the Odette ID.
	CertificateBindings []CertificateBinding
	// AllowedNetworks are the networks (CIDR) the partner may connect from;
	// empty: any.
	AllowedNetworks []string
	// CreatedAt and UpdatedAt are set by the store.
	CreatedAt, UpdatedAt time.Time
}

// CertificateBinding ties a certificate to a partner; every field given must
// match.
type CertificateBinding struct {
	// SubjectSerialNumber is the expected subject serialNumber attribute.
	SubjectSerialNumber string
	// SHA256Fingerprint is the SHA-256 of the certificate's DER, lower-case
	// hex.
	SHA256Fingerprint string
	// Subject is the expected subject DN in RFC 4514 form.
	Subject string
}

// normalize applies the defaults and checks every field. The field names of
// errors are those of the configuration document.
func (p *Partner) normalize() error {
	if p.Charset == "" {
		p.Charset = "strict"
	}
	if p.Direction == "" {
		p.Direction = "both"
	}
	switch p.Charset {
	case "strict", "lenient":
	default:
		return invalid("partners.charset", "%q is not strict or lenient", p.Charset)
	}
	switch p.Direction {
	case "both", "incoming", "outgoing":
	default:
		return invalid("partners.direction", "%q is not both, incoming or outgoing", p.Direction)
	}
	switch p.Revocation {
	case "", "soft", "hard":
	default:
		return invalid("partners.revocation", "%q is not soft or hard (or empty for the proxy's setting)", p.Revocation)
	}
	if err := CheckOdetteID("partners.odette_id", p.OdetteID, p.Charset); err != nil {
		return err
	}
	if err := checkText("partners.password", p.Password, 64); err != nil {
		return err
	}
	if p.Password != "" {
		if err := checkSSID("partners.password", "O0000", p.Password, p.Charset); err != nil {
			return err
		}
	}
	if err := checkText("partners.name", p.Name, 256); err != nil {
		return err
	}
	if p.MaxCredit > 999 {
		return invalid("partners.max_credit", "%d is out of range; want 1 to 999, or 0 for no cap", p.MaxCredit)
	}
	if p.MaxBufferSize != 0 && (p.MaxBufferSize < 128 || p.MaxBufferSize > 99999) {
		return invalid("partners.max_buffer_size", "%d is out of range; want 128 to 99999, or 0 for no cap", p.MaxBufferSize)
	}
	seen := make(map[CertificateBinding]bool)
	for i := range p.CertificateBindings {
		b := &p.CertificateBindings[i]
		f := fieldf("partners.certificate_bindings[%d]", i)
		if b.SubjectSerialNumber == "" && b.SHA256Fingerprint == "" && b.Subject == "" {
			return invalid(f, "empty: give a subject serial number, a SHA-256 fingerprint or a subject")
		}
		if err := checkText(f+".subject_serial_number", b.SubjectSerialNumber, 64); err != nil {
			return err
		}
		if b.SHA256Fingerprint != "" {
			fp, err := ParseFingerprint(f+".sha256_fingerprint", b.SHA256Fingerprint)
			if err != nil {
				return err
			}
			b.SHA256Fingerprint = fp
		}
		if b.Subject != "" {
			if err := checkDN(f+".subject", b.Subject); err != nil {
				return err
			}
		}
		if seen[*b] {
			return invalid(f, "given twice")
		}
		seen[*b] = true
	}
	nets := make(map[string]bool)
	for i, n := range p.AllowedNetworks {
		c, err := normalizeCIDR(fieldf("partners.allowed_networks[%d]", i), n)
		if err != nil {
			return err
		}
		if nets[c] {
			return invalid(fieldf("partners.allowed_networks[%d]", i), "%s given twice", c)
		}
		nets[c] = true
		p.AllowedNetworks[i] = c
	}
	api := p.APIPartner()
	if err := apiv1.ValidatePartner(&api); err != nil {
		return fromFieldError("partners", err)
	}
	return nil
}

// APIPartner returns the partner as the contract writes it.
func (p *Partner) APIPartner() apiv1.Partner {
	out := apiv1.Partner{OdetteID: p.OdetteID, Name: p.Name, Enabled: p.Enabled, Password: apiv1.Secret(p.Password),
		CertificateBindings: []apiv1.CertificateBinding{}, AllowedNetworks: append([]string{}, p.AllowedNetworks...),
		Direction: apiv1.Direction(p.Direction), Charset: apiv1.Charset(p.Charset),
		MaxCredit: p.MaxCredit, MaxBufferSize: p.MaxBufferSize, Revocation: apiv1.Revocation(p.Revocation)}
	for _, b := range p.CertificateBindings {
		out.CertificateBindings = append(out.CertificateBindings, apiv1.CertificateBinding(b))
	}
	return out
}

// AddPartner stores a new partner. It fails with ErrConflict when the Odette
// ID exists.
func (s *Store) AddPartner(ctx context.Context, p Partner) error {
	p.CertificateBindings = append([]CertificateBinding(nil), p.CertificateBindings...)
	p.AllowedNetworks = append([]string(nil), p.AllowedNetworks...)
	if err := p.normalize(); err != nil {
		return err
	}
	now := ts(s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM partners WHERE odette_id = ?`, p.OdetteID).Scan(&exists); err != nil {
			return err
		}
		if exists > 0 {
			return conflict("partner", p.OdetteID)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO partners (odette_id, name, enabled, password, direction, charset,
			max_credit, max_buffer_size, revocation, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			p.OdetteID, p.Name, p.Enabled, p.Password, p.Direction, p.Charset, p.MaxCredit, p.MaxBufferSize, p.Revocation, now, now)
		if err != nil {
			return fmt.Errorf("store: add partner: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		return writePartnerLists(ctx, tx, id, &p)
	})
}

func writePartnerLists(ctx context.Context, tx *sql.Tx, id int64, p *Partner) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM certificate_bindings WHERE partner_id = ?`, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM allowed_networks WHERE partner_id = ?`, id); err != nil {
		return err
	}
	for i, b := range p.CertificateBindings {
		if _, err := tx.ExecContext(ctx, `INSERT INTO certificate_bindings (partner_id, position, subject_serial_number,
			sha256_fingerprint, subject) VALUES (?, ?, ?, ?, ?)`, id, i, b.SubjectSerialNumber, b.SHA256Fingerprint, b.Subject); err != nil {
			return fmt.Errorf("store: add certificate binding: %w", err)
		}
	}
	for i, n := range p.AllowedNetworks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO allowed_networks (partner_id, position, cidr) VALUES (?, ?, ?)`, id, i, n); err != nil {
			return fmt.Errorf("store: add allowed network: %w", err)
		}
	}
	return nil
}

// UpdatePartner reads the partner, lets change modify it and stores the
// result after checking it, all in one transaction. The Odette ID cannot be
// changed. When change or the check fails, nothing is stored.
func (s *Store) UpdatePartner(ctx context.Context, odetteID string, change func(p *Partner) error) error {
	now := ts(s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		list, err := readPartners(ctx, tx, odetteID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("partner", odetteID)
		}
		p := list[0]
		if err := change(&p); err != nil {
			return err
		}
		if p.OdetteID != odetteID {
			return invalid("partners.odette_id", "cannot be changed; remove the partner and add it again")
		}
		if err := p.normalize(); err != nil {
			return err
		}
		var id int64
		if err := tx.QueryRowContext(ctx, `UPDATE partners SET name = ?, enabled = ?, password = ?, direction = ?,
			charset = ?, max_credit = ?, max_buffer_size = ?, revocation = ?, updated_at = ? WHERE odette_id = ? RETURNING id`,
			p.Name, p.Enabled, p.Password, p.Direction, p.Charset, p.MaxCredit, p.MaxBufferSize, p.Revocation, now, odetteID).Scan(&id); err != nil {
			return fmt.Errorf("store: update partner: %w", err)
		}
		return writePartnerLists(ctx, tx, id, &p)
	})
}

// RemovePartner deletes the partner with its bindings and networks.
func (s *Store) RemovePartner(ctx context.Context, odetteID string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM partners WHERE odette_id = ?`, odetteID)
		if err != nil {
			return fmt.Errorf("store: remove partner: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("partner", odetteID)
		}
		return nil
	})
}

// Partner returns one partner.
func (s *Store) Partner(ctx context.Context, odetteID string) (Partner, error) {
	var list []Partner
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = readPartners(ctx, tx, odetteID)
		return err
	})
	if err != nil {
		return Partner{}, err
	}
	if len(list) == 0 {
		return Partner{}, notFound("partner", odetteID)
	}
	return list[0], nil
}

// Partners returns every partner ordered by Odette ID.
func (s *Store) Partners(ctx context.Context) ([]Partner, error) {
	var list []Partner
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = readPartners(ctx, tx, "")
		return err
	})
	return list, err
}

// readPartners reads one partner (odetteID != "") or all.
func readPartners(ctx context.Context, q execQueryer, odetteID string) ([]Partner, error) {
	where, args := "", []any{}
	if odetteID != "" {
		where, args = " WHERE p.odette_id = ?", []any{odetteID}
	}
	rows, err := q.QueryContext(ctx, `SELECT p.id, p.odette_id, p.name, p.enabled, p.password, p.direction, p.charset,
		p.max_credit, p.max_buffer_size, p.revocation, p.created_at, p.updated_at FROM partners p`+where+` ORDER BY p.odette_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: read partners: %w", err)
	}
	var (
		list []Partner
		ids  = make(map[int64]int)
	)
	for rows.Next() {
		var (
			p                Partner
			id               int64
			created, updated string
		)
		if err := rows.Scan(&id, &p.OdetteID, &p.Name, &p.Enabled, &p.Password, &p.Direction, &p.Charset,
			&p.MaxCredit, &p.MaxBufferSize, &p.Revocation, &created, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		if p.CreatedAt, err = mustTS(created); err != nil {
			rows.Close()
			return nil, err
		}
		if p.UpdatedAt, err = mustTS(updated); err != nil {
			rows.Close()
			return nil, err
		}
		ids[id] = len(list)
		list = append(list, p)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, nil
	}
	rows, err = q.QueryContext(ctx, `SELECT b.partner_id, b.subject_serial_number, b.sha256_fingerprint, b.subject
		FROM certificate_bindings b JOIN partners p ON p.id = b.partner_id`+where+` ORDER BY b.partner_id, b.position`, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var (
			id int64
			b  CertificateBinding
		)
		if err := rows.Scan(&id, &b.SubjectSerialNumber, &b.SHA256Fingerprint, &b.Subject); err != nil {
			rows.Close()
			return nil, err
		}
		if i, ok := ids[id]; ok {
			list[i].CertificateBindings = append(list[i].CertificateBindings, b)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	rows, err = q.QueryContext(ctx, `SELECT n.partner_id, n.cidr FROM allowed_networks n
		JOIN partners p ON p.id = n.partner_id`+where+` ORDER BY n.partner_id, n.position`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id   int64
			cidr string
		)
		if err := rows.Scan(&id, &cidr); err != nil {
			return nil, err
		}
		if i, ok := ids[id]; ok {
			list[i].AllowedNetworks = append(list[i].AllowedNetworks, cidr)
		}
	}
	return list, rows.Err()
}

// PartnerFilter selects a page of partners for SearchPartners.
type PartnerFilter struct {
	// Query selects partners whose Odette ID or name contains it
	// (case-insensitively); empty: all.
	Query string
	// Offset skips that many partners of the result.
	Offset int
	// Limit is the most partners returned. If zero, 50.
	Limit int
}

// PartnerSummary is a partner as a list shows it.
type PartnerSummary struct {
	// OdetteID, Name, Enabled and Direction are the partner's.
	OdetteID, Name string
	Enabled        bool
	Direction      string
	// HasPassword says whether an SSID password is set.
	HasPassword bool
	// Bindings and Networks count the certificate bindings and allowed
	// networks.
	Bindings, Networks int
	// UpdatedAt is the time of the last change.
	UpdatedAt time.Time
}

// SearchPartners returns one page of partners by Odette ID and the number
// of partners that match f.
func (s *Store) SearchPartners(ctx context.Context, f PartnerFilter) ([]PartnerSummary, int, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	where, args := "", []any{}
	if f.Query != "" {
		like := "%" + likeEscape(f.Query) + "%"
		where, args = ` WHERE p.odette_id LIKE ? ESCAPE '\' OR p.name LIKE ? ESCAPE '\'`, []any{like, like}
	}
	var (
		list  []PartnerSummary
		total int
	)
	err := s.read(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM partners p`+where, args...).Scan(&total); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT p.odette_id, p.name, p.enabled, p.direction, p.password <> '', p.updated_at,
			(SELECT count(*) FROM certificate_bindings b WHERE b.partner_id = p.id),
			(SELECT count(*) FROM allowed_networks n WHERE n.partner_id = p.id)
			FROM partners p`+where+` ORDER BY p.odette_id LIMIT ? OFFSET ?`, append(args, limit, max(f.Offset, 0))...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				p  PartnerSummary
				at string
			)
			if err := rows.Scan(&p.OdetteID, &p.Name, &p.Enabled, &p.Direction, &p.HasPassword, &at, &p.Bindings, &p.Networks); err != nil {
				return err
			}
			if p.UpdatedAt, err = mustTS(at); err != nil {
				return err
			}
			list = append(list, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: search partners: %w", err)
	}
	return list, total, nil
}
