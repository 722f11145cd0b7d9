package clienttest

import (
	"crypto/sha256"
	"encoding/json"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/pki"
)

// Odette IDs of the partners in a Files' configuration.
const (
	// PartnerID is an enabled partner whose certificate carries the ID in its subject
	// serialNumber, with the SSID password PartnerPassword.
	PartnerID = "O0013000000000PARTNER"
	// PartnerPassword is PartnerID's SSID password.
	PartnerPassword = "SECRET"
	// OtherPartnerID is an enabled partner without a password, bound by certificate fingerprint.
	OtherPartnerID = "O0013000000000OTHER"
	// DisabledPartnerID is a configured but disabled partner.
	DisabledPartnerID = "O0013000000000DISABLED"
	// CompanyID is the company's own Odette ID (the internal responder's).
	CompanyID = "O0013000000000COMPANY"
)

// Files is a directory with everything a client configuration file names: a partner CA with a
// CRL, the company certificate and key, partner certificates, and a CA and server certificate
// for a TLS internal OFTP2 server. Its fields are immutable after NewFiles.
type Files struct {
	// Dir is the directory holding the files.
	Dir string
	// PartnerCA issues partner certificates and the CRL.
	PartnerCA *pki.CA
	// Company is the company's certificate, issued by its own CA.
	Company *pki.Leaf
	// CompanyCA issued Company.
	CompanyCA *pki.CA
	// Partner is PartnerID's certificate (subject serialNumber = PartnerID).
	Partner *pki.Leaf
	// Other is OtherPartnerID's certificate, bound by fingerprint.
	Other *pki.Leaf
	// Revoked is a partner certificate listed in the CRL.
	Revoked *pki.Leaf
	// CRL is the DER CRL of PartnerCA listing Revoked.
	CRL []byte
	// InternalCA issues InternalServer, the internal OFTP2 server's TLS certificate.
	InternalCA *pki.CA
	// InternalServer is a server certificate for 127.0.0.1 and "localhost".
	InternalServer *pki.Leaf
}

// File names written by NewFiles, relative to Files.Dir.
const (
	FilePartnerCA      = "partner-ca.pem"
	FilePartnerCADER   = "partner-ca.der"
	FileCRL            = "partner-ca.crl"
	FileCRLPEM         = "partner-ca-crl.pem"
	FileCompany        = "company.pem"
	FileCompanyKey     = "company-key.pem"
	FilePartner        = "partner.pem"
	FileOther          = "other.pem"
	FileInternalCA     = "internal-ca.pem"
	FileInternalServer = "internal-server.pem"
	FileInternalKey    = "internal-server-key.pem"
)

// NewFiles creates the certificates and writes them into dir.
func NewFiles(t testing.TB, dir string) *Files {
	t.Helper()
	f := &Files{Dir: dir}
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	f.PartnerCA, err = pki.NewCA("Test Partner CA")
	must(err)
	f.CompanyCA, err = pki.NewCA("Test Company CA")
	must(err)
	f.InternalCA, err = pki.NewCA("Test Internal CA")
	must(err)
	f.Company, err = f.CompanyCA.Issue(pki.Request{CommonName: "oftp.company.test", SerialNumber: CompanyID,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	must(err)
	f.Partner, err = f.PartnerCA.Issue(pki.Request{CommonName: "partner.test", SerialNumber: PartnerID, Usage: pki.UsageClient | pki.UsageServer})
	must(err)
	f.Other, err = f.PartnerCA.Issue(pki.Request{CommonName: "other.test", Usage: pki.UsageClient | pki.UsageServer})
	must(err)
	f.Revoked, err = f.PartnerCA.Issue(pki.Request{CommonName: "revoked.test", SerialNumber: PartnerID, Usage: pki.UsageClient})
	must(err)
	now := time.Now()
	f.CRL, err = f.PartnerCA.CRL([]pki.RevokedCert{{SerialNumber: new(big.Int).Set(f.Revoked.Cert.SerialNumber)}}, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	must(err)
	f.InternalServer, err = f.InternalCA.Issue(pki.Request{CommonName: "localhost", DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	must(err)

	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		must(pki.WriteFile(filepath.Join(dir, name), data, mode))
	}
	write(FilePartnerCA, f.PartnerCA.CertPEM, pki.CertFileMode)
	write(FilePartnerCADER, f.PartnerCA.Cert.Raw, pki.CertFileMode)
	write(FileCRL, f.CRL, pki.CertFileMode)
	write(FileCRLPEM, pki.EncodeCRLPEM(f.CRL), pki.CertFileMode)
	write(FileCompany, f.Company.CertPEM, pki.CertFileMode)
	write(FileCompanyKey, f.Company.KeyPEM, pki.KeyFileMode)
	write(FilePartner, f.Partner.CertPEM, pki.CertFileMode)
	write(FileOther, pki.EncodeCertPEM(f.Other.Cert), pki.CertFileMode)
	write(FileInternalCA, f.InternalCA.CertPEM, pki.CertFileMode)
	write(FileInternalServer, f.InternalServer.CertPEM, pki.CertFileMode)
	write(FileInternalKey, f.InternalServer.KeyPEM, pki.KeyFileMode)
	return f
}

// OtherFingerprint returns the SHA-256 fingerprint of Other's certificate.
func (f *Files) OtherFingerprint() []byte {
	sum := sha256.Sum256(f.Other.Cert.Raw)
	return sum[:]
}

// Config returns a valid configuration over the files, with relative paths, three partners
// (PartnerID, OtherPartnerID, DisabledPartnerID) and the internal OFTP2 server at internalAddr
// over plain TCP.
func (f *Files) Config(internalAddr string) configfile.File {
	no := false
	return configfile.File{
		PartnerListenAddress: "127.0.0.1:0",
		CompanyCertificate:   FileCompany,
		CompanyKey:           FileCompanyKey,
		TrustedCAFiles:       []string{FilePartnerCA},
		CRLs:                 []configfile.CRL{{File: FileCRL, URL: "http://crl.partner-ca.test/ca.crl"}},
		Partners: []configfile.Partner{
			{OdetteID: PartnerID, Name: "Partner AG", Password: PartnerPassword, Direction: "both"},
			{OdetteID: OtherPartnerID, Name: "Other GmbH", Charset: "lenient",
				CertificateBindings: []configfile.CertificateBinding{{CertificateFile: FileOther}}},
			{OdetteID: DisabledPartnerID, Name: "Gone Ltd", Enabled: &no},
		},
		Limits: configfile.Limits{MaxSessions: 100, PerIPRate: 5, PerIPBurst: 10,
			HandshakeTimeout: configfile.Duration(10 * time.Second), SSIDTimeout: configfile.Duration(30 * time.Second)},
		InternalServer: &configfile.InternalServer{Address: internalAddr, ConnectTimeout: configfile.Duration(5 * time.Second)},
		LogLevel:       "info",
	}
}

// WriteConfig writes c as JSON to path.
func WriteConfig(t testing.TB, path string, c configfile.File) {
	t.Helper()
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
