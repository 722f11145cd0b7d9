package apiv1

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// checkErr reports whether err matches wantField (the FieldError's Field) and wantMsg (a part of
// its message); an empty wantMsg means no error is wanted.
func checkErr(t *testing.T, call string, err error, wantField, wantMsg string) {
	t.Helper()
	if wantMsg == "" {
		if err != nil {
			t.Errorf("%s = %v, want nil", call, err)
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Errorf("%s = %v, want a *FieldError for %q", call, err, wantField)
		return
	}
	if fe.Field != wantField || !strings.Contains(fe.Message, wantMsg) {
		t.Errorf("%s = %q, want field %q and message containing %q", call, err, wantField, wantMsg)
	}
}

func TestValidateOdetteID(t *testing.T) {
	tests := []struct {
		id      string
		cs      Charset
		wantMsg string
	}{
		{"O0013000000000PARTNER", "", ""},
		{"O0013000000000PARTNER", CharsetStrict, ""},
		{"", "", "empty"},
		{strings.Repeat("A", 25), "", ""},
		{strings.Repeat("A", 26), "", "exceeds X(25)"},
		{"o0013lower", CharsetStrict, "outside the X(n) set"},
		{"o0013lower", CharsetLenient, ""},
		{"A';DROP TABLE x;--", CharsetStrict, "outside the X(n) set"},
		{"ID\x00X", CharsetLenient, "not printable"},
	}
	for _, tc := range tests {
		checkErr(t, "ValidateOdetteID("+tc.id+")", ValidateOdetteID(tc.id, tc.cs), "odette_id", tc.wantMsg)
	}
}

func TestValidatePartner(t *testing.T) {
	ok := func() Partner {
		return Partner{OdetteID: "O0013000000000PARTNER", Name: "Partner AG", Enabled: true, Password: "SECRET",
			CertificateBindings: []CertificateBinding{{SHA256Fingerprint: strings.Repeat("ab", 32)}},
			AllowedNetworks:     []string{"192.0.2.0/24"}, Direction: DirectionBoth, Charset: CharsetStrict,
			MaxCredit: 999, MaxBufferSize: 128}
	}
	tests := []struct {
		name      string
		mod       func(*Partner)
		wantField string
		wantMsg   string
	}{
		{"ok", func(*Partner) {}, "", ""},
		{"defaults", func(p *Partner) { p.Direction, p.Charset, p.MaxCredit, p.MaxBufferSize = "", "", 0, 0 }, "", ""},
		{"bad id", func(p *Partner) { p.OdetteID = "x y" }, "odette_id", "outside the X(n) set"},
		{"empty id", func(p *Partner) { p.OdetteID = "" }, "odette_id", "empty"},
		{"long password", func(p *Partner) { p.Password = "NINECHARS" }, "password", "not a valid SSID password"},
		{"lower password strict", func(p *Partner) { p.Password = "secret" }, "password", "not a valid SSID password"},
		{"lower password lenient", func(p *Partner) { p.Password, p.Charset = "secret", CharsetLenient }, "", ""},
		{"direction", func(p *Partner) { p.Direction = "sideways" }, "direction", "sideways"},
		{"charset", func(p *Partner) { p.Charset = "latin1" }, "charset", "latin1"},
		{"network", func(p *Partner) { p.AllowedNetworks = []string{"192.0.2.0/24", "192.0.2.1"} }, "allowed_networks[1]", "CIDR"},
		{"fingerprint", func(p *Partner) { p.CertificateBindings[0].SHA256Fingerprint = "abc" }, "certificate_bindings[0].sha256_fingerprint", "64 hexadecimal"},
		{"empty binding", func(p *Partner) { p.CertificateBindings = append(p.CertificateBindings, CertificateBinding{}) }, "certificate_bindings[1]", "names no attribute"},
		{"credit", func(p *Partner) { p.MaxCredit = 1000 }, "max_credit", "above 999"},
		{"buffer", func(p *Partner) { p.MaxBufferSize = 127 }, "max_buffer_size", "128–99999"},
		{"name control", func(p *Partner) { p.Name = "a\nb" }, "name", "control character"},
		{"name sql", func(p *Partner) { p.Name = "Robert'); DROP TABLE partners;--" }, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok()
			tc.mod(&p)
			err := ValidatePartner(&p)
			checkErr(t, "ValidatePartner", err, tc.wantField, tc.wantMsg)
			if err != nil && strings.Contains(err.Error(), string(p.Password)) && p.Password != "" {
				t.Errorf("ValidatePartner = %q repeats the password", err)
			}
		})
	}
}

func TestValidateIgnoreRule(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	var zero time.Time
	tests := []struct {
		name      string
		r         LogIgnoreRule
		wantField string
		wantMsg   string
	}{
		{"open", LogIgnoreRule{Substring: "probe"}, "", ""},
		{"window", LogIgnoreRule{Substring: "probe", ValidFrom: &t0, ValidUntil: &t1}, "", ""},
		{"only until", LogIgnoreRule{Substring: "probe", ValidUntil: &t1}, "", ""},
		{"until before from", LogIgnoreRule{Substring: "probe", ValidFrom: &t1, ValidUntil: &t0}, "valid_until", "not after valid_from"},
		{"until equals from", LogIgnoreRule{Substring: "probe", ValidFrom: &t0, ValidUntil: &t0}, "valid_until", "not after valid_from"},
		{"empty substring", LogIgnoreRule{Substring: "  "}, "substring", "empty"},
		{"control", LogIgnoreRule{Substring: "a\x00b"}, "substring", "control character"},
		{"bad utf8", LogIgnoreRule{Substring: "a", Description: "\xff"}, "description", "UTF-8"},
		{"long", LogIgnoreRule{Substring: strings.Repeat("a", MaxTextLength+1)}, "substring", "at most"},
		{"zero from", LogIgnoreRule{Substring: "a", ValidFrom: &zero}, "valid_from", "zero time"},
		{"sql", LogIgnoreRule{Substring: "' OR 1=1; --", Description: `"; DELETE FROM rules`}, "", ""},
	}
	for _, tc := range tests {
		checkErr(t, "ValidateIgnoreRule("+tc.name+")", ValidateIgnoreRule(&tc.r), tc.wantField, tc.wantMsg)
	}
}

func TestValidateEventsRequest(t *testing.T) {
	tests := []struct {
		name      string
		mod       func(*EventsRequest)
		wantField string
		wantMsg   string
	}{
		{"ok", func(*EventsRequest) {}, "", ""},
		{"empty", func(r *EventsRequest) { r.Events = nil }, "events", "empty"},
		{"too many", func(r *EventsRequest) { r.Events = make([]Event, MaxEventsPerRequest+1) }, "events", "at most"},
		{"id", func(r *EventsRequest) { r.Events[1].ID = "a b" }, "events[1].id", "offset 1"},
		{"id dot", func(r *EventsRequest) { r.Events[1].ID = "a.b" }, "events[1].id", "offset 1"},
		{"id empty", func(r *EventsRequest) { r.Events[0].ID = "" }, "events[0].id", "empty"},
		{"id long", func(r *EventsRequest) { r.Events[0].ID = strings.Repeat("a", MaxIDLength+1) }, "events[0].id", "at most"},
		{"time", func(r *EventsRequest) { r.Events[0].Time = time.Time{} }, "events[0].time", "missing"},
		{"severity", func(r *EventsRequest) { r.Events[0].Severity = "loud" }, "events[0].severity", "loud"},
		{"name", func(r *EventsRequest) { r.Events[0].Name = "" }, "events[0].name", "empty"},
		{"name space", func(r *EventsRequest) { r.Events[0].Name = "a b" }, "events[0].name", "printable"},
		{"source", func(r *EventsRequest) { r.Events[0].Source = "" }, "events[0].source", "server"},
		{"message utf8", func(r *EventsRequest) { r.Events[0].Message = "\xc3" }, "events[0].message", "UTF-8"},
		{"field value", func(r *EventsRequest) { r.Events[0].Fields["esid"] = "\xff" }, "events[0].fields.esid", "UTF-8"},
		{"field key", func(r *EventsRequest) { r.Events[0].Fields[""] = "x" }, "events[0].fields", "key"},
		{"sql", func(r *EventsRequest) { r.Events[0].Message = "'; DROP TABLE events; --" }, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := exampleEvents()
			tc.mod(r)
			checkErr(t, "ValidateEventsRequest", ValidateEventsRequest(r), tc.wantField, tc.wantMsg)
		})
	}
}

func TestValidateCRLID(t *testing.T) {
	tests := []struct{ id, wantMsg string }{
		{"partner-ca.1", ""},
		{"A_b-9", ""},
		{"", "empty"},
		{".", "not a CRL ID"},
		{"..", "not a CRL ID"},
		{"a/b", "offset 1"},
		{"a%2Fb", "offset 1"},
		{strings.Repeat("a", MaxIDLength+1), "at most"},
	}
	for _, tc := range tests {
		checkErr(t, "ValidateCRLID("+tc.id+")", ValidateCRLID(tc.id), "id", tc.wantMsg)
	}
}

func TestValidateCRLURLsRequest(t *testing.T) {
	tests := []struct {
		urls      []string
		wantField string
		wantMsg   string
	}{
		{[]string{"http://crl.example/ca.crl", "https://crl.example:8443/x?y=1"}, "", ""},
		{nil, "urls", "empty"},
		{[]string{"http://ok.example/", "ldap://crl.example/cn=x"}, "urls[1]", "not an http"},
		{[]string{"http:///nohost"}, "urls[0]", "no host"},
		{[]string{"crl.example/ca.crl"}, "urls[0]", "not an http"},
		{[]string{"http://x.example/" + strings.Repeat("a", MaxURLLength)}, "urls[0]", "at most"},
		{[]string{"http://x.example/\x7f"}, "urls[0]", "not a URL"},
	}
	for _, tc := range tests {
		err := ValidateCRLURLsRequest(&CRLURLsRequest{URLs: tc.urls})
		checkErr(t, "ValidateCRLURLsRequest", err, tc.wantField, tc.wantMsg)
	}
}

func TestValidateLicenseAndConfigStatus(t *testing.T) {
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	checkErr(t, "ValidateLicenseStatus(valid)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Valid: true, ExpiresAt: &exp}), "", "")
	checkErr(t, "ValidateLicenseStatus(none)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Reason: "no license"}), "", "")
	checkErr(t, "ValidateLicenseStatus(no id)", ValidateLicenseStatus(&LicenseStatus{}), "proxy_id", "empty")
	checkErr(t, "ValidateLicenseStatus(no expiry)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Valid: true}), "expires_at", "missing")
	checkErr(t, "ValidateLicenseStatus(control)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX\n1"}), "proxy_id", "control")
	checkErr(t, "ValidateLicenseStatus(tunnel up)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Tunnel: &TunnelState{Streams: 1, OpenSessions: 3, ConnectedAt: &exp}}), "", "")
	checkErr(t, "ValidateLicenseStatus(tunnel down)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Tunnel: &TunnelState{}}), "", "")
	checkErr(t, "ValidateLicenseStatus(negative sessions)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Tunnel: &TunnelState{Streams: 1, OpenSessions: -1, ConnectedAt: &exp}}), "tunnel.open_sessions", "negative")
	checkErr(t, "ValidateLicenseStatus(streams)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Tunnel: &TunnelState{Streams: 5000, ConnectedAt: &exp}}), "tunnel.streams", "out of range")
	checkErr(t, "ValidateLicenseStatus(down since)", ValidateLicenseStatus(&LicenseStatus{ProxyID: "PX-1", Tunnel: &TunnelState{ConnectedAt: &exp}}), "tunnel.connected_at", "if and only if")

	checkErr(t, "ValidateConfigStatus(ok)", ValidateConfigStatus(&ConfigStatus{Revision: 3, ETag: `"r3"`, Applied: true}), "", "")
	checkErr(t, "ValidateConfigStatus(negative)", ValidateConfigStatus(&ConfigStatus{Revision: -1}), "revision", "negative")
	checkErr(t, "ValidateConfigStatus(etag)", ValidateConfigStatus(&ConfigStatus{Revision: 1, ETag: "r3"}), "etag", "quoted")
	checkErr(t, "ValidateConfigStatus(errors)", ValidateConfigStatus(&ConfigStatus{Revision: 1, Errors: []ConfigError{{Field: "x", Message: "\xff"}}}), "errors[0].message", "UTF-8")
}

func TestValidateETag(t *testing.T) {
	tests := []struct {
		etag string
		ok   bool
	}{
		{`"abc"`, true},
		{`""`, true},
		{`W/"abc"`, false},
		{`abc`, false},
		{`"a"b"`, false},
		{`"a b"`, false},
		{`"`, false},
	}
	for _, tc := range tests {
		if err := ValidateETag(tc.etag); (err == nil) != tc.ok {
			t.Errorf("ValidateETag(%q) = %v, want ok %v", tc.etag, err, tc.ok)
		}
	}
}
