package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// crlChunkSize is the size of the pieces a CRL body is stored in and served
// from.
const crlChunkSize = 256 << 10

// ErrCRLChanged is returned by a CRLReader when the CRL was replaced or
// removed while it was being read.
var ErrCRLChanged = errors.New("store: the CRL changed while it was read")

// CRLURL is a CRL distribution point the backend knows and downloads.
type CRLURL struct {
	// ID identifies the URL for `crl-url remove`.
	ID int64
	// URL is the distribution point (http or https).
	URL string
	// Configured says an operator added it (`crl-url add`).
	Configured bool
	// Reported says a proxy client reported it (seen in a partner
	// certificate); ReportedBy names the client, ReportedAt says when first.
	Reported   bool
	ReportedBy string
	ReportedAt time.Time
	// AddedAt is when the URL became known.
	AddedAt time.Time
	// LastAttemptAt and LastSuccessAt are the times of the last download
	// attempt and of the last successful one; zero: never.
	LastAttemptAt time.Time
	LastSuccessAt time.Time
	// LastStatus is the result of the last attempt: "updated",
	// "not_modified", "unchanged", "rejected" or "failed".
	LastStatus string
	// LastError says why the last attempt failed.
	LastError string
	// ETag and LastModified are the validators of the last successful
	// download, sent as If-None-Match and If-Modified-Since.
	ETag         string
	LastModified string
	// Failures counts the attempts that failed since the last success.
	Failures int
}

// AddCRLURL adds a distribution point configured by the operator. A URL that
// a client reported before becomes configured too; one configured already is
// ErrConflict.
func (s *Store) AddCRLURL(ctx context.Context, url string) (CRLURL, error) {
	if err := checkURL("url", url); err != nil {
		return CRLURL{}, err
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var configured sql.NullBool
		err := tx.QueryRowContext(ctx, `SELECT configured FROM crl_urls WHERE url = ?`, url).Scan(&configured)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO crl_urls (url, configured, added_at) VALUES (?, 1, ?)`, url, ts(s.now()))
		case err != nil:
		case configured.Bool:
			return conflict("CRL URL", url)
		default:
			_, err = tx.ExecContext(ctx, `UPDATE crl_urls SET configured = 1 WHERE url = ?`, url)
		}
		if err != nil {
			return fmt.Errorf("store: add CRL URL: %w", err)
		}
		return nil
	})
	if err != nil {
		return CRLURL{}, err
	}
	return s.crlURL(ctx, url)
}

// ReportCRLURLs records distribution points reported by a proxy client. Every
// URL is checked first; when one is invalid nothing is stored. It returns how
// many were new.
func (s *Store) ReportCRLURLs(ctx context.Context, client string, urls []string) (int, error) {
	for i, u := range urls {
		if err := checkURL(fieldf("urls[%d]", i), u); err != nil {
			return 0, err
		}
	}
	added := 0
	now := ts(s.now())
	err := s.write(ctx, func(tx *sql.Tx) error {
		added = 0
		for _, u := range urls {
			res, err := tx.ExecContext(ctx, `INSERT INTO crl_urls (url, reported, reported_by, reported_at, added_at)
				VALUES (?, 1, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET reported = 1,
				reported_by = excluded.reported_by, reported_at = excluded.reported_at WHERE reported = 0`,
				u, client, now, now)
			if err != nil {
				return fmt.Errorf("store: report CRL URL: %w", err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				added++
			}
		}
		return nil
	})
	return added, err
}

const crlURLColumns = `id, url, configured, reported, reported_by, reported_at, added_at, last_attempt_at,
	last_success_at, last_status, last_error, etag, last_modified, failures`

func scanCRLURL(row interface{ Scan(...any) error }) (CRLURL, error) {
	var (
		u                                    CRLURL
		reportedAt, lastAttempt, lastSuccess sql.NullString
		added                                string
	)
	if err := row.Scan(&u.ID, &u.URL, &u.Configured, &u.Reported, &u.ReportedBy, &reportedAt, &added, &lastAttempt,
		&lastSuccess, &u.LastStatus, &u.LastError, &u.ETag, &u.LastModified, &u.Failures); err != nil {
		return CRLURL{}, err
	}
	var err error
	if u.ReportedAt, err = parseTS(reportedAt); err != nil {
		return CRLURL{}, err
	}
	if u.AddedAt, err = mustTS(added); err != nil {
		return CRLURL{}, err
	}
	if u.LastAttemptAt, err = parseTS(lastAttempt); err != nil {
		return CRLURL{}, err
	}
	if u.LastSuccessAt, err = parseTS(lastSuccess); err != nil {
		return CRLURL{}, err
	}
	return u, nil
}

func (s *Store) crlURL(ctx context.Context, url string) (CRLURL, error) {
	u, err := scanCRLURL(s.r.QueryRowContext(ctx, `SELECT `+crlURLColumns+` FROM crl_urls WHERE url = ?`, url))
	if errors.Is(err, sql.ErrNoRows) {
		return CRLURL{}, notFound("CRL URL", url)
	}
	return u, err
}

// CRLURLs returns every known distribution point by id.
func (s *Store) CRLURLs(ctx context.Context) ([]CRLURL, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+crlURLColumns+` FROM crl_urls ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: read CRL URLs: %w", err)
	}
	defer rows.Close()
	var list []CRLURL
	for rows.Next() {
		u, err := scanCRLURL(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, u)
	}
	return list, rows.Err()
}

// RemoveCRLURL removes a distribution point, given by id or URL, and the CRL
// downloaded from it.
func (s *Store) RemoveCRLURL(ctx context.Context, ref string) (CRLURL, error) {
	var u CRLURL
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		q := `SELECT ` + crlURLColumns + ` FROM crl_urls WHERE url = ?`
		if id, perr := strconv.ParseInt(ref, 10, 64); perr == nil {
			u, err = scanCRLURL(tx.QueryRowContext(ctx, `SELECT `+crlURLColumns+` FROM crl_urls WHERE id = ?`, id))
		} else {
			u, err = scanCRLURL(tx.QueryRowContext(ctx, q, ref))
		}
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("CRL URL", ref)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM crl_urls WHERE id = ?`, u.ID); err != nil {
			return err
		}
		return removeCRLWhere(ctx, tx, `scope = ?`, "url:"+u.URL)
	})
	return u, err
}

// FetchResult is the outcome of one download attempt of a CRL URL.
type FetchResult struct {
	// At is when the attempt started.
	At time.Time
	// Status is "updated", "not_modified", "unchanged", "rejected" or
	// "failed".
	Status string
	// Err says why the attempt failed or the CRL was rejected.
	Err string
	// ETag and LastModified are the response's validators; they are stored
	// only for "updated", "not_modified" and "unchanged".
	ETag, LastModified string
}

// RecordFetch stores the outcome of a download attempt of the URL with id.
func (s *Store) RecordFetch(ctx context.Context, id int64, r FetchResult) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var err error
		switch r.Status {
		case "updated", "not_modified", "unchanged":
			_, err = tx.ExecContext(ctx, `UPDATE crl_urls SET last_attempt_at = ?, last_success_at = ?, last_status = ?,
				last_error = '', failures = 0, etag = ?, last_modified = ? WHERE id = ?`,
				ts(r.At), ts(r.At), r.Status, r.ETag, r.LastModified, id)
		default:
			_, err = tx.ExecContext(ctx, `UPDATE crl_urls SET last_attempt_at = ?, last_status = ?, last_error = ?,
				failures = failures + 1 WHERE id = ?`, ts(r.At), r.Status, r.Err, id)
		}
		if err != nil {
			return fmt.Errorf("store: record CRL fetch: %w", err)
		}
		return nil
	})
}

// CRL describes a stored certificate revocation list.
type CRL struct {
	// ID identifies the CRL in the configuration document and in
	// GET /v1/crls/{id}.
	ID int64
	// URL is the distribution point it was downloaded from or imported for;
	// empty for an imported CRL without one.
	URL string
	// Issuer is the issuer's DN.
	Issuer string
	// Source is "download" or "import".
	Source string
	// Size is the length of the DER body in bytes.
	Size int64
	// SHA256 is the SHA-256 of the DER body, lower-case hex.
	SHA256 string
	// Entries is the number of revoked certificates.
	Entries int
	// Number is the CRL number in decimal, "" if it has none.
	Number string
	// ThisUpdate and NextUpdate are the CRL's validity; NextUpdate may be
	// zero.
	ThisUpdate, NextUpdate time.Time
	// UpdatedAt is when this version was stored.
	UpdatedAt time.Time

	blobID int64
	chunks int
}

// NewCRL is a CRL to store, already parsed and verified against its issuer
// by the caller.
type NewCRL struct {
	// URL is the distribution point; if empty, the CRL replaces the stored
	// one of the same IssuerKey without URL.
	URL string
	// IssuerKey identifies the issuer (e.g. the SHA-256 of its raw DN, in
	// hex) for CRLs without URL.
	IssuerKey string
	// Issuer is the issuer's DN, for display.
	Issuer string
	// Source is "download" or "import".
	Source string
	// DER is the CRL.
	DER []byte
	// Entries, Number, ThisUpdate and NextUpdate describe it.
	Entries    int
	Number     string
	ThisUpdate time.Time
	NextUpdate time.Time
}

// StaleCRLError is returned by PutCRL for a CRL older than the stored one.
type StaleCRLError struct {
	// Stored and Given are the thisUpdate times.
	Stored, Given time.Time
}

// Error implements error.
func (e *StaleCRLError) Error() string {
	return fmt.Sprintf("CRL of %s is older than the stored one of %s", e.Given.Format(time.RFC3339), e.Stored.Format(time.RFC3339))
}

// PutCRL stores c as a new CRL or as the new version of the one it
// replaces (same URL, or same issuer without URL). It reports whether
// anything changed: the same bytes again change nothing, and an older CRL
// (by thisUpdate) is a *StaleCRLError.
func (s *Store) PutCRL(ctx context.Context, c NewCRL) (CRL, bool, error) {
	if len(c.DER) == 0 {
		return CRL{}, false, invalid("crl", "empty")
	}
	if c.Source != "download" && c.Source != "import" {
		return CRL{}, false, invalid("crl.source", "%q is not download or import", c.Source)
	}
	if c.URL != "" {
		if err := checkURL("url", c.URL); err != nil {
			return CRL{}, false, err
		}
	}
	if err := checkText("crl.issuer", c.Issuer, maxText); err != nil {
		return CRL{}, false, err
	}
	scope := "url:" + c.URL
	if c.URL == "" {
		if c.IssuerKey == "" {
			return CRL{}, false, invalid("crl", "neither URL nor issuer key")
		}
		scope = "issuer:" + c.IssuerKey
	}
	sum := sha256.Sum256(c.DER)
	digest := hex.EncodeToString(sum[:])
	var (
		out     CRL
		changed bool
	)
	now := s.now()
	err := s.write(ctx, func(tx *sql.Tx) error {
		old, err := scanCRL(tx.QueryRowContext(ctx, `SELECT `+crlColumns+` FROM crls WHERE scope = ?`, scope))
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if exists && old.SHA256 == digest {
			out = old
			return nil
		}
		if exists && c.ThisUpdate.Before(old.ThisUpdate) {
			return &StaleCRLError{Stored: old.ThisUpdate, Given: c.ThisUpdate}
		}
		chunks := (len(c.DER) + crlChunkSize - 1) / crlChunkSize
		res, err := tx.ExecContext(ctx, `INSERT INTO crl_blobs (size, sha256, chunks) VALUES (?, ?, ?)`, len(c.DER), digest, chunks)
		if err != nil {
			return fmt.Errorf("store: store CRL: %w", err)
		}
		blob, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for i := range chunks {
			part := c.DER[i*crlChunkSize : min(len(c.DER), (i+1)*crlChunkSize)]
			if _, err := tx.ExecContext(ctx, `INSERT INTO crl_chunks (blob_id, seq, data) VALUES (?, ?, ?)`, blob, i, part); err != nil {
				return fmt.Errorf("store: store CRL: %w", err)
			}
		}
		args := []any{c.URL, c.Issuer, c.Source, blob, len(c.DER), digest, c.Entries, c.Number, ts(c.ThisUpdate), nullTS(c.NextUpdate), ts(now)}
		var id int64
		if exists {
			err = tx.QueryRowContext(ctx, `UPDATE crls SET url = ?, issuer = ?, source = ?, blob_id = ?, size = ?, sha256 = ?,
				entries = ?, number = ?, this_update = ?, next_update = ?, updated_at = ? WHERE id = ? RETURNING id`,
				append(args, old.ID)...).Scan(&id)
			if err == nil {
				_, err = tx.ExecContext(ctx, `DELETE FROM crl_blobs WHERE id = ?`, old.blobID)
			}
		} else {
			err = tx.QueryRowContext(ctx, `INSERT INTO crls (url, issuer, source, blob_id, size, sha256, entries, number,
				this_update, next_update, updated_at, scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
				append(args, scope)...).Scan(&id)
		}
		if err != nil {
			return fmt.Errorf("store: store CRL: %w", err)
		}
		out, err = scanCRL(tx.QueryRowContext(ctx, `SELECT `+crlColumns+` FROM crls WHERE id = ?`, id))
		changed = true
		return err
	})
	return out, changed, err
}

const crlColumns = `id, url, issuer, source, size, sha256, entries, number, this_update, next_update, updated_at,
	blob_id, (SELECT chunks FROM crl_blobs b WHERE b.id = blob_id)`

func scanCRL(row interface{ Scan(...any) error }) (CRL, error) {
	var (
		c             CRL
		this, updated string
		next          sql.NullString
	)
	if err := row.Scan(&c.ID, &c.URL, &c.Issuer, &c.Source, &c.Size, &c.SHA256, &c.Entries, &c.Number, &this, &next,
		&updated, &c.blobID, &c.chunks); err != nil {
		return CRL{}, err
	}
	var err error
	if c.ThisUpdate, err = mustTS(this); err != nil {
		return CRL{}, err
	}
	if c.NextUpdate, err = parseTS(next); err != nil {
		return CRL{}, err
	}
	if c.UpdatedAt, err = mustTS(updated); err != nil {
		return CRL{}, err
	}
	return c, nil
}

// CRLs returns the metadata of every stored CRL by id.
func (s *Store) CRLs(ctx context.Context) ([]CRL, error) {
	var list []CRL
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = readCRLs(ctx, tx)
		return err
	})
	return list, err
}

func readCRLs(ctx context.Context, q execQueryer) ([]CRL, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+crlColumns+` FROM crls ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: read CRLs: %w", err)
	}
	defer rows.Close()
	var list []CRL
	for rows.Next() {
		c, err := scanCRL(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, c)
	}
	return list, rows.Err()
}

// CRL returns the metadata of one CRL.
func (s *Store) CRL(ctx context.Context, id int64) (CRL, error) {
	c, err := scanCRL(s.r.QueryRowContext(ctx, `SELECT `+crlColumns+` FROM crls WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return CRL{}, notFound("CRL", id)
	}
	return c, err
}

// RemoveCRL removes a stored CRL.
func (s *Store) RemoveCRL(ctx context.Context, id int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM crls WHERE id = ?`, id).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return notFound("CRL", id)
		}
		return removeCRLWhere(ctx, tx, `id = ?`, id)
	})
}

func removeCRLWhere(ctx context.Context, tx *sql.Tx, where string, arg any) error {
	var blob int64
	err := tx.QueryRowContext(ctx, `DELETE FROM crls WHERE `+where+` RETURNING blob_id`, arg).Scan(&blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: remove CRL: %w", err)
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM crl_blobs WHERE id = ?`, blob)
	return err
}

// CRLReader reads the DER body of one CRL version piece by piece; it never
// holds more than one piece in memory. Not safe for concurrent use.
type CRLReader struct {
	s      *Store
	ctx    context.Context
	blobID int64
	chunks int
	next   int
	own    []byte // the current piece; reused
	buf    []byte // the unread rest of own
}

// OpenCRL returns the metadata of the CRL with id and a reader of its body.
// When the CRL is replaced while it is read, the reader fails with
// ErrCRLChanged.
func (s *Store) OpenCRL(ctx context.Context, id int64) (CRL, *CRLReader, error) {
	c, err := s.CRL(ctx, id)
	if err != nil {
		return CRL{}, nil, err
	}
	return c, &CRLReader{s: s, ctx: ctx, blobID: c.blobID, chunks: c.chunks}, nil
}

// Read implements io.Reader.
func (r *CRLReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.next >= r.chunks {
			return 0, io.EOF
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fill reads the next piece into the reader's own buffer, which is reused
// from piece to piece.
func (r *CRLReader) fill() error {
	rows, err := r.s.r.QueryContext(r.ctx, `SELECT data FROM crl_chunks WHERE blob_id = ? AND seq = ?`, r.blobID, r.next)
	if err != nil {
		return fmt.Errorf("store: read CRL: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: read CRL: %w", err)
		}
		return ErrCRLChanged
	}
	var raw sql.RawBytes
	if err := rows.Scan(&raw); err != nil {
		return fmt.Errorf("store: read CRL: %w", err)
	}
	r.own = append(r.own[:0], raw...)
	r.buf = r.own
	r.next++
	return nil
}

// ReadCRL returns the whole DER body of the CRL with id. Use OpenCRL to
// stream it instead.
func (s *Store) ReadCRL(ctx context.Context, id int64) ([]byte, error) {
	c, r, err := s.OpenCRL(ctx, id)
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, c.Size))
	if _, err := io.Copy(buf, r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
