package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/backend/store"
	"smartproxy/internal/logging"
	"smartproxy/internal/revocation"
)

// FetcherConfig configures the CRL downloader. The zero value selects the
// defaults.
type FetcherConfig struct {
	// Interval is how often a CRL is downloaded again after a success; a
	// CRL whose nextUpdate comes earlier is downloaded then. If zero, one
	// hour.
	Interval time.Duration
	// RetryInterval is the wait after the first failure; it doubles with
	// every further failure up to Interval. If zero, one minute.
	RetryInterval time.Duration
	// CheckInterval is how often the downloader looks for URLs that are
	// due, which is also how soon it notices a URL added by another process.
	// If zero, 5s.
	CheckInterval time.Duration
	// MaxSize is the largest CRL accepted, in bytes. If zero, 256 MiB.
	MaxSize int64
	// Timeout bounds one download. If zero, 2 minutes.
	Timeout time.Duration
	// Concurrency is how many downloads may go on at once. If zero, 4.
	Concurrency int
	// Client is the HTTP client used. If nil, a client with the default
	// transport (which honours HTTP_PROXY and friends) is used.
	Client *http.Client
}

// Fetcher downloads the CRLs of every known distribution point (configured
// with `crl-url add` or reported by proxy clients), verifies each against
// the trusted CAs and stores it. A failed or rejected download keeps the
// stored CRL. Create it with NewFetcher; Run owns its goroutines.
type Fetcher struct {
	// Immutable after NewFetcher.
	cfg  FetcherConfig
	st   *store.Store
	log  logrus.FieldLogger
	now  func() time.Time
	wake chan struct{}
	// fetches counts downloads by result; the Server sets it after NewFetcher. If nil,
	// downloads are not counted.
	fetches *prometheus.CounterVec
}

// NewFetcher checks cfg and returns a Fetcher.
func NewFetcher(st *store.Store, cfg FetcherConfig, log logrus.FieldLogger, now func() time.Time) (*Fetcher, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Minute
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 5 * time.Second
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 256 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if log == nil {
		log = logging.Discard()
	}
	if now == nil {
		now = time.Now
	}
	return &Fetcher{cfg: cfg, st: st, log: log.WithField("component", "crl_fetcher"), now: now, wake: make(chan struct{}, 1)}, nil
}

// Wake makes Run look for due URLs now, e.g. after new ones were reported.
func (f *Fetcher) Wake() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run downloads due CRLs every CheckInterval and on Wake until ctx ends.
func (f *Fetcher) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.CheckInterval)
	defer t.Stop()
	for {
		f.FetchDue(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-f.wake:
		}
	}
}

// due returns when u should be downloaded next; crl is the CRL stored for
// it, if any.
func (f *Fetcher) due(u store.CRLURL, crl *store.CRL) time.Time {
	if u.LastAttemptAt.IsZero() {
		return time.Time{}
	}
	if u.Failures > 0 {
		wait := f.cfg.RetryInterval
		for i := 1; i < u.Failures && wait < f.cfg.Interval; i++ {
			wait *= 2
		}
		return u.LastAttemptAt.Add(min(wait, f.cfg.Interval))
	}
	next := u.LastAttemptAt.Add(f.cfg.Interval)
	if crl != nil && !crl.NextUpdate.IsZero() && crl.NextUpdate.Before(next) && crl.NextUpdate.After(u.LastAttemptAt) {
		next = crl.NextUpdate
	}
	return next
}

// FetchDue downloads every CRL that is due, at most Concurrency at once, and
// returns how many it attempted.
func (f *Fetcher) FetchDue(ctx context.Context) int {
	urls, err := f.st.CRLURLs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.WithError(err).Error("cannot read the CRL URLs")
		}
		return 0
	}
	crls, err := f.st.CRLs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.WithError(err).Error("cannot read the stored CRLs")
		}
		return 0
	}
	byURL := make(map[string]*store.CRL)
	for i := range crls {
		if crls[i].URL != "" {
			byURL[crls[i].URL] = &crls[i]
		}
	}
	now := f.now()
	var due []store.CRLURL
	for _, u := range urls {
		if !f.due(u, byURL[u.URL]).After(now) {
			due = append(due, u)
		}
	}
	if len(due) == 0 {
		return 0
	}
	cas, err := TrustedCAs(ctx, f.st)
	if err != nil {
		if ctx.Err() == nil {
			f.log.WithError(err).Error("cannot read the trusted CAs")
		}
		return 0
	}
	sem := make(chan struct{}, f.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, u := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return 0
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f.fetchOne(ctx, u, cas)
		}()
	}
	wg.Wait()
	return len(due)
}

// fetchOne downloads, checks and stores one CRL and records the result.
func (f *Fetcher) fetchOne(ctx context.Context, u store.CRLURL, cas []*x509.Certificate) {
	res := f.Fetch(ctx, u, cas)
	if ctx.Err() != nil {
		return
	}
	if f.fetches != nil {
		f.fetches.WithLabelValues(res.Status).Inc()
	}
	entry := f.log.WithFields(logrus.Fields{"url": u.URL, "status": res.Status})
	switch res.Status {
	case "updated":
		entry.Info("CRL downloaded and stored")
	case "not_modified", "unchanged":
		entry.Debug("CRL unchanged")
	default:
		entry.WithFields(logrus.Fields{"event": "crl_fetch_failed", "error": res.Err, "failures": u.Failures + 1}).
			Warn("CRL download failed; the stored CRL (if any) is kept")
	}
	if err := f.st.RecordFetch(ctx, u.ID, res); err != nil && ctx.Err() == nil {
		f.log.WithError(err).WithField("url", u.URL).Error("cannot record the CRL download")
	}
}

// Fetch downloads the CRL of u with its validators, checks it against cas
// and stores it when it is new. It never returns an error: the result says
// what happened.
func (f *Fetcher) Fetch(ctx context.Context, u store.CRLURL, cas []*x509.Certificate) store.FetchResult {
	res := store.FetchResult{At: f.now()}
	fail := func(status, format string, args ...any) store.FetchResult {
		res.Status, res.Err = status, fmt.Sprintf(format, args...)
		return res
	}
	rctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.URL, nil)
	if err != nil {
		return fail("failed", "%v", err)
	}
	req.Header.Set("Accept", "application/pkix-crl, application/x-pkcs7-crl, */*")
	if u.ETag != "" {
		req.Header.Set("If-None-Match", u.ETag)
	}
	if u.LastModified != "" {
		req.Header.Set("If-Modified-Since", u.LastModified)
	}
	resp, err := f.cfg.Client.Do(req)
	if err != nil {
		return fail("failed", "%v", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		res.Status, res.ETag, res.LastModified = "not_modified", u.ETag, u.LastModified
		return res
	case http.StatusOK:
	default:
		return fail("failed", "HTTP status %s", resp.Status)
	}
	if resp.ContentLength > f.cfg.MaxSize {
		return fail("rejected", "the CRL of %d bytes exceeds the limit of %d bytes", resp.ContentLength, f.cfg.MaxSize)
	}
	body, err := readBody(resp.Body, resp.ContentLength, f.cfg.MaxSize)
	if err != nil {
		return fail("failed", "reading the body: %v", err)
	}
	if int64(len(body)) > f.cfg.MaxSize {
		return fail("rejected", "the CRL exceeds the limit of %d bytes", f.cfg.MaxSize)
	}
	der := body
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("-----BEGIN")) {
		block, _ := pem.Decode(body)
		if block == nil || block.Type != "X509 CRL" {
			return fail("rejected", "PEM body without an X509 CRL block")
		}
		der = block.Bytes
	}
	now := f.now()
	crl, err := revocation.ParseFrom(der, cas, now)
	var stale *revocation.StaleError
	switch {
	case errors.As(err, &stale):
		f.log.WithFields(logrus.Fields{"url": u.URL, "next_update": stale.NextUpdate.UTC().Format(time.RFC3339)}).
			Warn("the downloaded CRL is past its nextUpdate; it is stored as the best knowledge available")
	case err != nil:
		return fail("rejected", "%v", err)
	}
	nc := store.NewCRL{URL: u.URL, Issuer: crl.Issuer(), Source: "download", DER: der, Entries: crl.Len(),
		ThisUpdate: crl.ThisUpdate(), NextUpdate: crl.NextUpdate(), IssuerKey: issuerKey(crl.RawIssuer())}
	if n := crl.Number(); n != nil {
		nc.Number = n.String()
	}
	_, changed, err := f.st.PutCRL(ctx, nc)
	var se *store.StaleCRLError
	switch {
	case errors.As(err, &se):
		return fail("rejected", "%v", se)
	case err != nil:
		return fail("failed", "storing: %v", err)
	}
	res.ETag, res.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	res.Status = "unchanged"
	if changed {
		res.Status = "updated"
	}
	return res
}

// issuerKey identifies a CRL issuer by its raw DN.
func issuerKey(rawIssuer []byte) string {
	sum := sha256.Sum256(rawIssuer)
	return hex.EncodeToString(sum[:])
}

// readBody reads at most max+1 bytes of r. When the length is announced,
// the buffer is allocated once at that size instead of growing by doubling,
// which for a CRL of tens of megabytes saves as much again in garbage.
func readBody(r io.Reader, length, max int64) ([]byte, error) {
	if length <= 0 || length > max {
		return io.ReadAll(io.LimitReader(r, max+1))
	}
	buf := make([]byte, length, length+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	// A body longer than announced is an error of the transport; read one
	// more byte to notice it.
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return append(buf, one[0]), nil
	}
	return buf, nil
}

// FetchNow downloads the CRL of the distribution point with the given id
// at once, whether it is due or not, and records the result like a
// scheduled download.
func (f *Fetcher) FetchNow(ctx context.Context, id int64) error {
	urls, err := f.st.CRLURLs(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(urls, func(u store.CRLURL) bool { return u.ID == id })
	if i < 0 {
		return fmt.Errorf("CRL URL %d: %w", id, store.ErrNotFound)
	}
	cas, err := TrustedCAs(ctx, f.st)
	if err != nil {
		return err
	}
	f.fetchOne(ctx, urls[i], cas)
	return nil
}
