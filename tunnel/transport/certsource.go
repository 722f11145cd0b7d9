package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/internal/pki"
)

// Credentials provides the current TLS identity and the tunnel CA. The TLS
// configurations of this package call it on every handshake, so an
// implementation may change its answers at any time (certificate rotation).
type Credentials interface {
	// Certificate returns the certificate chain and key to present.
	Certificate() *tls.Certificate
	// Roots returns the pool of CA certificates the peer's certificate must
	// chain to.
	Roots() *x509.CertPool
}

// StaticCredentials is a fixed identity and CA pool.
type StaticCredentials struct {
	// Cert is presented to the peer.
	Cert tls.Certificate
	// Pool verifies the peer.
	Pool *x509.CertPool
}

// Certificate returns &c.Cert.
func (c *StaticCredentials) Certificate() *tls.Certificate { return &c.Cert }

// Roots returns c.Pool.
func (c *StaticCredentials) Roots() *x509.CertPool { return c.Pool }

// CertSourceConfig configures a [CertSource].
type CertSourceConfig struct {
	// CertFile is the PEM certificate chain to present, leaf first. Required.
	CertFile string
	// KeyFile is the PEM private key of the leaf in CertFile. Required.
	KeyFile string
	// CAFile holds the PEM CA certificates the peer must chain to (the
	// tunnel CA). Required.
	CAFile string
	// CheckInterval is how often Run looks at the files' size and
	// modification time. If zero, 30s. Run is optional: Reload can be
	// called instead (on SIGHUP).
	CheckInterval time.Duration
	// Logger receives one line per reload and per failed reload. If nil,
	// nothing is logged.
	Logger logrus.FieldLogger
}

// CertSource is [Credentials] backed by PEM files that are reloaded when they
// change. Loading is all or nothing: a set of files that does not load (key
// not matching the certificate, a CA file without certificates, a file
// missing while being replaced) is refused and the previous set stays in use.
//
// A CertSource is safe for concurrent use.
type CertSource struct {
	cfg CertSourceConfig // immutable
	log logrus.FieldLogger

	cur atomic.Pointer[certSet]

	mu    sync.Mutex // serialises Reload
	stats [3]fileStat
}

// certSet is one loaded, consistent set of files. Immutable.
type certSet struct {
	cert   *tls.Certificate
	pool   *x509.CertPool
	caCert []*x509.Certificate
	hash   [sha256.Size]byte // over the three files' contents
}

// fileStat is what the periodic check compares.
type fileStat struct {
	size    int64
	modTime time.Time
}

// NewCertSource loads the files of cfg once and returns the source. It fails
// when the files do not load.
func NewCertSource(cfg CertSourceConfig) (*CertSource, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" || cfg.CAFile == "" {
		return nil, errors.New("transport: certificate source needs a certificate, a key and a CA file")
	}
	if cfg.CheckInterval < 0 {
		return nil, fmt.Errorf("transport: negative certificate check interval %v", cfg.CheckInterval)
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 30 * time.Second
	}
	s := &CertSource{cfg: cfg, log: loggerOrDiscard(cfg.Logger)}
	set, stats, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(set)
	s.stats = stats
	s.logLoaded(set)
	return s, nil
}

// Certificate returns the current certificate chain and key.
func (s *CertSource) Certificate() *tls.Certificate { return s.cur.Load().cert }

// Roots returns the current CA pool.
func (s *CertSource) Roots() *x509.CertPool { return s.cur.Load().pool }

// Leaf returns the current leaf certificate.
func (s *CertSource) Leaf() *x509.Certificate { return s.cur.Load().cert.Leaf }

// Reload reads the files again and, when their content changed and they load,
// makes them current. It reports whether the certificate set changed. On error
// the previous set stays in use.
func (s *CertSource) Reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *CertSource) reloadLocked() (bool, error) {
	set, stats, err := s.load()
	if err != nil {
		s.log.WithError(err).WithField("cert_file", s.cfg.CertFile).Error("tunnel certificate reload failed; keeping the previous certificate")
		return false, err
	}
	s.stats = stats
	old := s.cur.Load()
	if old.hash == set.hash {
		return false, nil
	}
	s.cur.Store(set)
	s.logLoaded(set)
	return true, nil
}

// logLoaded logs a newly loaded set, with a warning when its certificate is
// outside its validity period (peers will refuse it).
func (s *CertSource) logLoaded(set *certSet) {
	leaf := set.cert.Leaf
	e := s.log.WithFields(logrus.Fields{
		"cert_file":  s.cfg.CertFile,
		"subject":    leaf.Subject.String(),
		"serial":     fmt.Sprintf("%X", leaf.SerialNumber),
		"not_after":  leaf.NotAfter.UTC().Format(time.RFC3339),
		"ca_subject": set.caCert[0].Subject.String(),
	})
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		e.Warn("tunnel certificate loaded, but it is not valid now; peers will refuse it")
		return
	}
	e.Info("tunnel certificate loaded")
}

// Run checks the files every CheckInterval and reloads them when the size or
// modification time of one changed, until ctx ends. It returns ctx.Err().
func (s *CertSource) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		s.mu.Lock()
		if s.statChanged() {
			s.reloadLocked() // logged inside
		}
		s.mu.Unlock()
	}
}

// statChanged reports whether any file's size or modification time differs
// from the last load. A file that cannot be stat'ed counts as changed, so
// that the failure is logged by the reload.
func (s *CertSource) statChanged() bool {
	for i, name := range s.files() {
		fi, err := os.Stat(name)
		if err != nil {
			return true
		}
		if fi.Size() != s.stats[i].size || !fi.ModTime().Equal(s.stats[i].modTime) {
			return true
		}
	}
	return false
}

func (s *CertSource) files() [3]string {
	return [3]string{s.cfg.CertFile, s.cfg.KeyFile, s.cfg.CAFile}
}

// load reads and checks the three files.
func (s *CertSource) load() (*certSet, [3]fileStat, error) {
	var (
		data  [3][]byte
		stats [3]fileStat
	)
	for i, name := range s.files() {
		f, err := os.Open(name)
		if err != nil {
			return nil, stats, fmt.Errorf("transport: %w", err)
		}
		fi, err := f.Stat()
		if err == nil {
			stats[i] = fileStat{size: fi.Size(), modTime: fi.ModTime()}
			var buf bytes.Buffer
			_, err = buf.ReadFrom(f)
			data[i] = buf.Bytes()
		}
		f.Close()
		if err != nil {
			return nil, stats, fmt.Errorf("transport: read %s: %w", name, err)
		}
	}
	cert, err := tls.X509KeyPair(data[0], data[1])
	if err != nil {
		return nil, stats, fmt.Errorf("transport: load %s with key %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	caCerts, err := pki.ParseCertificatesPEM(data[2])
	if err != nil {
		return nil, stats, fmt.Errorf("transport: load CA file %s: %w", s.cfg.CAFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range caCerts {
		if !c.IsCA {
			return nil, stats, fmt.Errorf("transport: CA file %s: %q is not a CA certificate", s.cfg.CAFile, c.Subject)
		}
		pool.AddCert(c)
	}
	h := sha256.New()
	for _, d := range data {
		fmt.Fprintf(h, "%d:", len(d))
		h.Write(d)
	}
	set := &certSet{cert: &cert, pool: pool, caCert: caCerts}
	h.Sum(set.hash[:0])
	return set, stats, nil
}

// loggerOrDiscard returns l, or a logger that discards everything when l is
// nil.
func loggerOrDiscard(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	d := logrus.New()
	d.SetOutput(io.Discard)
	d.SetLevel(logrus.PanicLevel)
	return d
}
