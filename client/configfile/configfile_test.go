package configfile_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"smartproxy/client"
	"smartproxy/client/clienttest"
	"smartproxy/client/configfile"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// setup writes the fixture files into a new directory and returns it with a valid config.
func setup(t *testing.T) (*clienttest.Files, configfile.File) {
	t.Helper()
	files := clienttest.NewFiles(t, t.TempDir())
	return files, files.Config("127.0.0.1:3305")
}

func load(t *testing.T, dir string, c configfile.File) (*configfile.Result, error) {
	t.Helper()
	path := filepath.Join(dir, "client.json")
	clienttest.WriteConfig(t, path, c)
	l, err := configfile.NewLoader(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l.Load()
}

func TestLoadValid(t *testing.T) {
	files, c := setup(t)
	res, err := load(t, files.Dir, c)
	if err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("Load() warnings = %q, want none", res.Warnings)
	}
	s := res.Snapshot
	if !res.Changed || s.Version == 0 {
		t.Errorf("Load() = changed %v version %d, want a new non-zero version", res.Changed, s.Version)
	}
	sec := s.Security
	if got := sec.GetCompanyIdentity().GetCertificateChain(); len(got) != 1 || !bytes.Equal(got[0], files.Company.Cert.Raw) {
		t.Errorf("company chain = %d certificates, want the company leaf (its CA is a root)", len(got))
	}
	key, err := x509.ParsePKCS8PrivateKey(sec.GetCompanyIdentity().GetPrivateKey())
	if err != nil {
		t.Fatalf("company key is not PKCS #8: %v", err)
	}
	if !files.Company.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.(crypto.Signer).Public()) {
		t.Error("company key differs from the key file")
	}
	wantSec := &tunnelv1.SecurityConfig{
		PartnerListenAddress:  "127.0.0.1:0",
		TrustedCaCertificates: [][]byte{files.PartnerCA.Cert.Raw},
		Partners: []*tunnelv1.Partner{
			{OdetteId: clienttest.PartnerID, Name: "Partner AG", Enabled: true, Password: clienttest.PartnerPassword,
				DirectionPolicy: tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH, CharsetPolicy: tunnelv1.CharsetPolicy_CHARSET_POLICY_STRICT},
			{OdetteId: clienttest.OtherPartnerID, Name: "Other GmbH", Enabled: true,
				DirectionPolicy: tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH, CharsetPolicy: tunnelv1.CharsetPolicy_CHARSET_POLICY_LENIENT,
				CertificateBindings: []*tunnelv1.CertificateBinding{{Sha256Fingerprint: files.OtherFingerprint()}}},
			{OdetteId: clienttest.DisabledPartnerID, Name: "Gone Ltd", Enabled: false,
				DirectionPolicy: tunnelv1.DirectionPolicy_DIRECTION_POLICY_BOTH, CharsetPolicy: tunnelv1.CharsetPolicy_CHARSET_POLICY_STRICT},
		},
		LogLevel: tunnelv1.LogLevel_LOG_LEVEL_INFO,
	}
	if diff := cmp.Diff(wantSec, sec, protocmp.Transform(),
		protocmp.IgnoreFields(&tunnelv1.SecurityConfig{}, "company_identity", "crls", "limits")); diff != "" {
		t.Errorf("SecurityConfig mismatch (-want +got):\n%s", diff)
	}
	if got := sec.GetLimits(); got.GetMaxHandshakes() != 0 || got.GetMaxCredit() != 0 || got.GetMaxSessions() != 100 || got.GetPerIpRate() != 5 || got.GetPerIpBurst() != 10 ||
		got.GetHandshakeTimeout().AsDuration() != 10*time.Second || got.GetSsidTimeout().AsDuration() != 30*time.Second || got.GetIdleTimeout() != nil {
		t.Errorf("limits = %v, want max 100, rate 5, burst 10, handshake 10s, ssid 30s, idle unset", got)
	}
	if got := sec.GetCrls(); len(got) != 1 || !bytes.Equal(got[0].GetDer(), files.CRL) || got[0].GetUrl() != "http://crl.partner-ca.test/ca.crl" ||
		!strings.HasPrefix(got[0].GetId(), "crl-") || len(got[0].GetSha256()) != 32 {
		t.Errorf("crls = %v, want the fixture CRL with its URL, id and sha256", got)
	}
	if got, want := s.Internal, (client.InternalServer{Address: "127.0.0.1:3305", ConnectTimeout: 5 * time.Second}); got != want {
		t.Errorf("internal server = %+v, want %+v", got, want)
	}
}

func TestSecretsRedacted(t *testing.T) {
	files, c := setup(t)
	res, err := load(t, files.Dir, c)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Snapshot
	for _, text := range []string{s.String(), fmt.Sprint(s), fmt.Sprintf("%+v", s)} {
		if strings.Contains(text, clienttest.PartnerPassword) {
			t.Errorf("text %q shows the password", text)
		}
		if strings.Contains(text, fmt.Sprint(s.Security.GetCompanyIdentity().GetPrivateKey()[:8])) {
			t.Errorf("text %q shows key bytes", text)
		}
	}
}

func TestRelativeAndAbsolutePaths(t *testing.T) {
	files, c := setup(t)
	// The configuration lives in a subdirectory and names the files relative to it.
	sub := filepath.Join(files.Dir, "etc")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	c.CompanyCertificate = "../" + clienttest.FileCompany
	c.CompanyKey = filepath.Join(files.Dir, clienttest.FileCompanyKey) // absolute
	c.TrustedCAFiles = []string{"../" + clienttest.FilePartnerCADER}   // DER
	c.CRLs = []configfile.CRL{{File: "../" + clienttest.FileCRLPEM}}   // PEM
	c.Partners[1].CertificateBindings[0].CertificateFile = "../" + clienttest.FileOther
	// The working directory must not matter.
	t.Chdir(t.TempDir())
	res, err := load(t, sub, c)
	if err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	if got := res.Snapshot.Security.GetTrustedCaCertificates(); len(got) != 1 || !bytes.Equal(got[0], files.PartnerCA.Cert.Raw) {
		t.Errorf("trusted CAs from DER file = %d certificates, want the partner CA", len(got))
	}
	if got := res.Snapshot.Security.GetCrls(); len(got) != 1 || !bytes.Equal(got[0].GetDer(), files.CRL) {
		t.Errorf("CRL from PEM file differs from the fixture's DER")
	}
}

func TestInternalTLS(t *testing.T) {
	files, c := setup(t)
	c.InternalServer.TLS = &configfile.InternalTLS{CAFiles: []string{clienttest.FileInternalCA},
		Certificate: clienttest.FileInternalServer, Key: clienttest.FileInternalKey}
	res, err := load(t, files.Dir, c)
	if err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	cfg := res.Snapshot.Internal.TLS
	if cfg == nil || cfg.ServerName != "127.0.0.1" || cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
		t.Fatalf("internal TLS = %+v, want server name 127.0.0.1 (from the address), the CA pool and one client certificate", cfg)
	}
	if _, err := files.InternalServer.Cert.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: "localhost"}); err != nil {
		t.Errorf("internal server certificate does not verify against the configured pool: %v", err)
	}
}

// TestFieldErrors changes one thing in a valid configuration and expects the problem to be
// reported for exactly the named fields.
func TestFieldErrors(t *testing.T) {
	files, _ := setup(t)
	expired, err := files.PartnerCA.Issue(pkiRequestExpired())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, files.Dir, "expired.pem", expired.CertPEM)
	writeFile(t, files.Dir, "expired-key.pem", expired.KeyPEM)
	writeFile(t, files.Dir, "garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	writeFile(t, files.Dir, "foreign.crl", foreignCRL(t))
	writeFile(t, files.Dir, "chain.pem", append(append([]byte(nil), files.Other.CertPEM...), files.PartnerCA.CertPEM...))

	tests := []struct {
		name   string
		change func(c *configfile.File)
		fields []string
		msg    string // a part of the message
	}{
		{"listen address without port", func(c *configfile.File) { c.PartnerListenAddress = "0.0.0.0" }, []string{"partner_listen_address"}, "not host:port"},
		{"listen port out of range", func(c *configfile.File) { c.PartnerListenAddress = ":70000" }, []string{"partner_listen_address"}, "1 to 65535"},
		{"no company certificate", func(c *configfile.File) { c.CompanyCertificate = "" }, []string{"company_certificate"}, "required"},
		{"missing company certificate", func(c *configfile.File) { c.CompanyCertificate = "nope.pem" }, []string{"company_certificate"}, "no such file"},
		{"garbage certificate", func(c *configfile.File) { c.CompanyCertificate = "garbage.pem" }, []string{"company_certificate"}, "garbage.pem"},
		{"CA as company certificate", func(c *configfile.File) { c.CompanyCertificate = clienttest.FilePartnerCA }, []string{"company_certificate", "company_key"}, "CA certificate"},
		{"expired company certificate", func(c *configfile.File) { c.CompanyCertificate, c.CompanyKey = "expired.pem", "expired-key.pem" }, []string{"company_certificate"}, "expired"},
		{"key of another certificate", func(c *configfile.File) { c.CompanyKey = clienttest.FileInternalKey }, []string{"company_key"}, "does not belong"},
		{"key file is a certificate", func(c *configfile.File) { c.CompanyKey = clienttest.FileCompany }, []string{"company_key"}, ""},
		{"directory as file", func(c *configfile.File) { c.CompanyKey = "." }, []string{"company_key"}, "not a regular file"},
		{"no trusted CA", func(c *configfile.File) { c.TrustedCAFiles = nil }, []string{"trusted_ca_files"}, "at least one"},
		{"bad trusted CA", func(c *configfile.File) { c.TrustedCAFiles = append(c.TrustedCAFiles, "garbage.pem") }, []string{"trusted_ca_files[1]"}, ""},
		{"CRL missing", func(c *configfile.File) { c.CRLs[0].File = "" }, []string{"crls[0].file"}, "required"},
		{"CRL is a certificate", func(c *configfile.File) { c.CRLs[0].File = clienttest.FilePartnerCA }, []string{"crls[0].file"}, "X509 CRL"},
		{"CRL of a foreign CA", func(c *configfile.File) { c.CRLs[0].File = "foreign.crl" }, []string{"crls[0].file"}, "none of the trusted CAs"},
		{"CRL URL relative", func(c *configfile.File) { c.CRLs[0].URL = "/ca.crl" }, []string{"crls[0].url"}, "absolute URL"},
		{"CRL twice", func(c *configfile.File) { c.CRLs = append(c.CRLs, configfile.CRL{File: clienttest.FileCRLPEM}) }, []string{"crls[1].file"}, "same CRL as crls[0]"},
		{"Odette ID missing", func(c *configfile.File) { c.Partners[2].OdetteID = "" }, []string{"partners[2].odette_id"}, "required"},
		{"Odette ID lower case", func(c *configfile.File) { c.Partners[2].OdetteID = "acme" }, []string{"partners[2].odette_id"}, `"acme" is not a valid Odette ID (strict charset): character 'a'`},
		{"Odette ID too long", func(c *configfile.File) { c.Partners[0].OdetteID = strings.Repeat("A", 26) }, []string{"partners[0].odette_id"}, "26 octets exceeds X(25)"},
		{"Odette ID leading space", func(c *configfile.File) { c.Partners[0].OdetteID = " O0013" }, []string{"partners[0].odette_id"}, "not left-justified"},
		{"Odette ID trailing space", func(c *configfile.File) { c.Partners[0].OdetteID = "O0013 " }, []string{"partners[0].odette_id"}, "padding"},
		{"Odette ID lower case lenient", func(c *configfile.File) { c.Partners[0].OdetteID, c.Partners[0].Charset = "o0013_ä", "lenient" }, []string{"partners[0].odette_id"}, "not printable ASCII"},
		{"trusted CA not a CA", func(c *configfile.File) { c.TrustedCAFiles = append(c.TrustedCAFiles, clienttest.FileOther) }, []string{"trusted_ca_files[1]"}, "not a CA certificate"},
		{"listen host is a name", func(c *configfile.File) { c.PartnerListenAddress = "dmz.example.com:6619" }, []string{"partner_listen_address"}, "not an IP address"},
		{"Odette ID control character", func(c *configfile.File) { c.Partners[1].OdetteID = "ACME\t" }, []string{"partners[1].odette_id"}, "not printable"},
		{"Odette ID twice", func(c *configfile.File) { c.Partners[2].OdetteID = clienttest.PartnerID }, []string{"partners[2].odette_id"}, "partners[0]"},
		{"password too long", func(c *configfile.File) { c.Partners[0].Password = "TOOLONGPW" }, []string{"partners[0].password"}, "at most 8"},
		{"password lower case strict", func(c *configfile.File) { c.Partners[0].Password = "secret" }, []string{"partners[0].password"}, "strict charset"},
		{"password embedded space", func(c *configfile.File) { c.Partners[0].Password = "A B" }, []string{"partners[0].password"}, "embedded space"},
		{"direction", func(c *configfile.File) { c.Partners[0].Direction = "inbound" }, []string{"partners[0].direction"}, "both, incoming or outgoing"},
		{"charset", func(c *configfile.File) { c.Partners[0].Charset = "loose" }, []string{"partners[0].charset"}, "strict or lenient"},
		{"max credit", func(c *configfile.File) { c.Partners[0].MaxCredit = 1000 }, []string{"partners[0].max_credit"}, "1 to 999"},
		{"max buffer size small", func(c *configfile.File) { c.Partners[0].MaxBufferSize = 127 }, []string{"partners[0].max_buffer_size"}, "128 to 99999"},
		{"max buffer size big", func(c *configfile.File) { c.Partners[0].MaxBufferSize = 100000 }, []string{"partners[0].max_buffer_size"}, "128 to 99999"},
		{"network not CIDR", func(c *configfile.File) { c.Partners[0].AllowedNetworks = []string{"10.0.0.0/8", "example.com"} }, []string{"partners[0].allowed_networks[1]"}, "CIDR"},
		{"network is an address", func(c *configfile.File) { c.Partners[0].AllowedNetworks = []string{"192.0.2.7"} }, []string{"partners[0].allowed_networks[0]"}, "192.0.2.7/32"},
		{"network host bits", func(c *configfile.File) { c.Partners[0].AllowedNetworks = []string{"192.0.2.7/24"} }, []string{"partners[0].allowed_networks[0]"}, "192.0.2.0/24"},
		{"empty binding", func(c *configfile.File) { c.Partners[1].CertificateBindings[0] = configfile.CertificateBinding{} }, []string{"partners[1].certificate_bindings[0]"}, "empty binding"},
		{"fingerprint short", func(c *configfile.File) {
			c.Partners[1].CertificateBindings = []configfile.CertificateBinding{{SHA256Fingerprint: "AB:CD"}}
		}, []string{"partners[1].certificate_bindings[0].sha256_fingerprint"}, "64 hexadecimal"},
		{"fingerprint not hex", func(c *configfile.File) {
			c.Partners[1].CertificateBindings = []configfile.CertificateBinding{{SHA256Fingerprint: strings.Repeat("zz", 32)}}
		}, []string{"partners[1].certificate_bindings[0].sha256_fingerprint"}, "hexadecimal"},
		{"fingerprint and file", func(c *configfile.File) {
			c.Partners[1].CertificateBindings[0].SHA256Fingerprint = strings.Repeat("00", 32)
		}, []string{"partners[1].certificate_bindings[0]"}, "not both"},
		{"binding file missing", func(c *configfile.File) { c.Partners[1].CertificateBindings[0].CertificateFile = "nope.pem" }, []string{"partners[1].certificate_bindings[0].certificate_file"}, "no such file"},
		{"binding file with a chain", func(c *configfile.File) { c.Partners[1].CertificateBindings[0].CertificateFile = "chain.pem" }, []string{"partners[1].certificate_bindings[0].certificate_file"}, "2 certificates"},
		{"subject not a DN", func(c *configfile.File) {
			c.Partners[1].CertificateBindings = []configfile.CertificateBinding{{Subject: "partner.test"}}
		}, []string{"partners[1].certificate_bindings[0].subject"}, "RFC 4514"},
		{"limits max credit", func(c *configfile.File) { c.Limits.MaxCredit = 1000 }, []string{"limits.max_credit"}, "1 to 999"},
		{"limits max buffer size", func(c *configfile.File) { c.Limits.MaxBufferSize = 100 }, []string{"limits.max_buffer_size"}, "128 to 99999"},
		{"limits prefix length v4", func(c *configfile.File) { c.Limits.PrefixLengthV4 = 33 }, []string{"limits.prefix_length_v4"}, "8 to 32"},
		{"limits prefix length v6", func(c *configfile.File) { c.Limits.PrefixLengthV6 = 8 }, []string{"limits.prefix_length_v6"}, "16 to 128"},
		{"negative rate", func(c *configfile.File) { c.Limits.PerIPRate = -1 }, []string{"limits.per_ip_rate"}, "negative"},
		{"no internal server", func(c *configfile.File) { c.InternalServer = nil }, []string{"internal_server"}, "required"},
		{"internal address missing", func(c *configfile.File) { c.InternalServer.Address = "" }, []string{"internal_server.address"}, "required"},
		{"internal address without host", func(c *configfile.File) { c.InternalServer.Address = ":3305" }, []string{"internal_server.address"}, "no host"},
		{"internal TLS key without certificate", func(c *configfile.File) {
			c.InternalServer.TLS = &configfile.InternalTLS{Key: clienttest.FileInternalKey}
		}, []string{"internal_server.tls.certificate"}, "required with key"},
		{"internal TLS certificate without key", func(c *configfile.File) {
			c.InternalServer.TLS = &configfile.InternalTLS{Certificate: clienttest.FileInternalServer}
		}, []string{"internal_server.tls.key"}, "required with certificate"},
		{"internal TLS CA missing", func(c *configfile.File) {
			c.InternalServer.TLS = &configfile.InternalTLS{CAFiles: []string{"nope.pem"}}
		}, []string{"internal_server.tls.ca_files[0]"}, "no such file"},
		{"internal TLS key mismatch", func(c *configfile.File) {
			c.InternalServer.TLS = &configfile.InternalTLS{Certificate: clienttest.FileInternalServer, Key: clienttest.FileCompanyKey}
		}, []string{"internal_server.tls.certificate"}, "with its key"},
		{"log level", func(c *configfile.File) { c.LogLevel = "verbose" }, []string{"log_level"}, "trace, debug, info, warn or error"},
		{"ignore rule without substring", func(c *configfile.File) {
			c.LogIgnoreRules = []configfile.LogIgnoreRule{{Substring: "ok"}, {Substring: "  "}}
		}, []string{"log_ignore_rules[1].substring"}, "required"},
		{"ignore rule ends before it starts", func(c *configfile.File) {
			from := time.Now().Add(24 * time.Hour)
			c.LogIgnoreRules = []configfile.LogIgnoreRule{{Substring: "x", ValidFrom: configfile.Time{Time: from}, ValidUntil: configfile.Time{Time: from.Add(-time.Hour)}}}
		}, []string{"log_ignore_rules[0].valid_until"}, "not after valid_from"},
		{"outgoing source IP is a name", func(c *configfile.File) { c.OutgoingSourceIP = "dmz.example.com" }, []string{"outgoing_source_ip"}, "IP address"},
		{"limits connect timeout negative", func(c *configfile.File) { c.Limits.ConnectTimeout = configfile.Duration(-time.Second) }, []string{"limits.connect_timeout"}, "negative"},
		{"route without name", func(c *configfile.File) { c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433), {}} }, []string{"routes[1].name", "routes[1].listen_address", "routes[1].partner_address", "routes[1].partner_odette_id"}, "required"},
		{"route name twice", func(c *configfile.File) {
			c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433), routeTo(clienttest.OtherPartnerID, 65434)}
			c.Routes[1].Name = c.Routes[0].Name
		}, []string{"routes[1].name"}, "already the name of routes[0]"},
		{"route listen address twice", func(c *configfile.File) {
			c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433), routeTo(clienttest.OtherPartnerID, 65433)}
			c.Routes[1].Name = "other"
		}, []string{"routes[1].listen_address"}, "already the listen address of routes[0]"},
		{"route listen address without port", func(c *configfile.File) {
			c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433)}
			c.Routes[0].ListenAddress = "127.0.0.1"
		}, []string{"routes[0].listen_address"}, "host:port"},
		{"route partner address without port", func(c *configfile.File) {
			c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433)}
			c.Routes[0].PartnerAddress = "oftp.partner.example"
		}, []string{"routes[0].partner_address"}, "host:port"},
		{"route to an unknown partner", func(c *configfile.File) { c.Routes = []configfile.Route{routeTo("O0013NOBODY", 65433)} }, []string{"routes[0].partner_odette_id"}, "not one of the partners"},
		{"route preferring no Proxy ID", func(c *configfile.File) {
			c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433)}
			c.Routes[0].PreferredServer = "dmz1.example.com"
		}, []string{"routes[0].preferred_server"}, "not a Proxy ID"},
		{"several problems at once", func(c *configfile.File) {
			c.Partners[0].Direction = "x"
			c.Partners[2].MaxCredit = 5000
			c.LogLevel = "loud"
		}, []string{"partners[0].direction", "partners[2].max_credit", "log_level"}, "3 problems"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := files.Config("127.0.0.1:3305")
			tt.change(&c)
			path := filepath.Join(files.Dir, "client.json")
			clienttest.WriteConfig(t, path, c)
			l, err := configfile.NewLoader(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = l.Load()
			var ce *configfile.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load() = %v, want a *configfile.Error", err)
			}
			if diff := cmp.Diff(tt.fields, ce.Fields()); diff != "" {
				t.Errorf("Load() problem fields mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Load() = %q, want it to contain %q", err, tt.msg)
			}
			for _, f := range tt.fields {
				if strings.HasSuffix(f, ".password") && strings.Contains(err.Error(), c.Partners[0].Password) {
					t.Errorf("Load() = %q shows the password", err)
				}
			}
			if !strings.HasPrefix(err.Error(), "config file "+path+": ") {
				t.Errorf("Load() = %q, want it to name the file", err)
			}
			if l.Current() != nil {
				t.Errorf("Current() = %v after a failed first load, want nil", l.Current())
			}
		})
	}
}

// routeTo returns a valid route to the partner id, listening on 127.0.0.1:port.
func routeTo(id string, port int) configfile.Route {
	return configfile.Route{Name: fmt.Sprintf("out-%d", port), ListenAddress: fmt.Sprintf("127.0.0.1:%d", port),
		PartnerAddress: "oftp.partner.example:6619", PartnerOdetteID: id}
}

// TestRoutes checks that routes, outgoing_source_ip and limits.connect_timeout reach the
// configuration sent to the server.
func TestRoutes(t *testing.T) {
	files, c := setup(t)
	c.OutgoingSourceIP = "192.0.2.10"
	c.Limits.ConnectTimeout = configfile.Duration(20 * time.Second)
	c.Routes = []configfile.Route{routeTo(clienttest.PartnerID, 65433), routeTo(clienttest.OtherPartnerID, 65434)}
	c.Routes[1].ServerName = "edi.other.example"
	c.Routes[1].PreferredServer = "spx-abcd-efgh-jkmn-pqrs" // normalised to the canonical form
	res, err := load(t, files.Dir, c)
	if err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	sec := res.Snapshot.Security
	want := []*tunnelv1.Route{
		{Name: "out-65433", ListenAddress: "127.0.0.1:65433", PartnerAddress: "oftp.partner.example:6619", PartnerOdetteId: clienttest.PartnerID},
		{Name: "out-65434", ListenAddress: "127.0.0.1:65434", PartnerAddress: "oftp.partner.example:6619", PartnerOdetteId: clienttest.OtherPartnerID, ServerName: "edi.other.example",
			PreferredServer: "SPX-ABCD-EFGH-JKMN-PQRS"},
	}
	if diff := cmp.Diff(want, sec.GetOutgoingRoutes(), protocmp.Transform()); diff != "" {
		t.Errorf("outgoing routes (-want +got):\n%s", diff)
	}
	if got := sec.GetOutgoingSourceIp(); got != "192.0.2.10" {
		t.Errorf("outgoing source IP = %q, want 192.0.2.10 (checked by the server, not here)", got)
	}
	if got := sec.GetLimits().GetConnectTimeout().AsDuration(); got != 20*time.Second {
		t.Errorf("limits.connect_timeout = %v, want 20s", got)
	}
}

// TestProxyProtocol checks that proxy_protocol reaches the configuration sent to the server,
// that its absence leaves PROXY protocol off, and that an empty list is refused.
func TestProxyProtocol(t *testing.T) {
	files, c := setup(t)
	res, err := load(t, files.Dir, c)
	if err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	if pp := res.Snapshot.Security.GetProxyProtocol(); pp != nil {
		t.Errorf("proxy_protocol without the setting = %v, want unset (off)", pp)
	}
	c.ProxyProtocol = &configfile.ProxyProtocol{AllowedSources: []string{"10.0.0.5", "2001:db8:1::/64"}}
	if res, err = load(t, files.Dir, c); err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	want := &tunnelv1.ProxyProtocol{AllowedSources: []string{"10.0.0.5", "2001:db8:1::/64"}}
	if diff := cmp.Diff(want, res.Snapshot.Security.GetProxyProtocol(), protocmp.Transform()); diff != "" {
		t.Errorf("proxy_protocol (-want +got):\n%s", diff)
	}
	c.ProxyProtocol = &configfile.ProxyProtocol{}
	if _, err := load(t, files.Dir, c); err == nil || !strings.Contains(err.Error(), "proxy_protocol.allowed_sources") {
		t.Errorf("Load() with an empty allowed_sources = %v, want an error on proxy_protocol.allowed_sources", err)
	}
}

// TestSyntaxErrors feeds documents that are not a valid configuration as JSON.
func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		field string
		msg   string
	}{
		{"empty", "  \n", "", "empty"},
		{"not an object", `["a"]`, "", "one JSON object"},
		{"invalid JSON", "{\n  \"version\": 1,\n  \"log_level\": \"info\"\n  \"partners\": []\n}", "", "line 4"},
		{"unknown top-level field", `{"partner_listen": ":6619"}`, "partner_listen", "unknown field; known fields here: company_certificate"},
		{"unknown nested field", `{"partners": [{"odette_id": "A"}, {"odete_id": "B"}]}`, "partners[1].odete_id", "unknown field"},
		{"case-differing field", `{"internal_server": {"Address": "h:1"}}`, "internal_server.Address", `did you mean "address"`},
		{"duplicate field", `{"log_level": "info", "log_level": "debug"}`, "log_level", "given twice"},
		{"string for bool", `{"partners": [{"odette_id": "A", "enabled": "yes"}]}`, "partners[0].enabled", `want true or false, got the string "yes"`},
		{"number for string", `{"partners": [{"odette_id": 42}]}`, "partners[0].odette_id", "want a string, got the number 42"},
		{"negative number", `{"limits": {"max_sessions": -1}}`, "limits.max_sessions", "whole number from 0 to 4294967295"},
		{"fraction for integer", `{"version": 1.5}`, "version", "whole number"},
		{"object for list", `{"trusted_ca_files": {"a": "b"}}`, "trusted_ca_files", "want a list, got an object"},
		{"bad duration", `{"limits": {"idle_timeout": "10 minutes"}}`, "limits.idle_timeout", "not a duration"},
		{"duration as number", `{"limits": {"idle_timeout": 600}}`, "limits.idle_timeout", "duration string"},
		{"negative duration", `{"internal_server": {"connect_timeout": "-1s"}}`, "internal_server.connect_timeout", "negative"},
		{"bad time", `{"log_ignore_rules": [{"substring": "x", "valid_until": "tomorrow"}]}`, "log_ignore_rules[0].valid_until", "RFC 3339"},
		{"trailing data", `{} {}`, "", "after the end"},
		{"invalid UTF-8", "{\"log_level\": \"\xff\"}", "", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "client.json")
			writeFile(t, filepath.Dir(path), "client.json", []byte(tt.doc))
			l, err := configfile.NewLoader(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = l.Load()
			var ce *configfile.Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("Load() = %v, want a *configfile.Error with one problem", err)
			}
			if got := ce.Problems[0].Field; got != tt.field {
				t.Errorf("Load() field = %q, want %q (error %v)", got, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Load() = %q, want it to contain %q", err, tt.msg)
			}
		})
	}
}

func TestUnreadableFile(t *testing.T) {
	l, err := configfile.NewLoader(filepath.Join(t.TempDir(), "missing.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load() = %v, want an error matching os.ErrNotExist", err)
	}
}

func TestWarnings(t *testing.T) {
	files, c := setup(t)
	soon, err := files.CompanyCA.Issue(pkiRequestSoon())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, files.Dir, "soon.pem", soon.CertPEM)
	writeFile(t, files.Dir, "soon-key.pem", soon.KeyPEM)
	if err := os.Chmod(filepath.Join(files.Dir, "soon-key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.CompanyCertificate, c.CompanyKey = "soon.pem", "soon-key.pem"
	c.TrustedCAFiles = append(c.TrustedCAFiles, clienttest.FilePartnerCADER)
	c.Partners[0].Password = "secret" // allowed with the lenient charset
	c.Partners[0].Charset = "lenient"
	c.LogIgnoreRules = []configfile.LogIgnoreRule{{Substring: "old", ValidUntil: configfile.Time{Time: time.Now().Add(-time.Hour)}}}
	res, err := load(t, files.Dir, c)
	if err != nil {
		t.Fatalf("Load() = %v, want no error", err)
	}
	want := []string{"company_certificate: certificate", "company_key: ", "trusted_ca_files[1]: certificate", "log_ignore_rules[0].valid_until: the rule expired"}
	if len(res.Warnings) != len(want) {
		t.Fatalf("Load() warnings = %q, want %d", res.Warnings, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(res.Warnings[i], w) {
			t.Errorf("warning %d = %q, want prefix %q", i, res.Warnings[i], w)
		}
	}
	if got := len(res.Snapshot.Security.GetTrustedCaCertificates()); got != 1 {
		t.Errorf("trusted CAs = %d, want the duplicate used once", got)
	}
}

// TestReload plays a sequence of SIGHUP-style reloads against one Loader.
func TestReload(t *testing.T) {
	files, c := setup(t)
	path := filepath.Join(files.Dir, "client.json")
	clock := time.Now().Truncate(time.Millisecond)
	l, err := configfile.NewLoader(path, func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	step := func(name string, change func(*configfile.File), wantErrField string, wantChanged bool) *client.Snapshot {
		t.Helper()
		change(&c)
		clienttest.WriteConfig(t, path, c)
		before := l.Current()
		res, err := l.Load()
		if wantErrField != "" {
			var ce *configfile.Error
			if !errors.As(err, &ce) || ce.Fields()[0] != wantErrField {
				t.Fatalf("%s: Load() = %v, want an error for %s", name, err, wantErrField)
			}
			if l.Current() != before {
				t.Fatalf("%s: Current() changed after a failed reload", name)
			}
			return before
		}
		if err != nil {
			t.Fatalf("%s: Load() = %v, want no error", name, err)
		}
		if res.Changed != wantChanged {
			t.Errorf("%s: Load() changed = %v, want %v", name, res.Changed, wantChanged)
		}
		if l.Current() != res.Snapshot {
			t.Errorf("%s: Current() is not the loaded snapshot", name)
		}
		return res.Snapshot
	}
	first := step("first load", func(*configfile.File) {}, "", true)
	if want := uint64(clock.UnixMilli()); first.Version != want {
		t.Errorf("first derived version = %d, want %d (Unix milliseconds)", first.Version, want)
	}
	same := step("identical file", func(*configfile.File) {}, "", false)
	if same != first {
		t.Errorf("identical reload gave version %d, want the same snapshot %d", same.Version, first.Version)
	}
	// The clock goes backwards (NTP step): the version still grows.
	clock = clock.Add(-time.Hour)
	second := step("changed file", func(c *configfile.File) { c.Partners[0].Name = "Partner AG (new)" }, "", true)
	if second.Version != first.Version+1 {
		t.Errorf("version after change with clock stepped back = %d, want %d", second.Version, first.Version+1)
	}
	step("broken file", func(c *configfile.File) { c.Partners[0].OdetteID = "bad id!" }, "partners[0].odette_id", false)
	step("missing certificate", func(c *configfile.File) { c.Partners[0].OdetteID = clienttest.PartnerID; c.CompanyKey = "gone.pem" }, "company_key", false)
	c.CompanyKey = clienttest.FileCompanyKey
	// A changed referenced file is a change even when the JSON is the same.
	writeFile(t, files.Dir, clienttest.FileCRL, foreignCRLOf(t, files))
	clock = clock.Add(2 * time.Hour)
	third := step("changed CRL file", func(*configfile.File) {}, "", true)
	if third.Version != uint64(clock.UnixMilli()) || third.Digest == second.Digest {
		t.Errorf("version after CRL change = %d, want %d with a new digest", third.Version, clock.UnixMilli())
	}
	step("explicit version too low", func(c *configfile.File) { c.Version = 7; c.Partners[0].Name = "x" }, "version", false)
	explicit := step("explicit version", func(c *configfile.File) { c.Version = third.Version + 100 }, "", true)
	if explicit.Version != third.Version+100 {
		t.Errorf("explicit version = %d, want %d", explicit.Version, third.Version+100)
	}
	step("explicit version kept", func(*configfile.File) {}, "", false)
}

func writeFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestExampleFile loads examples/client.json with fixture files of the names it uses, so the
// example stays valid as the format evolves.
func TestExampleFile(t *testing.T) {
	files := clienttest.NewFiles(t, t.TempDir())
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "client.json"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, files.Dir, "client.json", data)
	l, err := configfile.NewLoader(filepath.Join(files.Dir, "client.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load()
	if err != nil {
		t.Fatalf("Load(examples/client.json) = %v, want no error", err)
	}
	if got := len(res.Snapshot.Security.GetPartners()); got != 3 {
		t.Errorf("example partners = %d, want 3", got)
	}
	if l := res.Snapshot.Security.GetLimits(); l.GetMaxHandshakes() != 100 || l.GetIdleTimeout().AsDuration() != 15*time.Minute ||
		l.GetMaxHandshakesPerSource() != 8 || l.GetMaxHandshakesPerPrefix() != 32 {
		t.Errorf("example limits = %v, want max_handshakes 100 (8 per source, 32 per prefix) and idle_timeout 15m", l)
	}
	if r := res.Snapshot.Security.GetOutgoingRoutes(); len(r) != 1 || r[0].GetListenAddress() != "127.0.0.1:65433" || r[0].GetPartnerOdetteId() != "O0013000000000PARTNER" {
		t.Errorf("example routes = %v, want one route listening on 127.0.0.1:65433 to O0013000000000PARTNER", r)
	}
	if p := res.Snapshot.Security.GetPartners()[1]; p.GetMaxCredit() != 64 || p.GetMaxBufferSize() != 16384 || len(p.GetAllowedNetworks()) != 2 {
		t.Errorf("example partner 1 = %v, want max_credit 64, max_buffer_size 16384 and two networks", p)
	}
}
