package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"smartproxy/api/apiv1"
)

// fromFieldError turns an apiv1 validation error into a *ValidationError
// with the field below prefix.
func fromFieldError(prefix string, err error) error {
	var fe *apiv1.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	f := prefix
	if fe.Field != "" {
		if f != "" {
			f += "."
		}
		f += fe.Field
	}
	return &ValidationError{Field: f, Msg: fe.Message}
}

// Route is an outgoing route: the proxy client listens on ListenAddress for
// the internal OFTP2 server and the DMZ server dials PartnerAddress.
type Route struct {
	// Name identifies the route; unique.
	Name string
	// ListenAddress is the "host:port" the proxy client listens on.
	ListenAddress string
	// PartnerAddress is the partner's "host:port".
	PartnerAddress string
	// PartnerOdetteID is the Odette ID of the partner reached.
	PartnerOdetteID string
	// ServerName is the name the partner's certificate is verified against;
	// empty: the host of PartnerAddress.
	ServerName string
	// CreatedAt is set by the store.
	CreatedAt time.Time
}

var routeNameRE = clientNameRE

// AddRoute stores a new route; a route of the same name is ErrConflict.
func (s *Store) AddRoute(ctx context.Context, r Route) error {
	if !routeNameRE.MatchString(r.Name) {
		return invalid("routes.name", "%q is not a route name (1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit)", r.Name)
	}
	if err := checkAddress("routes.listen_address", r.ListenAddress, true); err != nil {
		return err
	}
	if err := checkAddress("routes.partner_address", r.PartnerAddress, false); err != nil {
		return err
	}
	if err := CheckOdetteID("routes.partner_odette_id", r.PartnerOdetteID, "lenient"); err != nil {
		return err
	}
	if r.ServerName != "" {
		if err := checkServerName("routes.server_name", r.ServerName); err != nil {
			return err
		}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO routes (name, listen_address, partner_address, partner_odette_id,
			server_name, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
			r.Name, r.ListenAddress, r.PartnerAddress, r.PartnerOdetteID, r.ServerName, ts(s.now()))
		if err != nil {
			return fmt.Errorf("store: add route: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return conflict("route", r.Name)
		}
		return nil
	})
}

// Routes returns every route by name.
func (s *Store) Routes(ctx context.Context) ([]Route, error) {
	var list []Route
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = readRoutes(ctx, tx)
		return err
	})
	return list, err
}

func readRoutes(ctx context.Context, q execQueryer) ([]Route, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, listen_address, partner_address, partner_odette_id, server_name, created_at
		FROM routes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: read routes: %w", err)
	}
	defer rows.Close()
	var list []Route
	for rows.Next() {
		var (
			r  Route
			at string
		)
		if err := rows.Scan(&r.Name, &r.ListenAddress, &r.PartnerAddress, &r.PartnerOdetteID, &r.ServerName, &at); err != nil {
			return nil, err
		}
		if r.CreatedAt, err = mustTS(at); err != nil {
			return nil, err
		}
		list = append(list, r)
	}
	return list, rows.Err()
}

// RemoveRoute removes the named route.
func (s *Store) RemoveRoute(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM routes WHERE name = ?`, name)
		if err != nil {
			return fmt.Errorf("store: remove route: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("route", name)
		}
		return nil
	})
}

// IgnoreRule is a log-ignore rule: an event whose line contains Substring
// (case-insensitively) while the rule is valid is logged at INFO and not
// escalated.
type IgnoreRule struct {
	// ID identifies the rule; set by the store.
	ID int64
	// Substring is matched case-insensitively. Required.
	Substring string
	// Description says why the rule exists.
	Description string
	// ValidFrom is the start of validity; zero: already valid.
	ValidFrom time.Time
	// ValidUntil is the end of validity (exclusive); zero: without end.
	ValidUntil time.Time
	// CreatedAt is set by the store.
	CreatedAt time.Time
}

// ActiveAt reports whether the rule is valid at t.
func (r IgnoreRule) ActiveAt(t time.Time) bool {
	return (r.ValidFrom.IsZero() || !t.Before(r.ValidFrom)) && (r.ValidUntil.IsZero() || t.Before(r.ValidUntil))
}

// APIRule returns the rule as the contract writes it.
func (r IgnoreRule) APIRule() apiv1.LogIgnoreRule {
	out := apiv1.LogIgnoreRule{ID: r.ID, Substring: r.Substring, Description: r.Description}
	if !r.ValidFrom.IsZero() {
		t := r.ValidFrom.UTC()
		out.ValidFrom = &t
	}
	if !r.ValidUntil.IsZero() {
		t := r.ValidUntil.UTC()
		out.ValidUntil = &t
	}
	return out
}

// AddIgnoreRule stores a new rule and returns it with its id. A rule whose
// window is empty or already over is refused; nothing is stored then.
func (s *Store) AddIgnoreRule(ctx context.Context, r IgnoreRule) (IgnoreRule, error) {
	api := r.APIRule()
	if err := apiv1.ValidateIgnoreRule(&api); err != nil {
		return IgnoreRule{}, fromFieldError("log_ignore_rules", err)
	}
	now := s.now()
	if !r.ValidUntil.IsZero() && !now.Before(r.ValidUntil) {
		return IgnoreRule{}, invalid("log_ignore_rules.valid_until", "%s is not in the future; the rule would never apply",
			r.ValidUntil.UTC().Format(time.RFC3339))
	}
	r.CreatedAt = now.UTC()
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO ignore_rules (substring, description, valid_from, valid_until, created_at)
			VALUES (?, ?, ?, ?, ?)`, r.Substring, r.Description, nullTS(r.ValidFrom), nullTS(r.ValidUntil), ts(now))
		if err != nil {
			return fmt.Errorf("store: add ignore rule: %w", err)
		}
		r.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return IgnoreRule{}, err
	}
	return r, nil
}

// IgnoreRules returns every stored rule by id, expired ones included until
// RemoveExpiredIgnoreRules removes them.
func (s *Store) IgnoreRules(ctx context.Context) ([]IgnoreRule, error) {
	var list []IgnoreRule
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = readIgnoreRules(ctx, tx, "")
		return err
	})
	return list, err
}

func readIgnoreRules(ctx context.Context, q execQueryer, where string, args ...any) ([]IgnoreRule, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, substring, description, valid_from, valid_until, created_at
		FROM ignore_rules`+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: read ignore rules: %w", err)
	}
	defer rows.Close()
	var list []IgnoreRule
	for rows.Next() {
		var (
			r           IgnoreRule
			from, until sql.NullString
			created     string
		)
		if err := rows.Scan(&r.ID, &r.Substring, &r.Description, &from, &until, &created); err != nil {
			return nil, err
		}
		if r.ValidFrom, err = parseTS(from); err != nil {
			return nil, err
		}
		if r.ValidUntil, err = parseTS(until); err != nil {
			return nil, err
		}
		if r.CreatedAt, err = mustTS(created); err != nil {
			return nil, err
		}
		list = append(list, r)
	}
	return list, rows.Err()
}

// RemoveIgnoreRule removes the rule with id and returns it.
func (s *Store) RemoveIgnoreRule(ctx context.Context, id int64) (IgnoreRule, error) {
	var r IgnoreRule
	err := s.write(ctx, func(tx *sql.Tx) error {
		list, err := readIgnoreRules(ctx, tx, " WHERE id = ?", id)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("ignore rule", id)
		}
		r = list[0]
		_, err = tx.ExecContext(ctx, `DELETE FROM ignore_rules WHERE id = ?`, id)
		return err
	})
	return r, err
}

// RemoveExpiredIgnoreRules removes every rule whose validity ended at or
// before now and returns the removed rules.
func (s *Store) RemoveExpiredIgnoreRules(ctx context.Context, now time.Time) ([]IgnoreRule, error) {
	var removed []IgnoreRule
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		removed, err = readIgnoreRules(ctx, tx, " WHERE valid_until IS NOT NULL AND valid_until <= ?", ts(now))
		if err != nil || len(removed) == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM ignore_rules WHERE valid_until IS NOT NULL AND valid_until <= ?`, ts(now))
		return err
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}
