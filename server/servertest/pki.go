package servertest

import (
	"crypto/x509"
	"net"
	"testing"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
)

// PKI is the set of certificates a test of the DMZ server needs: the tunnel CA with a server
// and a client certificate, the company CA with the company certificate partners see, and a
// partner CA that issues partner certificates. Every field is immutable after NewPKI.
type PKI struct {
	// TunnelCA issues the tunnel certificates; both daemons trust only it on the tunnel.
	TunnelCA *pki.CA
	// TunnelServer is smartproxy-server's tunnel certificate (localhost, 127.0.0.1, ::1).
	TunnelServer *pki.Leaf
	// TunnelClient is smartproxy-client's tunnel certificate, common name "smartproxy-client".
	TunnelClient *pki.Leaf
	// CompanyCA issues the company certificate.
	CompanyCA *pki.CA
	// Company is the certificate the server shows to partners (localhost, 127.0.0.1).
	Company *pki.Leaf
	// PartnerCA issues partner certificates and is trusted by SecurityConfig.
	PartnerCA *pki.CA
}

// NewPKI creates a fresh PKI. It fails tb on error.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	must := func(err error) {
		if err != nil {
			tb.Fatalf("servertest.NewPKI: %v", err)
		}
	}
	p := &PKI{}
	var err error
	p.TunnelCA, err = pki.NewCA("servertest tunnel CA")
	must(err)
	p.TunnelServer, err = p.TunnelCA.Issue(pki.Request{
		CommonName:  "smartproxy-server",
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Usage:       pki.UsageServer,
	})
	must(err)
	p.TunnelClient, err = p.TunnelCA.Issue(pki.Request{
		CommonName: "smartproxy-client",
		DNSNames:   []string{"smartproxy-client"},
		Usage:      pki.UsageClient,
	})
	must(err)
	p.CompanyCA, err = pki.NewCA("servertest company CA")
	must(err)
	p.Company, err = p.CompanyCA.Issue(pki.Request{
		CommonName:   "oftp.company.example",
		SerialNumber: "O0013COMPANY",
		DNSNames:     []string{"localhost", "oftp.company.example"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
	must(err)
	p.PartnerCA, err = pki.NewCA("servertest partner CA")
	must(err)
	return p
}

// Partner issues a partner certificate whose subject serialNumber is odetteID (the Odette
// certificate policy). mod, if not nil, may change the request before issuing (validity,
// distribution points, another serialNumber). It fails tb on error.
func (p *PKI) Partner(tb testing.TB, odetteID string, mod func(*pki.Request)) *pki.Leaf {
	tb.Helper()
	return IssuePartner(tb, p.PartnerCA, odetteID, mod)
}

// IssuePartner issues a partner certificate from ca; see PKI.Partner.
func IssuePartner(tb testing.TB, ca *pki.CA, odetteID string, mod func(*pki.Request)) *pki.Leaf {
	tb.Helper()
	req := pki.Request{
		CommonName:   "partner " + odetteID,
		SerialNumber: odetteID,
		Organization: []string{"Partner " + odetteID},
		Usage:        pki.UsageClient | pki.UsageServer,
	}
	if mod != nil {
		mod(&req)
	}
	leaf, err := ca.Issue(req)
	if err != nil {
		tb.Fatalf("servertest: issue partner certificate %q: %v", odetteID, err)
	}
	return leaf
}

// Identity returns leaf as a tunnel TlsIdentity (chain DER, PKCS #8 key). It fails tb on error.
func Identity(tb testing.TB, leaf *pki.Leaf) *tunnelv1.TlsIdentity {
	tb.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	if err != nil {
		tb.Fatalf("servertest: marshal key: %v", err)
	}
	return &tunnelv1.TlsIdentity{CertificateChain: leaf.TLS.Certificate, PrivateKey: key}
}

// SecurityConfig returns a valid configuration: partner listener on 127.0.0.1 with a free port,
// the company identity, the partner CA trusted, and the given partners. Tests change fields of
// the result as they need.
func (p *PKI) SecurityConfig(tb testing.TB, partners ...*tunnelv1.Partner) *tunnelv1.SecurityConfig {
	tb.Helper()
	return &tunnelv1.SecurityConfig{
		PartnerListenAddress:  "127.0.0.1:0",
		CompanyIdentity:       Identity(tb, p.Company),
		TrustedCaCertificates: [][]byte{p.PartnerCA.Cert.Raw},
		Partners:              partners,
	}
}

// EnabledPartner returns an enabled partner entry for odetteID with the default certificate
// binding (subject serialNumber equals the Odette ID).
func EnabledPartner(odetteID string) *tunnelv1.Partner {
	return &tunnelv1.Partner{OdetteId: odetteID, Enabled: true, Name: "partner " + odetteID}
}
