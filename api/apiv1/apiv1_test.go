package apiv1

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func ptime(s string) *time.Time {
	t := mustTime(s)
	return &t
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// exampleConfig is a configuration document with every field set.
func exampleConfig() *ConfigDocument {
	return &ConfigDocument{
		Revision:             42,
		PartnerListenAddress: ":6619",
		CompanyIdentity: CompanyIdentity{
			CertificateChainPEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
			PrivateKeyPEM:       "-----BEGIN PRIVATE KEY-----\nCOMPANYKEYBYTES\n-----END PRIVATE KEY-----\n",
		},
		TrustedCACertificatesPEM: []string{"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"},
		CRLs: []CRLInfo{{
			ID: "partner-ca.1", URL: "http://crl.partner-ca.example/partner-ca.crl", ETag: `"3f2a9c"`, Size: 1234,
			SHA256:     "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			ThisUpdate: mustTime("2026-03-01T00:00:00Z"), NextUpdate: ptime("2026-03-08T00:00:00Z"),
		}, {
			ID: "other", URL: "https://pki.other.example/ca.crl", ETag: `"x1"`, Size: 99,
			SHA256:     "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
			ThisUpdate: mustTime("2026-02-01T12:00:00Z"),
		}},
		Partners: []Partner{{
			OdetteID: "O0013000000000PARTNER", Name: "Partner AG", Enabled: true, Password: "SECRET",
			CertificateBindings: []CertificateBinding{{
				SubjectSerialNumber: "O0013000000000PARTNER",
				SHA256Fingerprint:   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
				Subject:             "CN=edi.partner.example,O=Partner AG,C=DE",
			}},
			AllowedNetworks: []string{"192.0.2.0/24", "2001:db8::/32"},
			Direction:       DirectionBoth, Charset: CharsetLenient, MaxCredit: 64, MaxBufferSize: 16384, Revocation: RevocationSoft,
		}, {
			OdetteID: "O0013000000000DISABLED", Name: "Former partner", Direction: DirectionIncoming,
			Charset: CharsetStrict,
		}},
		Limits: Limits{
			MaxSessions: 500, MaxHandshakes: 100, PerIPRate: 2.5, PerIPBurst: 10,
			HandshakeTimeout: Duration(10 * time.Second), SSIDTimeout: Duration(30 * time.Second),
			IdleTimeout: Duration(15 * time.Minute), MaxCredit: 999, MaxBufferSize: 99999,
		},
		InternalServer: &InternalServer{
			Address: "10.0.0.5:3305", ConnectTimeout: Duration(5 * time.Second), SSRMTimeout: Duration(20 * time.Second),
			TLS: &InternalTLS{
				CAPEM:          "-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n",
				CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----\n",
				PrivateKeyPEM:  "-----BEGIN EC PRIVATE KEY-----\nINTERNALKEYBYTES\n-----END EC PRIVATE KEY-----\n",
				ServerName:     "oftp.internal.example",
			},
		},
		OutgoingSourceIP: "203.0.113.10",
		Routes: []Route{{
			Name: "to-partner", ListenAddress: "10.0.0.2:7001", PartnerAddress: "edi.partner.example:6619",
			PartnerOdetteID: "O0013000000000PARTNER", ServerName: "edi.partner.example",
		}},
		LogLevel:   "info",
		Revocation: RevocationHard,
		LogIgnoreRules: []LogIgnoreRule{{
			ID: 7, Substring: "remote_addr=198.51.100.7", Description: "monitoring probe of the network team",
			ValidFrom: ptime("2026-01-01T00:00:00Z"), ValidUntil: ptime("2027-12-31T23:59:59Z"),
		}, {
			ID: 8, Substring: "partner_unknown", Description: "scanner",
		}},
	}
}

func exampleEvents() *EventsRequest {
	return &EventsRequest{Events: []Event{{
		ID: "5f0c6e1e2b7d4c3a9e8f7a6b5c4d3e2f", Time: mustTime("2026-03-01T10:15:30.123456789Z"),
		Severity: SeverityWarning, Name: "partner_unknown", SessionID: 123, OdetteID: "O0013000000000NOBODY",
		RemoteAddr: "198.51.100.7:40001", Message: "SSID from an unknown partner refused",
		Fields: map[string]string{"esid": "04", "tls_subject": "CN=x"}, Source: SourceServer,
	}, {
		ID: "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5", Time: mustTime("2026-03-01T10:15:31Z"),
		Severity: SeverityInfo, Name: "tunnel_up", Source: SourceClient,
	}}}
}

// goldenCases are the documents with a golden JSON file each.
func goldenCases() []struct {
	file string
	v    any
	zero func() any
} {
	return []struct {
		file string
		v    any
		zero func() any
	}{
		{"config.json", exampleConfig(), func() any { return new(ConfigDocument) }},
		{"config-minimal.json", &ConfigDocument{Revision: 1}, func() any { return new(ConfigDocument) }},
		{"events-request.json", exampleEvents(), func() any { return new(EventsRequest) }},
		{"events-response.json", &EventsResponse{Accepted: 1, Duplicates: 1}, func() any { return new(EventsResponse) }},
		{"crl-urls-request.json", &CRLURLsRequest{URLs: []string{"http://crl.partner-ca.example/partner-ca.crl", "https://pki.other.example/ca.crl"}}, func() any { return new(CRLURLsRequest) }},
		{"license-status.json", &LicenseStatus{ProxyID: "PX-3F2A-9C11", Valid: true, ExpiresAt: ptime("2027-01-01T00:00:00Z")}, func() any { return new(LicenseStatus) }},
		{"license-status-tunnel.json", &LicenseStatus{ProxyID: "PX-3F2A-9C11", Valid: true, ExpiresAt: ptime("2027-01-01T00:00:00Z"),
			Tunnel: &TunnelState{Streams: 2, OpenSessions: 17, ConnectedAt: ptime("2026-12-01T08:00:00Z")}}, func() any { return new(LicenseStatus) }},
		{"license-status-invalid.json", &LicenseStatus{ProxyID: "PX-3F2A-9C11", Reason: "no license installed"}, func() any { return new(LicenseStatus) }},
		{"config-status.json", &ConfigStatus{Revision: 42, ETag: `"r42"`, Applied: false, Errors: []ConfigError{{Field: "partners[0].allowed_networks[1]", Message: "not a CIDR network"}}}, func() any { return new(ConfigStatus) }},
		{"error.json", NewErrorBody(CodeInvalidField, "severity \"loud\" is not debug, info, warning, error or critical", "events[0].severity"), func() any { return new(ErrorBody) }},
		{"health.json", &HealthResponse{Status: HealthOK}, func() any { return new(HealthResponse) }},
	}
}

// TestGolden checks that every document encodes to its golden file and that the golden file
// decodes, with unknown fields refused, to the same value.
func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.file, func(t *testing.T) {
			got, err := json.MarshalIndent(tc.v, "", "  ")
			if err != nil {
				t.Fatalf("json.MarshalIndent = %v", err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("encoding differs from %s (-golden +got):\n%s", path, diff)
			}
			dec := json.NewDecoder(bytes.NewReader(want))
			dec.DisallowUnknownFields()
			back := tc.zero()
			if err := dec.Decode(back); err != nil {
				t.Fatalf("decoding %s = %v", path, err)
			}
			if diff := cmp.Diff(tc.v, back); diff != "" {
				t.Errorf("%s decodes differently (-want +got):\n%s", path, diff)
			}
		})
	}
}

// TestRoundTrip encodes and decodes documents and compares them field by field.
func TestRoundTrip(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.file, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			back := tc.zero()
			if err := json.Unmarshal(b, back); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", b, err)
			}
			if diff := cmp.Diff(tc.v, back); diff != "" {
				t.Errorf("round trip differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSecretRedacted checks that printing a document never shows passwords or private keys,
// while JSON carries them.
func TestSecretRedacted(t *testing.T) {
	doc := exampleConfig()
	secrets := []string{"SECRET", "COMPANYKEYBYTES", "INTERNALKEYBYTES"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{doc, *doc, doc.Partners[0], doc.CompanyIdentity, doc.InternalServer.TLS, doc.Partners[0].Password} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("fmt.Sprintf(%q, %T) contains the secret %q: %s", verb, v, s, out)
				}
			}
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"password":"SECRET"`, `COMPANYKEYBYTES`, `INTERNALKEYBYTES`} {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("json.Marshal(doc) lacks %s", s)
		}
	}
	if got := Secret("").String(); got != "" {
		t.Errorf(`Secret("").String() = %q, want ""`, got)
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    Duration
		wantErr string
	}{
		{`"30s"`, Duration(30 * time.Second), ""},
		{`"1m30s"`, Duration(90 * time.Second), ""},
		{`""`, 0, ""},
		{`"-1s"`, 0, "negative"},
		{`"30"`, 0, "not a duration"},
		{`30`, 0, "cannot unmarshal number"},
	}
	for _, tc := range tests {
		var got Duration
		err := json.Unmarshal([]byte(tc.in), &got)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Unmarshal(%s) error = %v, want containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Unmarshal(%s) = %v, %v, want %v, nil", tc.in, got, err, tc.want)
		}
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		body    string
		want    *ErrorBody
		wantErr string
	}{
		{`{"error":{"code":"not_found","message":"no license stored"}}`, NewErrorBody(CodeNotFound, "no license stored", ""), ""},
		{`{"error":{"code":"invalid_field","message":"bad","field":"urls[0]"}}`, NewErrorBody(CodeInvalidField, "bad", "urls[0]"), ""},
		{`{"error":{"message":"no code"}}`, nil, "no error.code"},
		{`<html>Bad Gateway</html>`, nil, "not JSON"},
		{``, nil, "not JSON"},
	}
	for _, tc := range tests {
		got, err := ParseError([]byte(tc.body))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseError(%q) error = %v, want containing %q", tc.body, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseError(%q) = %v", tc.body, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseError(%q) differs (-want +got):\n%s", tc.body, diff)
		}
	}
}

func TestCRLPath(t *testing.T) {
	tests := []struct{ id, want string }{
		{"partner-ca.1", "/v1/crls/partner-ca.1"},
		{"a/b", "/v1/crls/a%2Fb"},
	}
	for _, tc := range tests {
		if got := CRLPath(tc.id); got != tc.want {
			t.Errorf("CRLPath(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

func TestActiveAt(t *testing.T) {
	r := LogIgnoreRule{Substring: "x", ValidFrom: ptime("2026-01-01T00:00:00Z"), ValidUntil: ptime("2026-02-01T00:00:00Z")}
	tests := []struct {
		at   string
		want bool
	}{
		{"2025-12-31T23:59:59Z", false},
		{"2026-01-01T00:00:00Z", true},
		{"2026-01-31T23:59:59Z", true},
		{"2026-02-01T00:00:00Z", false},
	}
	for _, tc := range tests {
		if got := r.ActiveAt(mustTime(tc.at)); got != tc.want {
			t.Errorf("ActiveAt(%s) = %v, want %v", tc.at, got, tc.want)
		}
	}
	open := LogIgnoreRule{Substring: "x"}
	if !open.ActiveAt(mustTime("1990-01-01T00:00:00Z")) {
		t.Error("ActiveAt of a rule without window = false, want true")
	}
}
