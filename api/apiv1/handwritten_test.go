package apiv1

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// handWritten are documents written by hand from the schemas of docs/api/openapi.yaml
// (property names, required properties, formats), not from the encoder's output. A golden file
// recorded with -update only says what the encoder wrote; these say what the contract wants.
var handWritten = map[string]string{
	// EventsRequest: events[] of Event; id, time, severity, name and source required; the
	// optional properties absent when empty.
	"events-request.json": `{"events": [
		{"id": "5f0c6e1e2b7d4c3a9e8f7a6b5c4d3e2f", "time": "2026-03-01T10:15:30.123456789Z",
		 "severity": "warning", "name": "partner_unknown", "session_id": 123,
		 "odette_id": "O0013000000000NOBODY", "remote_addr": "198.51.100.7:40001",
		 "message": "SSID from an unknown partner refused",
		 "fields": {"esid": "04", "tls_subject": "CN=x"}, "source": "server"},
		{"id": "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5", "time": "2026-03-01T10:15:31Z",
		 "severity": "info", "name": "tunnel_up", "source": "client"}]}`,
	// EventsResponse: accepted and duplicates required.
	"events-response.json": `{"accepted": 1, "duplicates": 1}`,
	// CRLURLsRequest: urls required.
	"crl-urls-request.json": `{"urls": ["http://crl.partner-ca.example/partner-ca.crl", "https://pki.other.example/ca.crl"]}`,
	// LicenseStatus: proxy_id and valid required; expires_at a date-time or null.
	"license-status.json":         `{"proxy_id": "PX-3F2A-9C11", "valid": true, "expires_at": "2027-01-01T00:00:00Z", "reason": ""}`,
	"license-status-invalid.json": `{"proxy_id": "PX-3F2A-9C11", "valid": false, "expires_at": null, "reason": "no license installed"}`,
	// ConfigStatus: revision and applied required; errors[] of ConfigError {field, message}.
	"config-status.json": `{"revision": 42, "etag": "\"r42\"", "applied": false,
		"errors": [{"field": "partners[0].allowed_networks[1]", "message": "not a CIDR network"}]}`,
	// ErrorBody: error required, an ErrorDetail with code (from the enum) and message required.
	"error.json": `{"error": {"code": "invalid_field",
		"message": "severity \"loud\" is not debug, info, warning, error or critical", "field": "events[0].severity"}}`,
}

// TestHandWritten checks that the encoder's output and the golden file are, as JSON values, the
// document written by hand, and that the hand-written document decodes to the same Go value.
func TestHandWritten(t *testing.T) {
	cases := make(map[string]bool)
	for _, tc := range goldenCases() {
		hand, ok := handWritten[tc.file]
		if !ok {
			continue
		}
		cases[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			var want any
			if err := json.Unmarshal([]byte(hand), &want); err != nil {
				t.Fatalf("the hand-written document is not JSON: %v", err)
			}
			enc, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			golden, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			for what, b := range map[string][]byte{"encoding": enc, "golden file": golden} {
				var got any
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s differs from the hand-written document (-hand +%s):\n%s", what, what, diff)
				}
			}
			back := tc.zero()
			dec := json.NewDecoder(strings.NewReader(hand))
			dec.DisallowUnknownFields()
			if err := dec.Decode(back); err != nil {
				t.Fatalf("decoding the hand-written document = %v", err)
			}
			if diff := cmp.Diff(tc.v, back); diff != "" {
				t.Errorf("the hand-written document decodes differently (-want +got):\n%s", diff)
			}
		})
	}
	for file := range handWritten {
		if !cases[file] {
			t.Errorf("hand-written %s has no golden case", file)
		}
	}
}
