package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// TokenPrefix starts every token, so that a token is recognisable in a
// configuration file or a secret scanner.
const TokenPrefix = "spt_"

// tokenLen is the length of a token: the prefix and 32 random bytes in
// unpadded base64url.
var tokenLen = len(TokenPrefix) + base64.RawURLEncoding.EncodedLen(32)

var (
	clientNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	tokenRE      = regexp.MustCompile(`^` + TokenPrefix + `[A-Za-z0-9_-]{43}$`)
)

// Client is a proxy client: one smartproxy-client with its own tokens.
type Client struct {
	// ID is the client's row id.
	ID int64
	// Name is the unique name given at `token create --client`.
	Name string
	// CreatedAt is when the client was created.
	CreatedAt time.Time
	// LastSeenAt is when the client last made an authenticated request
	// (updated at most once a minute); zero if never.
	LastSeenAt time.Time
	// LastRemoteAddr is the address of that request.
	LastRemoteAddr string
}

// Token describes a stored token. The token itself is not stored.
type Token struct {
	// ID identifies the token for `token revoke`.
	ID int64
	// Client is the name of the client the token belongs to.
	Client string
	// Hint is the start of the token, enough to recognise it.
	Hint string
	// CreatedAt is when the token was created.
	CreatedAt time.Time
	// RevokedAt is when the token was revoked; zero while it is valid.
	RevokedAt time.Time
}

// AuthError is returned by Authenticate for a token that does not
// authenticate a client.
type AuthError struct {
	// Reason says why, for the log: "malformed token", "unknown token" or
	// "revoked token".
	Reason string
}

// Error implements error.
func (e *AuthError) Error() string { return "unauthorized: " + e.Reason }

// ValidateClientName checks a proxy client's name: 1 to 64 letters, digits,
// '.', '_' or '-', starting with a letter or digit.
func ValidateClientName(name string) error {
	if !clientNameRE.MatchString(name) {
		return invalid("client", "%q is not a client name (1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit)", name)
	}
	return nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateToken creates a new token for the named client, creating the client
// when it does not exist yet. It returns the token, which is not stored and
// cannot be shown again.
func (s *Store) CreateToken(ctx context.Context, client string) (string, Token, error) {
	if err := ValidateClientName(client); err != nil {
		return "", Token{}, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Token{}, fmt.Errorf("store: random token: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.now()
	t := Token{Client: client, Hint: token[:len(TokenPrefix)+6] + "…", CreatedAt: now.UTC()}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO clients (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`,
			client, ts(now)); err != nil {
			return fmt.Errorf("store: create client: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO tokens (client_id, hash, hint, created_at)
			SELECT id, ?, ?, ? FROM clients WHERE name = ?`, hashToken(token), t.Hint, ts(now), client)
		if err != nil {
			return fmt.Errorf("store: create token: %w", err)
		}
		t.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return "", Token{}, err
	}
	return token, t, nil
}

// Tokens returns every token, valid and revoked, by client and id.
func (s *Store) Tokens(ctx context.Context) ([]Token, error) {
	var list []Token
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT t.id, c.name, t.hint, t.created_at, t.revoked_at
			FROM tokens t JOIN clients c ON c.id = t.client_id ORDER BY c.name, t.id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				t         Token
				created   string
				revokedAt sql.NullString
			)
			if err := rows.Scan(&t.ID, &t.Client, &t.Hint, &created, &revokedAt); err != nil {
				return err
			}
			if t.CreatedAt, err = mustTS(created); err != nil {
				return err
			}
			if t.RevokedAt, err = parseTS(revokedAt); err != nil {
				return err
			}
			list = append(list, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	return list, nil
}

// RevokeToken revokes the token with the given id. Revoking a revoked token
// is not an error.
func (s *Store) RevokeToken(ctx context.Context, id int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?`, ts(s.now()), id)
		if err != nil {
			return fmt.Errorf("store: revoke token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("token", id)
		}
		return nil
	})
}

// Authenticate returns the client a bearer token belongs to, or an
// *AuthError. The token is looked up by its SHA-256 hash and the stored hash
// is compared in constant time.
func (s *Store) Authenticate(ctx context.Context, token string) (Client, error) {
	if !tokenRE.MatchString(token) {
		return Client{}, &AuthError{Reason: "malformed token"}
	}
	want := hashToken(token)
	var (
		c         Client
		hash      []byte
		revokedAt sql.NullString
		created   string
	)
	err := s.r.QueryRowContext(ctx, `SELECT t.hash, t.revoked_at, c.id, c.name, c.created_at
		FROM tokens t JOIN clients c ON c.id = t.client_id WHERE t.hash = ?`, want).
		Scan(&hash, &revokedAt, &c.ID, &c.Name, &created)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Client{}, &AuthError{Reason: "unknown token"}
	case err != nil:
		return Client{}, fmt.Errorf("store: authenticate: %w", err)
	}
	if subtle.ConstantTimeCompare(hash, want) != 1 {
		return Client{}, &AuthError{Reason: "unknown token"}
	}
	if revokedAt.Valid {
		return Client{}, &AuthError{Reason: "revoked token"}
	}
	if c.CreatedAt, err = mustTS(created); err != nil {
		return Client{}, err
	}
	return c, nil
}

// TouchClient records that the client made an authenticated request from
// remoteAddr now.
func (s *Store) TouchClient(ctx context.Context, clientID int64, remoteAddr string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE clients SET last_seen_at = ?, last_remote_addr = ? WHERE id = ?`,
			ts(s.now()), remoteAddr, clientID)
		if err != nil {
			return fmt.Errorf("store: touch client: %w", err)
		}
		return nil
	})
}
