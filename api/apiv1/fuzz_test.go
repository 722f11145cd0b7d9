package apiv1

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// addGoldenSeeds adds every golden document as a seed.
func addGoldenSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzParseError checks that ParseError never panics and that what it accepts survives a round
// trip.
func FuzzParseError(f *testing.F) {
	addGoldenSeeds(f)
	f.Add([]byte(`{"error":{"code":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		eb, err := ParseError(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(eb)
		if err != nil {
			t.Fatalf("json.Marshal(%+v) = %v", eb, err)
		}
		back, err := ParseError(out)
		if err != nil {
			t.Fatalf("ParseError(%s) = %v after a round trip", out, err)
		}
		if diff := cmp.Diff(eb, back); diff != "" {
			t.Errorf("round trip differs (-first +second):\n%s", diff)
		}
	})
}

// FuzzConfigDocument checks that every configuration document that decodes strictly encodes to
// JSON that decodes to the same document.
func FuzzConfigDocument(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var doc ConfigDocument
		if strictUnmarshal(b, &doc) != nil {
			return
		}
		out, err := json.Marshal(&doc)
		if err != nil {
			t.Fatalf("json.Marshal = %v", err)
		}
		var back ConfigDocument
		if err := strictUnmarshal(out, &back); err != nil {
			t.Fatalf("decoding %s = %v after a round trip", out, err)
		}
		if diff := cmp.Diff(&doc, &back); diff != "" {
			t.Errorf("round trip differs (-first +second):\n%s", diff)
		}
	})
}

// FuzzEventsRequest checks that every batch ValidateEventsRequest accepts survives a round trip
// unchanged and stays valid.
func FuzzEventsRequest(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req EventsRequest
		if strictUnmarshal(b, &req) != nil || ValidateEventsRequest(&req) != nil {
			return
		}
		out, err := json.Marshal(&req)
		if err != nil {
			t.Fatalf("json.Marshal = %v", err)
		}
		var back EventsRequest
		if err := strictUnmarshal(out, &back); err != nil {
			t.Fatalf("decoding %s = %v after a round trip", out, err)
		}
		if err := ValidateEventsRequest(&back); err != nil {
			t.Fatalf("ValidateEventsRequest after a round trip = %v", err)
		}
		if diff := cmp.Diff(&req, &back); diff != "" {
			t.Errorf("round trip differs (-first +second):\n%s", diff)
		}
	})
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
