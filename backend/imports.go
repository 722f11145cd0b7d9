package backend

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"smartproxy/backend/store"
	"smartproxy/internal/license"
	"smartproxy/internal/pki"
	"smartproxy/internal/revocation"
)

// The functions in this file are the one way an operator's files enter the
// store: the admin CLI and the web admin both call them.

// ParseCertificates reads one or more certificates from PEM, or one from
// DER.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if certs, err := pki.ParseCertificatesPEM(data); err == nil {
		return certs, nil
	} else if strings.Contains(string(data), "-----BEGIN") {
		return nil, err
	}
	cert, err := x509.ParseCertificate(data)
	if err != nil {
		return nil, errors.New("not a PEM or DER certificate")
	}
	return []*x509.Certificate{cert}, nil
}

// ParseOneCertificate reads exactly one certificate in PEM or DER.
func ParseOneCertificate(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("holds %d certificates, want one", len(certs))
	}
	return certs[0], nil
}

// AddCAs stores the CA certificates of a PEM or DER file, all or none.
func AddCAs(ctx context.Context, st *store.Store, data []byte) ([]store.CA, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	ders := make([][]byte, len(certs))
	for i, cert := range certs {
		ders[i] = cert.Raw
	}
	return st.AddCAs(ctx, ders)
}

// TrustedCAs returns the stored trusted CA certificates, parsed.
func TrustedCAs(ctx context.Context, st *store.Store) ([]*x509.Certificate, error) {
	list, err := st.CAs(ctx)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for _, ca := range list {
		cert, err := x509.ParseCertificate(ca.DER)
		if err != nil {
			return nil, fmt.Errorf("trusted CA %d: %w", ca.ID, err)
		}
		certs = append(certs, cert)
	}
	return certs, nil
}

// CRLImport is the result of ImportCRL.
type CRLImport struct {
	// CRL is the stored CRL.
	CRL store.CRL
	// Changed is false when exactly this CRL was stored already.
	Changed bool
	// Stale is set when the CRL is past its nextUpdate; it was stored
	// anyway, as the best knowledge available.
	Stale error
}

// ImportCRL verifies a CRL (PEM or DER) against the trusted CAs and stores
// it. url is the distribution point it belongs to; if empty, the CRL's own
// issuing distribution point, if any.
func ImportCRL(ctx context.Context, st *store.Store, data []byte, url string, now time.Time) (CRLImport, error) {
	der := data
	if strings.HasPrefix(strings.TrimSpace(string(data[:min(len(data), 64)])), "-----BEGIN") {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "X509 CRL" {
			return CRLImport{}, errors.New("a PEM file without an X509 CRL block")
		}
		der = block.Bytes
	}
	cas, err := TrustedCAs(ctx, st)
	if err != nil {
		return CRLImport{}, err
	}
	if len(cas) == 0 {
		return CRLImport{}, errors.New("no trusted CA is configured to verify the CRL against; add its issuer as a trusted CA first (\"ca add\" or the web admin's CAs page)")
	}
	var out CRLImport
	crl, err := revocation.ParseFrom(der, cas, now)
	var stale *revocation.StaleError
	if errors.As(err, &stale) {
		out.Stale = err
	} else if err != nil {
		return CRLImport{}, err
	}
	if url == "" {
		if dps := crl.DistributionPoints(); len(dps) > 0 {
			url = dps[0]
		}
	}
	sum := sha256.Sum256(crl.RawIssuer())
	nc := store.NewCRL{URL: url, IssuerKey: hex.EncodeToString(sum[:]), Issuer: crl.Issuer(), Source: "import", DER: der,
		Entries: crl.Len(), ThisUpdate: crl.ThisUpdate(), NextUpdate: crl.NextUpdate()}
	if n := crl.Number(); n != nil {
		nc.Number = n.String()
	}
	out.CRL, out.Changed, err = st.PutCRL(ctx, nc)
	if err != nil {
		return CRLImport{}, err
	}
	return out, nil
}

// ImportLicense verifies a license file with the keys built into the binary
// and stores it for the Proxy ID it names. An expired license is stored too;
// the caller warns about it (l.NotAfter).
func ImportLicense(ctx context.Context, st *store.Store, file []byte) (*license.License, error) {
	l, err := license.Parse(file, license.TrustedKeys())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(file)
	if err := st.PutLicense(ctx, store.License{ProxyID: l.ProxyID, Customer: l.Customer, NotBefore: l.NotBefore,
		NotAfter: l.NotAfter, SHA256: hex.EncodeToString(sum[:]), File: file}); err != nil {
		return nil, err
	}
	return l, nil
}
