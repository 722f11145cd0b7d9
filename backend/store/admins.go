package store

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of new password hashes: the first of the choices RFC
// 9106 section 4 and OWASP recommend for memory-constrained hosts (19 MiB,
// two passes, one lane). A stored hash carries its own parameters, so
// raising these later keeps old hashes verifiable.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Password limits of admin users: long enough for a pass phrase, short
// enough that a request cannot make the server hash megabytes.
const (
	MinAdminPassword = 12
	maxAdminPassword = 256
)

var adminNameRE = clientNameRE

// AdminUser is an account of the web admin.
type AdminUser struct {
	// ID is the user's row id.
	ID int64
	// Name is the login name: 1 to 64 letters, digits, '.', '_' or '-'.
	Name string
	// CreatedAt and PasswordChangedAt are set by the store.
	CreatedAt, PasswordChangedAt time.Time
}

// ValidateAdminName checks an admin user's login name.
func ValidateAdminName(name string) error {
	if !adminNameRE.MatchString(name) {
		return invalid("user", "%q is not a user name (1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit)", name)
	}
	return nil
}

// checkAdminPassword checks a new password's length; the message never
// repeats the password.
func checkAdminPassword(pw string) error {
	if err := checkText("password", pw, maxAdminPassword); err != nil {
		return invalid("password", "must be valid UTF-8 text of at most %d bytes", maxAdminPassword)
	}
	if len([]rune(pw)) < MinAdminPassword {
		return invalid("password", "too short: want at least %d characters", MinAdminPassword)
	}
	return nil
}

// hashAdminPassword returns the argon2id hash of pw in PHC string form.
func hashAdminPassword(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("store: random salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=([0-9]{1,7}),t=([0-9]{1,3}),p=([0-9]{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$`)

// verifyAdminPassword reports whether pw matches the PHC string hash.
func verifyAdminPassword(hash, pw string) bool {
	m := phcRE.FindStringSubmatch(hash)
	if m == nil {
		return false
	}
	var mem, t, p uint32
	if _, err := fmt.Sscanf(m[1]+" "+m[2]+" "+m[3], "%d %d %d", &mem, &t, &p); err != nil || p == 0 || p > 255 || t == 0 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(m[4])
	want, err2 := b64.DecodeString(m[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, mem, uint8(p), uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is verified against when a user does not exist, so that a
// login for an unknown name costs the same time as one with a wrong
// password: timing does not tell which names exist.
var dummyHash = func() string {
	h, err := hashAdminPassword("no user has this password")
	if err != nil {
		panic(err)
	}
	return h
}()

// AddAdminUser creates an admin user with the given password.
func (s *Store) AddAdminUser(ctx context.Context, name, password string) error {
	if err := ValidateAdminName(name); err != nil {
		return err
	}
	if err := checkAdminPassword(password); err != nil {
		return err
	}
	hash, err := hashAdminPassword(password)
	if err != nil {
		return err
	}
	now := ts(s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO admin_users (name, password, created_at, password_changed_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`, name, hash, now, now)
		if err != nil {
			return fmt.Errorf("store: add user: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return conflict("user", name)
		}
		return nil
	})
}

// SetAdminPassword replaces a user's password and ends every session of the
// user.
func (s *Store) SetAdminPassword(ctx context.Context, name, password string) error {
	if err := checkAdminPassword(password); err != nil {
		return err
	}
	hash, err := hashAdminPassword(password)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `UPDATE admin_users SET password = ?, password_changed_at = ? WHERE name = ? RETURNING id`,
			hash, ts(s.now()), name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("user", name)
		}
		if err != nil {
			return fmt.Errorf("store: set password: %w", err)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM admin_sessions WHERE user_id = ?`, id)
		return err
	})
}

// RemoveAdminUser deletes a user and its sessions.
func (s *Store) RemoveAdminUser(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM admin_users WHERE name = ?`, name)
		if err != nil {
			return fmt.Errorf("store: remove user: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("user", name)
		}
		return nil
	})
}

// AdminUsers returns every admin user by name.
func (s *Store) AdminUsers(ctx context.Context) ([]AdminUser, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, created_at, password_changed_at FROM admin_users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: read users: %w", err)
	}
	defer rows.Close()
	var list []AdminUser
	for rows.Next() {
		var (
			u                AdminUser
			created, changed string
		)
		if err := rows.Scan(&u.ID, &u.Name, &created, &changed); err != nil {
			return nil, err
		}
		if u.CreatedAt, err = mustTS(created); err != nil {
			return nil, err
		}
		if u.PasswordChangedAt, err = mustTS(changed); err != nil {
			return nil, err
		}
		list = append(list, u)
	}
	return list, rows.Err()
}

// LoginFailures counts the failed logins since since for a user name and
// for a remote address (its host part).
func (s *Store) LoginFailures(ctx context.Context, user, remoteHost string, since time.Time) (byUser, byAddr int, err error) {
	err = s.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM admin_login_failures WHERE user_name = ? AND at >= ?),
		(SELECT count(*) FROM admin_login_failures WHERE remote_addr = ? AND at >= ?)`,
		user, ts(since), remoteHost, ts(since)).Scan(&byUser, &byAddr)
	if err != nil {
		return 0, 0, fmt.Errorf("store: count login failures: %w", err)
	}
	return byUser, byAddr, nil
}

// loginFailuresKept bounds how long failed logins are remembered.
const loginFailuresKept = 24 * time.Hour

// CheckAdminLogin verifies a user's password. A wrong password or an unknown
// user is recorded as a failure for the user name and remoteHost and
// answered with ok false; the two cases take the same time.
func (s *Store) CheckAdminLogin(ctx context.Context, name, password, remoteHost string) (AdminUser, bool, error) {
	var (
		u                AdminUser
		hash             = dummyHash
		created, changed string
	)
	err := s.r.QueryRowContext(ctx, `SELECT id, name, password, created_at, password_changed_at FROM admin_users WHERE name = ?`,
		name).Scan(&u.ID, &u.Name, &hash, &created, &changed)
	known := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return AdminUser{}, false, fmt.Errorf("store: read user: %w", err)
	}
	if len(password) > maxAdminPassword {
		password = password[:maxAdminPassword] // bounded work; such a password never matches a stored one
		known = false
	}
	if verifyAdminPassword(hash, password) && known {
		if u.CreatedAt, err = mustTS(created); err != nil {
			return AdminUser{}, false, err
		}
		if u.PasswordChangedAt, err = mustTS(changed); err != nil {
			return AdminUser{}, false, err
		}
		return u, true, nil
	}
	if len(name) > 64 || !strings.HasPrefix(name, strings.TrimSpace(name)) {
		name = "(invalid)"
	}
	now := s.now()
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO admin_login_failures (user_name, remote_addr, at) VALUES (?, ?, ?)`,
			name, remoteHost, ts(now)); err != nil {
			return fmt.Errorf("store: record login failure: %w", err)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM admin_login_failures WHERE at < ?`, ts(now.Add(-loginFailuresKept)))
		return err
	})
	return AdminUser{}, false, err
}

// AdminSession is a logged-in browser of an admin user.
type AdminSession struct {
	// ID is the session's row id.
	ID int64
	// User is the session's user.
	User AdminUser
	// CreatedAt is when the user logged in; LastSeenAt is the last request
	// that counted as activity.
	CreatedAt, LastSeenAt time.Time
	// RemoteAddr is the address the user logged in from.
	RemoteAddr string
}

// CreateAdminSession starts a session for the user and returns its secret
// cookie value, which is not stored, and clears the user's and the
// address's failed logins.
func (s *Store) CreateAdminSession(ctx context.Context, userID int64, remoteHost string) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("store: random session: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	now := ts(s.now())
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO admin_sessions (hash, user_id, created_at, last_seen_at, remote_addr)
			VALUES (?, ?, ?, ?, ?)`, hashToken(secret), userID, now, now, remoteHost); err != nil {
			return fmt.Errorf("store: create session: %w", err)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM admin_login_failures WHERE remote_addr = ?
			OR user_name = (SELECT name FROM admin_users WHERE id = ?)`, remoteHost, userID)
		return err
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// AdminSessionBySecret returns the session of a cookie value; ErrNotFound
// when there is none.
func (s *Store) AdminSessionBySecret(ctx context.Context, secret string) (AdminSession, error) {
	if len(secret) != 43 {
		return AdminSession{}, notFound("session", "")
	}
	var (
		a                                AdminSession
		created, seen, uCreated, uChange string
	)
	err := s.r.QueryRowContext(ctx, `SELECT s.id, s.created_at, s.last_seen_at, s.remote_addr,
		u.id, u.name, u.created_at, u.password_changed_at
		FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id WHERE s.hash = ?`, hashToken(secret)).
		Scan(&a.ID, &created, &seen, &a.RemoteAddr, &a.User.ID, &a.User.Name, &uCreated, &uChange)
	if errors.Is(err, sql.ErrNoRows) {
		return AdminSession{}, notFound("session", "")
	}
	if err != nil {
		return AdminSession{}, fmt.Errorf("store: read session: %w", err)
	}
	for _, p := range []struct {
		dst *time.Time
		s   string
	}{{&a.CreatedAt, created}, {&a.LastSeenAt, seen}, {&a.User.CreatedAt, uCreated}, {&a.User.PasswordChangedAt, uChange}} {
		if *p.dst, err = mustTS(p.s); err != nil {
			return AdminSession{}, err
		}
	}
	return a, nil
}

// TouchAdminSession records activity of a session now.
func (s *Store) TouchAdminSession(ctx context.Context, id int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE admin_sessions SET last_seen_at = ? WHERE id = ?`, ts(s.now()), id)
		return err
	})
}

// EndAdminSession deletes a session (logout or expiry) and, in the same
// transaction, the sessions idle since before idleBefore or started before
// startedBefore.
func (s *Store) EndAdminSession(ctx context.Context, id int64, idleBefore, startedBefore time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM admin_sessions WHERE id = ? OR last_seen_at < ? OR created_at < ?`,
			id, ts(idleBefore), ts(startedBefore))
		return err
	})
}
