package backend

import (
	"strings"
	"testing"

	"smartproxy/api/apiv1"
)

// FuzzCRLID checks that parseCRLID accepts exactly the IDs CRLID makes.
func FuzzCRLID(f *testing.F) {
	for _, s := range []string{"crl-1", "crl-0", "crl-01", "crl-", "crl--1", "crl-9223372036854775807", "crl-9223372036854775808", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parseCRLID(s)
		if ok && CRLID(id) != s {
			t.Errorf("parseCRLID(%q) = %d, but CRLID(%d) = %q", s, id, id, CRLID(id))
		}
		if ok && id <= 0 {
			t.Errorf("parseCRLID(%q) = %d, want a positive id", s, id)
		}
	})
}

// FuzzBearerToken checks that a token is extracted only from a Bearer
// header and comes back without surrounding spaces.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer spt_x", "bearer x", "Basic x", "Bearer ", "", "Bearer  a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, reason := bearerToken(h)
		if (tok == "") == (reason == "") {
			t.Fatalf("bearerToken(%q) = %q, %q: want exactly one of token and reason", h, tok, reason)
		}
		if tok != "" && (tok != strings.TrimSpace(tok) || !strings.EqualFold(h[:7], "Bearer ")) {
			t.Errorf("bearerToken(%q) = %q", h, tok)
		}
	})
}

// FuzzETagMatches checks that a header naming the tag (alone, weak or in a
// list) matches, and that a header without it does not.
func FuzzETagMatches(f *testing.F) {
	f.Add(`"abc"`, `"x", "abc"`)
	f.Add(`"abc"`, `W/"abc"`)
	f.Add(`"abc"`, `"abcd"`)
	f.Add("\r", "0")
	f.Fuzz(func(t *testing.T, etag, header string) {
		if apiv1.ValidateETag(etag) != nil {
			return // only strong entity tags are ever sent
		}
		if !etagMatches(etag, etag) || !etagMatches(header+", "+etag, etag) || !etagMatches("W/"+etag, etag) {
			t.Errorf("etagMatches does not find %q", etag)
		}
		if etagMatches(header, etag) && header != "*" && !strings.Contains(header, etag) && strings.TrimSpace(header) != "*" {
			t.Errorf("etagMatches(%q, %q) = true without the tag in the header", header, etag)
		}
	})
}
