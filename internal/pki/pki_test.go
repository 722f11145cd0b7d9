package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatalf("NewCA(%q) = %v", name, err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, req Request) *Leaf {
	t.Helper()
	l, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("Issue(%+v) = %v", req, err)
	}
	return l
}

func TestNewCA(t *testing.T) {
	ca := mustCA(t, "Test CA")
	if !ca.Cert.IsCA {
		t.Errorf("IsCA = false, want true")
	}
	if got, want := ca.Cert.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign), x509.KeyUsageCertSign|x509.KeyUsageCRLSign; got != want {
		t.Errorf("KeyUsage = %v, want cert sign and CRL sign", got)
	}
	if _, ok := ca.Key.(*ecdsa.PrivateKey); !ok {
		t.Errorf("key type = %T, want *ecdsa.PrivateKey", ca.Key)
	}
	if err := ca.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("root not self-signed: %v", err)
	}
	if len(ca.Chain) != 0 {
		t.Errorf("len(Chain) = %d, want 0", len(ca.Chain))
	}
	if ca.Cert.NotAfter.Sub(ca.Cert.NotBefore) != DefaultCAValidity {
		t.Errorf("validity = %v, want %v", ca.Cert.NotAfter.Sub(ca.Cert.NotBefore), DefaultCAValidity)
	}
	if _, err := NewCA(""); err == nil {
		t.Errorf("NewCA(\"\") = nil error, want error")
	}
	_, err := NewCAWithOptions(CAOptions{CommonName: "x", NotBefore: time.Now(), NotAfter: time.Now().Add(-time.Hour)})
	if err == nil {
		t.Errorf("NewCAWithOptions(NotAfter before NotBefore) = nil error, want error")
	}
}

func TestIssueVerify(t *testing.T) {
	root := mustCA(t, "Root")
	foreign := mustCA(t, "Foreign")
	inter, err := root.IssueCA(CAOptions{CommonName: "Intermediate"})
	if err != nil {
		t.Fatalf("IssueCA = %v", err)
	}
	inter2, err := inter.IssueCA(CAOptions{CommonName: "Intermediate 2"})
	if err != nil {
		t.Fatalf("IssueCA(2) = %v", err)
	}
	now := time.Now()

	tests := []struct {
		name    string
		issuer  *CA
		req     Request
		roots   *CA
		usage   x509.ExtKeyUsage
		dnsName string
		wantErr func(error) bool
	}{
		{name: "server ok", issuer: root, req: Request{CommonName: "srv", DNSNames: []string{"localhost"}, Usage: UsageServer},
			roots: root, usage: x509.ExtKeyUsageServerAuth, dnsName: "localhost"},
		{name: "client ok", issuer: root, req: Request{CommonName: "cli", Usage: UsageClient},
			roots: root, usage: x509.ExtKeyUsageClientAuth},
		{name: "default usage is both (server)", issuer: root, req: Request{CommonName: "both"},
			roots: root, usage: x509.ExtKeyUsageServerAuth},
		{name: "default usage is both (client)", issuer: root, req: Request{CommonName: "both"},
			roots: root, usage: x509.ExtKeyUsageClientAuth},
		{name: "client cert as server", issuer: root, req: Request{CommonName: "cli", Usage: UsageClient},
			roots: root, usage: x509.ExtKeyUsageServerAuth, wantErr: isInvalid(x509.IncompatibleUsage)},
		{name: "wrong host", issuer: root, req: Request{CommonName: "srv", DNSNames: []string{"a.example"}, Usage: UsageServer},
			roots: root, usage: x509.ExtKeyUsageServerAuth, dnsName: "b.example", wantErr: isHostname},
		{name: "expired", issuer: root, req: Request{CommonName: "old", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)},
			roots: root, usage: x509.ExtKeyUsageClientAuth, wantErr: isInvalid(x509.Expired)},
		{name: "not yet valid", issuer: root, req: Request{CommonName: "new", NotBefore: now.Add(24 * time.Hour)},
			roots: root, usage: x509.ExtKeyUsageClientAuth, wantErr: isInvalid(x509.Expired)},
		{name: "foreign CA", issuer: foreign, req: Request{CommonName: "cli"},
			roots: root, usage: x509.ExtKeyUsageClientAuth, wantErr: isUnknownAuthority},
		{name: "intermediate chain", issuer: inter, req: Request{CommonName: "cli"},
			roots: root, usage: x509.ExtKeyUsageClientAuth},
		{name: "two intermediates", issuer: inter2, req: Request{CommonName: "cli"},
			roots: root, usage: x509.ExtKeyUsageClientAuth},
		{name: "intermediate pinned alone", issuer: inter2, req: Request{CommonName: "cli"},
			roots: inter2, usage: x509.ExtKeyUsageClientAuth},
		{name: "RSA leaf", issuer: root, req: Request{CommonName: "rsa", KeyAlgorithm: RSA2048},
			roots: root, usage: x509.ExtKeyUsageClientAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := mustIssue(t, tt.issuer, tt.req)
			inters := x509.NewCertPool()
			chain, err := ParseCertificatesPEM(leaf.CertPEM)
			if err != nil {
				t.Fatalf("ParseCertificatesPEM(CertPEM) = %v", err)
			}
			if got, want := len(chain), len(leaf.TLS.Certificate); got != want {
				t.Fatalf("PEM chain length = %d, TLS chain length %d", got, want)
			}
			for _, c := range chain[1:] {
				inters.AddCert(c)
			}
			_, err = leaf.Cert.Verify(x509.VerifyOptions{
				Roots:         tt.roots.Pool(),
				Intermediates: inters,
				KeyUsages:     []x509.ExtKeyUsage{tt.usage},
				DNSName:       tt.dnsName,
			})
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("Verify = %v, want nil", err)
			case tt.wantErr != nil && !tt.wantErr(err):
				t.Errorf("Verify = %v, want a %s error", err, tt.name)
			}
		})
	}
}

func isInvalid(reason x509.InvalidReason) func(error) bool {
	return func(err error) bool {
		var ie x509.CertificateInvalidError
		return errors.As(err, &ie) && ie.Reason == reason
	}
}

func isHostname(err error) bool {
	var he x509.HostnameError
	return errors.As(err, &he)
}

func isUnknownAuthority(err error) bool {
	var ue x509.UnknownAuthorityError
	return errors.As(err, &ue)
}

func TestIssueFields(t *testing.T) {
	ca := mustCA(t, "CA")
	u, _ := url.Parse("spiffe://smartproxy/client/1")
	req := Request{
		CommonName:            "Partner GmbH",
		SerialNumber:          "O0013000000000000001",
		Organization:          []string{"Partner GmbH"},
		OrganizationalUnit:    []string{"EDI"},
		Country:               []string{"DE"},
		DNSNames:              []string{"oftp.partner.example"},
		IPAddresses:           []net.IP{net.ParseIP("192.0.2.7")},
		URIs:                  []*url.URL{u},
		EmailAddresses:        []string{"edi@partner.example"},
		CRLDistributionPoints: []string{"http://crl.partner.example/ca.crl"},
		Usage:                 UsageClient,
	}
	leaf := mustIssue(t, ca, req)
	c := leaf.Cert
	if got, want := c.Subject.SerialNumber, req.SerialNumber; got != want {
		t.Errorf("Subject.SerialNumber = %q, want %q", got, want)
	}
	if got, want := c.Subject.CommonName, req.CommonName; got != want {
		t.Errorf("Subject.CommonName = %q, want %q", got, want)
	}
	if got, want := strings.Join(c.Subject.Organization, ","), "Partner GmbH"; got != want {
		t.Errorf("Subject.Organization = %q, want %q", got, want)
	}
	if got, want := strings.Join(c.CRLDistributionPoints, ","), req.CRLDistributionPoints[0]; got != want {
		t.Errorf("CRLDistributionPoints = %q, want %q", got, want)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != u.String() {
		t.Errorf("URIs = %v, want [%v]", c.URIs, u)
	}
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(req.IPAddresses[0]) {
		t.Errorf("IPAddresses = %v, want %v", c.IPAddresses, req.IPAddresses)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want [clientAuth]", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Errorf("leaf IsCA = true, want false")
	}
	if c.SerialNumber.Sign() <= 0 {
		t.Errorf("serial number %v is not positive", c.SerialNumber)
	}
	if got := leaf.TLS.Leaf; got != c {
		t.Errorf("TLS.Leaf = %p, want %p", got, c)
	}
	key, err := ParsePrivateKeyPEM(leaf.KeyPEM)
	if err != nil {
		t.Fatalf("ParsePrivateKeyPEM = %v", err)
	}
	if !publicKeysEqual(c.PublicKey, key.Public()) {
		t.Errorf("KeyPEM does not match the certificate")
	}
	if _, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM); err != nil {
		t.Errorf("tls.X509KeyPair(CertPEM, KeyPEM) = %v", err)
	}

	// Renewal with the same key.
	renewed := mustIssue(t, ca, Request{CommonName: "Partner GmbH", Key: leaf.Key})
	if !publicKeysEqual(renewed.Cert.PublicKey, leaf.Key.Public()) {
		t.Errorf("renewed certificate does not certify the given key")
	}
	if renewed.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Errorf("renewed certificate reuses serial number %v", c.SerialNumber)
	}

	rsaLeaf := mustIssue(t, ca, Request{CommonName: "rsa", KeyAlgorithm: RSA2048})
	if _, ok := rsaLeaf.Key.(*rsa.PrivateKey); !ok {
		t.Errorf("RSA2048 key type = %T, want *rsa.PrivateKey", rsaLeaf.Key)
	}
	if rsaLeaf.Cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Errorf("RSA leaf lacks keyEncipherment")
	}
}

func TestIssueErrors(t *testing.T) {
	ca := mustCA(t, "CA")
	now := time.Now()
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"no name", Request{}, "neither a common name"},
		{"bad usage", Request{CommonName: "x", Usage: 0x80}, "unknown usage"},
		{"inverted validity", Request{CommonName: "x", NotBefore: now, NotAfter: now.Add(-time.Second)}, "not after"},
		{"unknown algorithm", Request{CommonName: "x", KeyAlgorithm: 99}, "unknown key algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.Issue(tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Issue(%+v) = %v, want error containing %q", tt.req, err, tt.want)
			}
		})
	}
}

func TestCRL(t *testing.T) {
	ca := mustCA(t, "CA")
	revokedLeaf := mustIssue(t, ca, Request{CommonName: "revoked"})
	goodLeaf := mustIssue(t, ca, Request{CommonName: "good"})
	this := time.Now().Truncate(time.Second)
	next := this.Add(24 * time.Hour)

	der1, err := ca.CRL([]RevokedCert{{SerialNumber: revokedLeaf.Cert.SerialNumber, ReasonCode: 1}}, this, next)
	if err != nil {
		t.Fatalf("CRL = %v", err)
	}
	crl, err := x509.ParseRevocationList(der1)
	if err != nil {
		t.Fatalf("ParseRevocationList = %v", err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	if got, want := len(crl.RevokedCertificateEntries), 1; got != want {
		t.Fatalf("len(entries) = %d, want %d", got, want)
	}
	e := crl.RevokedCertificateEntries[0]
	if e.SerialNumber.Cmp(revokedLeaf.Cert.SerialNumber) != 0 {
		t.Errorf("entry serial = %v, want %v", e.SerialNumber, revokedLeaf.Cert.SerialNumber)
	}
	if e.SerialNumber.Cmp(goodLeaf.Cert.SerialNumber) == 0 {
		t.Errorf("good certificate is listed")
	}
	if got, want := e.ReasonCode, 1; got != want {
		t.Errorf("entry reason = %d, want %d", got, want)
	}
	if !e.RevocationTime.Equal(this) {
		t.Errorf("entry time = %v, want thisUpdate %v", e.RevocationTime, this)
	}
	if !crl.NextUpdate.Equal(next) {
		t.Errorf("NextUpdate = %v, want %v", crl.NextUpdate, next)
	}

	der2, err := ca.CRL(nil, this.Add(time.Hour), next.Add(time.Hour))
	if err != nil {
		t.Fatalf("second CRL = %v", err)
	}
	crl2, err := x509.ParseRevocationList(der2)
	if err != nil {
		t.Fatalf("ParseRevocationList(second) = %v", err)
	}
	if crl2.Number.Cmp(crl.Number) <= 0 {
		t.Errorf("CRL numbers %v then %v, want increasing", crl.Number, crl2.Number)
	}
	block, _ := pem.Decode(EncodeCRLPEM(der2))
	if block == nil || block.Type != "X509 CRL" || string(block.Bytes) != string(der2) {
		t.Errorf("EncodeCRLPEM does not round-trip")
	}

	if _, err := ca.CRL(nil, this, this); err == nil {
		t.Errorf("CRL(nextUpdate == thisUpdate) = nil error, want error")
	}
	if _, err := ca.CRL([]RevokedCert{{}}, this, next); err == nil {
		t.Errorf("CRL(entry without serial) = nil error, want error")
	}

	inter, err := ca.IssueCA(CAOptions{CommonName: "Inter"})
	if err != nil {
		t.Fatal(err)
	}
	derI, err := inter.CRL([]RevokedCert{{SerialNumber: big.NewInt(7)}}, this, next)
	if err != nil {
		t.Fatalf("intermediate CRL = %v", err)
	}
	crlI, err := x509.ParseRevocationList(derI)
	if err != nil {
		t.Fatal(err)
	}
	if err := crlI.CheckSignatureFrom(inter.Cert); err != nil {
		t.Errorf("intermediate CRL signature: %v", err)
	}
	if err := crlI.CheckSignatureFrom(ca.Cert); err == nil {
		t.Errorf("intermediate CRL verifies against the root key, want failure")
	}
}

func TestLoadCA(t *testing.T) {
	ca := mustCA(t, "CA")
	loaded, err := LoadCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatalf("LoadCA = %v", err)
	}
	leaf := mustIssue(t, loaded, Request{CommonName: "x"})
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("leaf of loaded CA does not verify: %v", err)
	}

	other := mustCA(t, "Other")
	if _, err := LoadCA(ca.CertPEM, other.KeyPEM); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("LoadCA(mismatched key) = %v, want mismatch error", err)
	}
	if _, err := LoadCA(leaf.CertPEM, leaf.KeyPEM); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("LoadCA(leaf) = %v, want not-a-CA error", err)
	}

	inter, err := ca.IssueCA(CAOptions{CommonName: "Inter"})
	if err != nil {
		t.Fatal(err)
	}
	inter2, err := inter.IssueCA(CAOptions{CommonName: "Inter2"})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM := append(append([]byte{}, inter2.CertPEM...), EncodeCertPEM(inter.Cert)...)
	l2, err := LoadCA(chainPEM, inter2.KeyPEM)
	if err != nil {
		t.Fatalf("LoadCA(chain) = %v", err)
	}
	if got, want := len(l2.Chain), 1; got != want {
		t.Errorf("len(Chain) = %d, want %d", got, want)
	}
}

func TestParsePEMErrors(t *testing.T) {
	ca := mustCA(t, "CA")
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty", "", "no PEM certificate"},
		{"garbage", "hello", "no PEM certificate"},
		{"key instead of cert", string(ca.KeyPEM), "want CERTIFICATE"},
		{"broken DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM block 0"},
		{"trailing junk", string(ca.CertPEM) + "junk", "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCertificatesPEM([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCertificatesPEM(%.20q) = %v, want error containing %q", tt.data, err, tt.want)
			}
		})
	}
	if _, err := ParsePrivateKeyPEM(ca.CertPEM); err == nil {
		t.Errorf("ParsePrivateKeyPEM(certificate) = nil error, want error")
	}
	if _, err := ParsePrivateKeyPEM(nil); err == nil {
		t.Errorf("ParsePrivateKeyPEM(nil) = nil error, want error")
	}
}

func TestParsePrivateKeyFormats(t *testing.T) {
	ec, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ec.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	rk, err := GenerateKey(RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := EncodeKeyPEM(rk)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pem  []byte
		want crypto.PublicKey
	}{
		{"SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), ec.Public()},
		{"PKCS 1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk.(*rsa.PrivateKey))}), rk.Public()},
		{"PKCS 8", pkcs8, rk.Public()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrivateKeyPEM(tt.pem)
			if err != nil {
				t.Fatalf("ParsePrivateKeyPEM = %v", err)
			}
			if !publicKeysEqual(got.Public(), tt.want) {
				t.Errorf("ParsePrivateKeyPEM returned a different key")
			}
		})
	}
}

// TestMutualTLS runs a real TLS 1.3 handshake on loopback with a server and a
// client certificate from one CA, and checks that a client certificate from
// another CA is refused.
func TestMutualTLS(t *testing.T) {
	ca := mustCA(t, "Tunnel CA")
	foreign := mustCA(t, "Foreign CA")
	srv := mustIssue(t, ca, Request{CommonName: "server", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: UsageServer})
	cli := mustIssue(t, ca, Request{CommonName: "client", Usage: UsageClient})
	bad := mustIssue(t, foreign, Request{CommonName: "intruder", Usage: UsageClient})

	tests := []struct {
		name    string
		cert    tls.Certificate
		wantErr bool
	}{
		{"same CA", cli.TLS, false},
		{"foreign CA", bad.TLS, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{srv.TLS},
				ClientCAs:    ca.Pool(),
				ClientAuth:   tls.RequireAndVerifyClientCert,
				MinVersion:   tls.VersionTLS13,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srvErr := make(chan error, 1)
			var peerCN string
			go func() {
				c, err := ln.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				err = tc.Handshake()
				if err == nil {
					peerCN = tc.ConnectionState().PeerCertificates[0].Subject.CommonName
					_, err = tc.Write([]byte("ok"))
				}
				srvErr <- err
			}()
			conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
				Certificates: []tls.Certificate{tt.cert},
				RootCAs:      ca.Pool(),
				ServerName:   "127.0.0.1",
				MinVersion:   tls.VersionTLS13,
			})
			if err == nil {
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 2)
				_, err = conn.Read(buf) // TLS 1.3: the client learns of rejection on read
				conn.Close()
			}
			sErr := <-srvErr
			if tt.wantErr {
				if err == nil || sErr == nil {
					t.Errorf("handshake errors client=%v server=%v, want both non-nil", err, sErr)
				}
				return
			}
			if err != nil || sErr != nil {
				t.Fatalf("handshake errors client=%v server=%v, want nil", err, sErr)
			}
			if got, want := peerCN, "client"; got != want {
				t.Errorf("peer CN = %q, want %q", got, want)
			}
		})
	}
}
