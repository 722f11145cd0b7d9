package configspec_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"smartproxy/client/clienttest"
	"smartproxy/client/configspec"
	"smartproxy/internal/pki"
)

// spec returns a valid Spec with the content as the backend sends it: PEM text, no files.
func spec(f *clienttest.Files) *configspec.Spec {
	pem := func(field string, data []byte) configspec.Blob { return configspec.Blob{Field: field, Data: data} }
	return &configspec.Spec{
		PartnerListenAddress: "127.0.0.1:6619",
		CompanyCertificate:   pem("company_identity.certificate_chain_pem", f.Company.CertPEM),
		CompanyKey:           pem("company_identity.private_key_pem", f.Company.KeyPEM),
		TrustedCAsField:      "trusted_ca_certificates_pem",
		TrustedCAs:           []configspec.Blob{pem("trusted_ca_certificates_pem[0]", f.PartnerCA.CertPEM)},
		CRLs:                 []configspec.CRL{{Blob: configspec.Blob{Field: "crls[0]", Name: "CRL partner-ca", Data: f.CRL}, URL: "http://crl.test/ca.crl", URLField: "crls[0].url"}},
		Partners: []configspec.Partner{{OdetteID: clienttest.PartnerID, Enabled: true, CertificateBindings: []configspec.CertificateBinding{
			{SHA256Fingerprint: strings.Repeat("ab", 32)}}}},
		InternalServer: &configspec.InternalServer{Address: "127.0.0.1:3305", TLS: &configspec.InternalTLS{
			CAs:         []configspec.Blob{pem("internal_server.tls.ca_pem", f.InternalCA.CertPEM)},
			Certificate: pem("internal_server.tls.certificate_pem", f.InternalServer.CertPEM),
			Key:         pem("internal_server.tls.private_key_pem", f.InternalServer.KeyPEM)}},
		OutgoingSourceIP: "192.0.2.10",
		Routes:           []configspec.Route{{Name: "to-partner", ListenAddress: "127.0.0.1:3306", PartnerAddress: "partner.example:6619", PartnerOdetteID: clienttest.PartnerID}},
		LogLevel:         "debug",
	}
}

func TestBuild(t *testing.T) {
	f := clienttest.NewFiles(t, t.TempDir())
	s := spec(f)
	res, err := configspec.Build(s, time.Now())
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	sec := res.Snapshot.Security
	if got := sec.GetOutgoingSourceIp(); got != "192.0.2.10" {
		t.Errorf("outgoing source IP = %q, want 192.0.2.10", got)
	}
	if r := sec.GetOutgoingRoutes(); len(r) != 1 || r[0].GetName() != "to-partner" || r[0].GetPartnerAddress() != "partner.example:6619" {
		t.Errorf("routes = %v, want the route", r)
	}
	crls := sec.GetCrls()
	if len(crls) != 1 || &crls[0].GetDer()[0] != &f.CRL[0] {
		t.Errorf("the snapshot's CRL does not share the spec's bytes (a large CRL would be copied)")
	}
	if in := res.Snapshot.Internal; in.TLS == nil || len(in.TLS.Certificates) != 1 || in.TLS.ServerName != "127.0.0.1" {
		t.Errorf("internal TLS = %+v, want the client certificate and the server name from the address", in.TLS)
	}
	again, err := configspec.Build(spec(f), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if again.Snapshot.Digest != res.Snapshot.Digest {
		t.Error("the same spec built twice has two digests")
	}
	other := spec(f)
	other.CRLs[0].Data = foreignFreshCRL(t, f)
	changed, err := configspec.Build(other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if changed.Snapshot.Digest == res.Snapshot.Digest {
		t.Error("a different CRL gives the same digest")
	}
}

// foreignFreshCRL returns another valid CRL of the fixture's partner CA.
func foreignFreshCRL(t *testing.T, f *clienttest.Files) []byte {
	t.Helper()
	crl, err := f.PartnerCA.CRL([]pki.RevokedCert{}, time.Now().Add(-2*time.Hour), time.Now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestProblemsNameTheSourceFields checks that problems carry the field names the source gave.
func TestProblemsNameTheSourceFields(t *testing.T) {
	f := clienttest.NewFiles(t, t.TempDir())
	other, err := pki.NewCA("Other CA")
	if err != nil {
		t.Fatal(err)
	}
	otherCRL, err := other.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(s *configspec.Spec)
		want   []string
	}{
		{"empty key", func(s *configspec.Spec) { s.CompanyKey.Data = nil }, []string{"company_identity.private_key_pem"}},
		{"key of another certificate", func(s *configspec.Spec) { s.CompanyKey.Data = f.InternalServer.KeyPEM }, []string{"company_identity.private_key_pem"}},
		{"blob error", func(s *configspec.Spec) { s.TrustedCAs[0].Err = errors.New("download failed") }, []string{"trusted_ca_certificates_pem[0]"}},
		{"no trusted CA", func(s *configspec.Spec) { s.TrustedCAs = nil }, []string{"trusted_ca_certificates_pem"}},
		{"CRL of a foreign CA", func(s *configspec.Spec) { s.CRLs[0].Data = otherCRL }, []string{"crls[0]"}},
		{"CRL not a CRL", func(s *configspec.Spec) { s.CRLs[0].Data = []byte("not der") }, []string{"crls[0]"}},
		{"relative CRL URL", func(s *configspec.Spec) { s.CRLs[0].URL = "/ca.crl" }, []string{"crls[0].url"}},
		{"internal key without certificate", func(s *configspec.Spec) { s.InternalServer.TLS.Certificate.Data = nil }, []string{"internal_server.tls.certificate_pem"}},
		{"internal certificate without key", func(s *configspec.Spec) { s.InternalServer.TLS.Key.Data = nil }, []string{"internal_server.tls.private_key_pem"}},
		{"source IP", func(s *configspec.Spec) { s.OutgoingSourceIP = "dmz-host" }, []string{"outgoing_source_ip"}},
		{"revocation policy", func(s *configspec.Spec) { s.Revocation = "strict" }, []string{"revocation"}},
		{"proxy protocol without sources", func(s *configspec.Spec) {
			s.ProxyProtocol = &configspec.ProxyProtocol{Field: "proxy_protocol.allowed_sources"}
		}, []string{"proxy_protocol.allowed_sources"}},
		{"proxy protocol sources", func(s *configspec.Spec) {
			s.ProxyProtocol = &configspec.ProxyProtocol{Field: "pp", AllowedSources: []string{"10.0.0.5", "lb.example", "10.0.0.1/29", "2001:db8::/64"}}
		}, []string{"pp[1]", "pp[2]"}},
		{"partner revocation policy", func(s *configspec.Spec) { s.Partners[0].Revocation = "maybe" }, []string{"partners[0].revocation"}},
		{"routes", func(s *configspec.Spec) {
			s.Routes = append(s.Routes, configspec.Route{Name: "to-partner", ListenAddress: "x", PartnerAddress: ":1", PartnerOdetteID: ""})
		}, []string{"routes[1].name", "routes[1].listen_address", "routes[1].partner_address", "routes[1].partner_odette_id"}},
		{"negative duration", func(s *configspec.Spec) { s.Limits.IdleTimeout = -time.Second }, []string{"limits.idle_timeout"}},
		{"ignore rule window", func(s *configspec.Spec) {
			at := time.Now()
			s.LogIgnoreRules = []configspec.LogIgnoreRule{{Substring: "x", ValidFrom: at, ValidUntil: at}}
		}, []string{"log_ignore_rules[0].valid_until"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spec(f)
			tt.change(s)
			_, err := configspec.Build(s, time.Now())
			var ce *configspec.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Build() = %v, want a *configspec.Error", err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.Field)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Build() problem fields mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}
