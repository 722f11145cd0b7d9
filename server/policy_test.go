package server

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"math"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/oftp2"
	"smartproxy/server/servertest"
)

func TestCompilePolicyValid(t *testing.T) {
	p := servertest.NewPKI(t)
	partnerLeaf := p.Partner(t, "O0013PARTNER", nil)
	fp := sha256.Sum256(partnerLeaf.Cert.Raw)
	crl, err := p.PartnerCA.CRL([]pki.RevokedCert{{SerialNumber: big.NewInt(42)}}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.SecurityConfig(t,
		servertest.EnabledPartner("O0013PARTNER"),
		&tunnelv1.Partner{
			OdetteId:        "o0013_lower",
			Enabled:         false,
			Password:        "secret",
			CharsetPolicy:   tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT,
			DirectionPolicy: tunnelv1.DirectionPolicy_DIRECTION_POLICY_INCOMING_ONLY,
			AllowedNetworks: []string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7"},
			MaxCredit:       10,
			MaxBufferSize:   4096,
			CertificateBindings: []*tunnelv1.CertificateBinding{
				{Sha256Fingerprint: fp[:]},
				{Subject: "cn=partner x, O=Partner X"},
			},
		},
	)
	cfg.Crls = []*tunnelv1.Crl{{Id: "partner-ca", Url: "http://crl.example/partner.crl", Der: crl, Sha256: sum(crl)}}
	cfg.Limits = &tunnelv1.Limits{MaxSessions: 7, SsidTimeout: durationpb.New(3 * time.Second), MaxCredit: 100, ConnectTimeout: durationpb.New(4 * time.Second)}
	cfg.OutgoingRoutes = []*tunnelv1.Route{
		{Name: "out-1", ListenAddress: "127.0.0.1:65433", PartnerAddress: "oftp.partner.example:6619", PartnerOdetteId: "O0013PARTNER"},
		{Name: "out-2", ListenAddress: "127.0.0.1:65434", PartnerAddress: "192.0.2.7:6619", PartnerOdetteId: "O0013PARTNER  ", ServerName: "edi.partner.example"},
	}
	cfg.LogLevel = tunnelv1.LogLevel_LOG_LEVEL_DEBUG
	cfg.LogIgnoreRules = []*tunnelv1.LogIgnoreRule{{Substring: "Scanner", Description: "known scanner"}}

	pol, err := CompilePolicy(3, cfg, time.Now())
	if err != nil {
		t.Fatalf("CompilePolicy(valid) = %v, want nil", err)
	}
	if pol.Version != 3 || pol.ListenAddress != "127.0.0.1:0" {
		t.Errorf("version, address = %d, %q; want 3, 127.0.0.1:0", pol.Version, pol.ListenAddress)
	}
	if pol.Certificate == nil || pol.Certificate.Leaf == nil || !pol.Certificate.Leaf.Equal(p.Company.Cert) {
		t.Errorf("company certificate not taken from the config")
	}
	wantLimits := Limits{
		MaxSessions: 7, MaxHandshakes: DefaultMaxHandshakes, PerIPRate: DefaultPerIPRate, PerIPBurst: DefaultPerIPBurst,
		HandshakeTimeout: DefaultHandshakeTimeout, SSIDTimeout: 3 * time.Second, IdleTimeout: DefaultIdleTimeout,
		MaxCredit: 100, MaxBufferSize: DefaultMaxBufferSize, ConnectTimeout: 4 * time.Second,
		MaxHandshakesPerSource: DefaultMaxHandshakesPerSource, MaxHandshakesPerPrefix: DefaultMaxHandshakesPerPrefix,
		PrefixLengthV4: DefaultPrefixLengthV4, PrefixLengthV6: DefaultPrefixLengthV6,
	}
	if diff := cmp.Diff(wantLimits, pol.Limits); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	a := pol.Partners["O0013PARTNER"]
	wantRoutes := map[string]*Route{
		"out-1": {Name: "out-1", ListenAddress: "127.0.0.1:65433", PartnerAddress: "oftp.partner.example:6619", Partner: a, ServerName: "oftp.partner.example"},
		"out-2": {Name: "out-2", ListenAddress: "127.0.0.1:65434", PartnerAddress: "192.0.2.7:6619", Partner: a, ServerName: "edi.partner.example"},
	}
	if diff := cmp.Diff(wantRoutes, pol.Routes, cmpopts.IgnoreFields(Route{}, "Partner")); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	for name, r := range pol.Routes {
		if r.Partner != a {
			t.Errorf("route %s reaches partner %p, want the partner entry %p", name, r.Partner, a)
		}
	}
	if a == nil || !a.Enabled || a.Direction != tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH || a.Charset != oftp2.CharsetStrict || a.MaxCredit != 100 || a.MaxBufferSize != DefaultMaxBufferSize {
		t.Errorf("partner O0013PARTNER = %+v", a)
	}
	b := pol.Partners["o0013_lower"]
	if b == nil {
		t.Fatalf("partner o0013_lower missing; partners %v", pol.Partners)
	}
	wantNets := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("198.51.100.7/32")}
	if diff := cmp.Diff(wantNets, b.Networks, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("networks (-want +got):\n%s", diff)
	}
	if b.Enabled || b.Charset != oftp2.CharsetLenient || b.MaxCredit != 10 || b.MaxBufferSize != 4096 || b.Password != "secret" {
		t.Errorf("partner o0013_lower = %+v", b)
	}
	if got, want := b.Bindings[1].Subject, "CN=partner x,O=Partner X"; got != want {
		t.Errorf("normalised subject = %q, want %q", got, want)
	}
	if len(pol.CRLs) != 1 || pol.CRLs[0].URL() != "http://crl.example/partner.crl" || !pol.CRLs[0].IsRevoked(big.NewInt(42)) {
		t.Errorf("CRLs = %v", pol.CRLs)
	}
	if st, err := pol.Revocation.Check(partnerLeaf.Cert, p.PartnerCA.Cert); err != nil || st.String() != "good" {
		t.Errorf("Check(partner) = %v, %v; want good", st, err)
	}
	if pol.LogLevel.String() != "debug" {
		t.Errorf("log level = %v, want debug", pol.LogLevel)
	}
	if _, ok := pol.matchIgnore("event=partner_unknown reason=SCANNER here", time.Now()); !ok {
		t.Errorf("matchIgnore did not match case-insensitively")
	}
	if s := b.Password.String(); strings.Contains(s, "secret") {
		t.Errorf("Secret.String() = %q reveals the password", s)
	}
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestCompilePolicyErrors(t *testing.T) {
	p := servertest.NewPKI(t)
	expired := p.CompanyCA
	expiredLeaf, err := expired.Issue(pki.Request{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	other := servertest.NewPKI(t)
	foreignCRL, err := other.PartnerCA.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	goodCRL, err := p.PartnerCA.CRL(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mod    func(*tunnelv1.SecurityConfig)
		fields []string
	}{
		{"listen address without port", func(c *tunnelv1.SecurityConfig) { c.PartnerListenAddress = "127.0.0.1" }, []string{"partner_listen_address"}},
		{"listen address host name", func(c *tunnelv1.SecurityConfig) { c.PartnerListenAddress = "dmz.example:6619" }, []string{"partner_listen_address"}},
		{"listen address bad port", func(c *tunnelv1.SecurityConfig) { c.PartnerListenAddress = ":66190" }, []string{"partner_listen_address"}},
		{"no identity", func(c *tunnelv1.SecurityConfig) { c.CompanyIdentity = nil }, []string{"company_identity"}},
		{"unknown revocation policy", func(c *tunnelv1.SecurityConfig) { c.RevocationPolicy = 7 }, []string{"revocation_policy"}},
		{"unknown partner revocation policy", func(c *tunnelv1.SecurityConfig) { c.Partners[0].RevocationPolicy = 7 }, []string{"partners[0].revocation_policy"}},
		{"empty chain", func(c *tunnelv1.SecurityConfig) { c.CompanyIdentity.CertificateChain = nil }, []string{"company_identity.certificate_chain"}},
		{"garbage certificate", func(c *tunnelv1.SecurityConfig) { c.CompanyIdentity.CertificateChain = [][]byte{{1, 2, 3}} }, []string{"company_identity.certificate_chain[0]"}},
		{"garbage key", func(c *tunnelv1.SecurityConfig) { c.CompanyIdentity.PrivateKey = []byte("nope") }, []string{"company_identity.private_key"}},
		{"key of another certificate", func(c *tunnelv1.SecurityConfig) {
			c.CompanyIdentity.PrivateKey = servertest.Identity(t, p.TunnelServer).PrivateKey
		}, []string{"company_identity.private_key"}},
		{"expired company certificate", func(c *tunnelv1.SecurityConfig) { c.CompanyIdentity = servertest.Identity(t, expiredLeaf) }, []string{"company_identity.certificate_chain[0]"}},
		{"no trusted CA", func(c *tunnelv1.SecurityConfig) { c.TrustedCaCertificates = nil }, []string{"trusted_ca_certificates"}},
		{"trusted CA not a CA", func(c *tunnelv1.SecurityConfig) {
			c.TrustedCaCertificates = append(c.TrustedCaCertificates, p.Company.Cert.Raw)
		}, []string{"trusted_ca_certificates[1]"}},
		{"trusted CA garbage", func(c *tunnelv1.SecurityConfig) { c.TrustedCaCertificates = [][]byte{{0x30, 0x00}} }, []string{"trusted_ca_certificates[0]"}},
		{"CRL of an untrusted CA", func(c *tunnelv1.SecurityConfig) { c.Crls = []*tunnelv1.Crl{{Id: "x", Der: foreignCRL}} }, []string{"crls[0].der"}},
		{"CRL not reassembled", func(c *tunnelv1.SecurityConfig) { c.Crls = []*tunnelv1.Crl{{Id: "x", Size: 100}} }, []string{"crls[0].der"}},
		{"CRL garbage", func(c *tunnelv1.SecurityConfig) {
			c.Crls = []*tunnelv1.Crl{{Id: "x", Der: []byte{0x30, 0x03, 1, 2, 3}}}
		}, []string{"crls[0].der"}},
		{"CRL hash mismatch", func(c *tunnelv1.SecurityConfig) {
			c.Crls = []*tunnelv1.Crl{{Id: "x", Der: goodCRL, Sha256: make([]byte, 32)}}
		}, []string{"crls[0].sha256"}},
		{"CRL ids", func(c *tunnelv1.SecurityConfig) {
			c.Crls = []*tunnelv1.Crl{{Der: goodCRL}, {Id: "a", Der: goodCRL}, {Id: "a", Der: goodCRL}}
		}, []string{"crls[0].id", "crls[2].id"}},
		{"partner without id", func(c *tunnelv1.SecurityConfig) { c.Partners = []*tunnelv1.Partner{{Enabled: true}} }, []string{"partners[0].odette_id"}},
		{"partner id too long", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: strings.Repeat("A", 26)}}
		}, []string{"partners[0].odette_id"}},
		{"partner id lower case under strict charset", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "o0013abc"}}
		}, []string{"partners[0].odette_id"}},
		{"partner id with control character under lenient charset", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O0013\tX", CharsetPolicy: tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT}}
		}, []string{"partners[0].odette_id"}},
		{"duplicate partner", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O1"}, {OdetteId: "O1  "}}
		}, []string{"partners[1].odette_id"}},
		{"password too long", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O1", Password: "123456789"}}
		}, []string{"partners[0].password"}},
		{"bad networks", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O1", AllowedNetworks: []string{"10.0.0.0/8", "10.1.2.3/8", "nonsense", "10.0.0.0/33"}}}
		}, []string{"partners[0].allowed_networks[1]", "partners[0].allowed_networks[2]", "partners[0].allowed_networks[3]"}},
		{"empty binding and short fingerprint", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O1", CertificateBindings: []*tunnelv1.CertificateBinding{{}, {Sha256Fingerprint: []byte{1, 2}}, {Subject: "no equals sign"}}}}
		}, []string{"partners[0].certificate_bindings[0]", "partners[0].certificate_bindings[1].sha256_fingerprint", "partners[0].certificate_bindings[2].subject"}},
		{"bad enums", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O1", DirectionPolicy: 9, CharsetPolicy: 9}}
		}, []string{"partners[0].charset_policy", "partners[0].direction_policy"}},
		{"partner caps", func(c *tunnelv1.SecurityConfig) {
			c.Partners = []*tunnelv1.Partner{{OdetteId: "O1", MaxCredit: 1000, MaxBufferSize: 127}}
		}, []string{"partners[0].max_credit", "partners[0].max_buffer_size"}},
		{"limits", func(c *tunnelv1.SecurityConfig) {
			c.Limits = &tunnelv1.Limits{
				PerIpRate: math.NaN(), HandshakeTimeout: durationpb.New(-time.Second),
				SsidTimeout: &durationpb.Duration{Seconds: 1, Nanos: -1}, MaxCredit: 1000, MaxBufferSize: 100000,
			}
		}, []string{"limits.per_ip_rate", "limits.handshake_timeout", "limits.ssid_timeout", "limits.max_credit", "limits.max_buffer_size"}},
		{"prefix lengths", func(c *tunnelv1.SecurityConfig) {
			c.Limits = &tunnelv1.Limits{PrefixLengthV4: 7, PrefixLengthV6: 129}
		}, []string{"limits.prefix_length_v4", "limits.prefix_length_v6"}},
		{"outgoing source ip", func(c *tunnelv1.SecurityConfig) { c.OutgoingSourceIp = "300.1.1.1" }, []string{"outgoing_source_ip"}},
		{"routes", func(c *tunnelv1.SecurityConfig) {
			c.OutgoingRoutes = []*tunnelv1.Route{{Name: "r", PartnerAddress: "x", PartnerOdetteId: "NOBODY"}, {Name: "r", PartnerAddress: "h:1", PartnerOdetteId: "O0013PARTNER"}}
		}, []string{"outgoing_routes[0].partner_address", "outgoing_routes[0].partner_odette_id", "outgoing_routes[1].name"}},
		{"log level", func(c *tunnelv1.SecurityConfig) { c.LogLevel = 42 }, []string{"log_level"}},
		{"proxy protocol without sources", func(c *tunnelv1.SecurityConfig) { c.ProxyProtocol = &tunnelv1.ProxyProtocol{} }, []string{"proxy_protocol.allowed_sources"}},
		{"proxy protocol sources", func(c *tunnelv1.SecurityConfig) {
			c.ProxyProtocol = &tunnelv1.ProxyProtocol{AllowedSources: []string{"10.0.0.5", "balancer.example", "10.0.0.1/24"}}
		}, []string{"proxy_protocol.allowed_sources[1]", "proxy_protocol.allowed_sources[2]"}},
		{"ignore rules", func(c *tunnelv1.SecurityConfig) {
			now := time.Now()
			c.LogIgnoreRules = []*tunnelv1.LogIgnoreRule{
				{Substring: "  "},
				{Substring: "x", ValidFrom: timestamppb.New(now), ValidUntil: timestamppb.New(now.Add(-time.Hour))},
			}
		}, []string{"log_ignore_rules[0].substring", "log_ignore_rules[1].valid_until"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := p.SecurityConfig(t, servertest.EnabledPartner("O0013PARTNER"))
			tt.mod(cfg)
			pol, err := CompilePolicy(1, cfg, time.Now())
			if pol != nil {
				t.Errorf("CompilePolicy returned a policy with the error %v", err)
			}
			var ces ConfigErrors
			if !errors.As(err, &ces) {
				t.Fatalf("CompilePolicy() = %v, want ConfigErrors", err)
			}
			var got []string
			for _, ce := range ces {
				got = append(got, ce.Field)
				if ce.Message == "" {
					t.Errorf("error for %s has no message", ce.Field)
				}
			}
			if diff := cmp.Diff(tt.fields, got); diff != "" {
				t.Errorf("error fields (-want +got):\n%s\nerrors: %v", diff, err)
			}
			if strings.Contains(err.Error(), string(cfg.GetCompanyIdentity().GetPrivateKey())) && len(cfg.GetCompanyIdentity().GetPrivateKey()) > 8 {
				t.Errorf("error reveals key material")
			}
		})
	}
}

func TestCompilePolicyVersionAndNil(t *testing.T) {
	p := servertest.NewPKI(t)
	if _, err := CompilePolicy(0, p.SecurityConfig(t), time.Now()); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("CompilePolicy(version 0) = %v, want a version error", err)
	}
	if _, err := CompilePolicy(1, nil, time.Now()); err == nil {
		t.Errorf("CompilePolicy(nil) = nil, want error")
	}
}

func TestCompilePolicyStaleCRLIsAWarning(t *testing.T) {
	p := servertest.NewPKI(t)
	stale, err := p.PartnerCA.CRL(nil, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.SecurityConfig(t)
	cfg.Crls = []*tunnelv1.Crl{{Id: "stale", Der: stale}}
	pol, err := CompilePolicy(1, proto.Clone(cfg).(*tunnelv1.SecurityConfig), time.Now())
	if err != nil {
		t.Fatalf("CompilePolicy(stale CRL) = %v, want nil", err)
	}
	if len(pol.Warnings) != 1 || !strings.Contains(pol.Warnings[0], "crls[0]") {
		t.Errorf("warnings = %q, want one about crls[0]", pol.Warnings)
	}
	if len(pol.CRLs) != 1 {
		t.Errorf("stale CRL not kept: %d CRLs", len(pol.CRLs))
	}
}

func TestCertMatches(t *testing.T) {
	p := servertest.NewPKI(t)
	leaf := p.Partner(t, "O0013PARTNER", nil)
	other := p.Partner(t, "O0013OTHER", nil)
	fp := sha256.Sum256(leaf.Cert.Raw)
	tests := []struct {
		name    string
		partner Partner
		cert    *x509.Certificate
		want    bool
	}{
		{"default serialNumber binding", Partner{OdetteID: "O0013PARTNER"}, leaf.Cert, true},
		{"default binding, other id", Partner{OdetteID: "O0013PARTNER"}, other.Cert, false},
		{"fingerprint", Partner{OdetteID: "X", Bindings: []Binding{{Fingerprint: fp[:]}}}, leaf.Cert, true},
		{"fingerprint of another cert", Partner{OdetteID: "X", Bindings: []Binding{{Fingerprint: fp[:]}}}, other.Cert, false},
		{"serial binding", Partner{OdetteID: "X", Bindings: []Binding{{SubjectSerialNumber: "O0013OTHER"}}}, other.Cert, true},
		{"subject binding", Partner{OdetteID: "X", Bindings: []Binding{{Subject: mustNormalize(t, leaf.Cert.Subject.String())}}}, leaf.Cert, true},
		{"all fields must match", Partner{OdetteID: "X", Bindings: []Binding{{Fingerprint: fp[:], SubjectSerialNumber: "O0013OTHER"}}}, leaf.Cert, false},
		{"second binding matches", Partner{OdetteID: "X", Bindings: []Binding{{SubjectSerialNumber: "NOPE"}, {SubjectSerialNumber: "O0013PARTNER"}}}, leaf.Cert, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.partner.certMatches(tt.cert); got != tt.want {
				t.Errorf("certMatches(%s) = %v, want %v", tt.cert.Subject, got, tt.want)
			}
		})
	}
}

func mustNormalize(t *testing.T, s string) string {
	t.Helper()
	n, err := normalizeDN(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNormalizeDN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"CN=Foo,O=Bar", "CN=Foo,O=Bar"},
		{"cn = Foo , o=Bar", "CN=Foo,O=Bar"},
		{"commonName=Foo,organizationName=Bar,2.5.4.5=O0013", "CN=Foo,O=Bar,SERIALNUMBER=O0013"},
		{`CN=A\,B,O=C`, `CN=A\,B,O=C`},
		{"CN=A+SERIALNUMBER=1,C=DE", "CN=A+SERIALNUMBER=1,C=DE"},
	}
	for _, tt := range tests {
		if got, err := normalizeDN(tt.in); err != nil || got != tt.want {
			t.Errorf("normalizeDN(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "  ", "CN", "CN=a,,O=b"} {
		if got, err := normalizeDN(bad); err == nil {
			t.Errorf("normalizeDN(%q) = %q, want error", bad, got)
		}
	}
}

func TestNetworkAllowed(t *testing.T) {
	p := Partner{Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}}
	for addr, want := range map[string]bool{
		"192.0.2.9": true, "::ffff:192.0.2.9": true, "192.0.3.1": false, "2001:db8::1": true, "2001:db9::1": false,
	} {
		if got := p.networkAllowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("networkAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
	if !(&Partner{}).networkAllowed(netip.MustParseAddr("203.0.113.1")) {
		t.Errorf("a partner without networks must allow any address")
	}
}
