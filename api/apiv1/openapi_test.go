package apiv1

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const openAPIFile = "../../docs/api/openapi.yaml"

// yamlKeys reads the block-style YAML of the OpenAPI document and returns every mapping key as
// its "|"-separated path from the root ("paths|/v1/config|get"), and every scalar item of a
// list (block "- x" or flow "[x, y]") as the list's path plus "|=x". It understands exactly the
// subset docs/api/openapi.yaml uses: indentation by spaces, block scalars after "|", quoted keys.
func yamlKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]bool{}
	type level struct {
		indent int
		key    string
	}
	var stack []level
	blockIndent := -1 // lines indented deeper than this belong to a block scalar
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(trimmed)
		if blockIndent >= 0 {
			if indent > blockIndent {
				continue
			}
			blockIndent = -1
		}
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		parent := ""
		for _, l := range stack {
			parent += l.key + "|"
		}
		if rest, ok := strings.CutPrefix(trimmed, "- "); ok {
			if k, _, isMap := strings.Cut(rest, ": "); isMap && !strings.HasPrefix(rest, "\"") {
				// A mapping inside a list: record its first key below the list.
				keys[parent+"-|"+k] = true
				continue
			}
			keys[parent+"="+unquote(rest)] = true
			continue
		}
		k, v, ok := strings.Cut(trimmed, ":")
		if !ok {
			t.Fatalf("%s:%d: not a key: %q", path, n, line)
		}
		k = unquote(k)
		v = strings.TrimSpace(v)
		keys[parent+k] = true
		switch {
		case v == "|" || v == ">":
			blockIndent = indent
		case strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]"):
			for _, item := range strings.Split(strings.Trim(v, "[]"), ",") {
				keys[parent+k+"|="+unquote(strings.TrimSpace(item))] = true
			}
		}
		stack = append(stack, level{indent, k})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// childKeys returns the names directly below prefix ("a|b|") in keys.
func childKeys(keys map[string]bool, prefix string) []string {
	var out []string
	for k := range keys {
		if rest, ok := strings.CutPrefix(k, prefix); ok && rest != "" && !strings.Contains(rest, "|") {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIPaths checks that the endpoints in Go and in the OpenAPI document are the same, and
// that authentication matches.
func TestOpenAPIPaths(t *testing.T) {
	keys := yamlKeys(t, openAPIFile)
	var inGo []string
	for _, e := range Endpoints() {
		inGo = append(inGo, strings.ToLower(e.Method)+" "+e.Path)
		op := "paths|" + e.Path + "|" + strings.ToLower(e.Method)
		if !keys[op] {
			t.Errorf("%s %s is not documented in %s", e.Method, e.Path, openAPIFile)
			continue
		}
		if public := keys[op+"|security"]; public == e.Auth {
			t.Errorf("%s %s: Auth = %v in Go, but the document says security override = %v", e.Method, e.Path, e.Auth, public)
		}
		for _, code := range []string{"200", "204"} {
			if keys[op+"|responses|"+code] {
				goto documented
			}
		}
		t.Errorf("%s %s documents no 200 or 204 response", e.Method, e.Path)
	documented:
		if e.Auth && !keys[op+"|responses|401"] {
			t.Errorf("%s %s documents no 401 response", e.Method, e.Path)
		}
	}
	var inDoc []string
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options"}
	for _, p := range childKeys(keys, "paths|") {
		for _, m := range childKeys(keys, "paths|"+p+"|") {
			if slices.Contains(methods, m) {
				inDoc = append(inDoc, m+" "+p)
			}
		}
	}
	slices.Sort(inGo)
	slices.Sort(inDoc)
	if !slices.Equal(inGo, inDoc) {
		t.Errorf("endpoints differ:\n Go:      %v\n OpenAPI: %v", inGo, inDoc)
	}
	for _, p := range []string{PathConfig, PathCRLURLs, PathEvents, PathLicenseStatus, PathLicense, PathConfigStatus, PathHealth} {
		if !keys["paths|"+p] {
			t.Errorf("path constant %q is not in %s", p, openAPIFile)
		}
	}
	if !strings.HasPrefix(PathCRL, PathCRLPrefix) {
		t.Errorf("PathCRL %q does not start with PathCRLPrefix %q", PathCRL, PathCRLPrefix)
	}
}

// TestOpenAPISchemas checks that every document type has a schema of the same name whose
// properties are exactly the type's JSON keys.
func TestOpenAPISchemas(t *testing.T) {
	keys := yamlKeys(t, openAPIFile)
	types := []any{
		ConfigDocument{}, CompanyIdentity{}, CRLInfo{}, Partner{}, CertificateBinding{}, Limits{},
		InternalServer{}, InternalTLS{}, Route{}, LogIgnoreRule{}, CRLURLsRequest{}, Event{},
		EventsRequest{}, EventsResponse{}, LicenseStatus{}, TunnelState{}, ConfigStatus{}, ConfigError{},
		HealthResponse{}, ErrorBody{}, ErrorDetail{},
	}
	for _, v := range types {
		rt := reflect.TypeOf(v)
		prefix := "components|schemas|" + rt.Name() + "|"
		if !keys[strings.TrimSuffix(prefix, "|")] {
			t.Errorf("schema %s is not in %s", rt.Name(), openAPIFile)
			continue
		}
		var inGo []string
		for f := range rt.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Errorf("%s.%s has no JSON name", rt.Name(), f.Name)
				continue
			}
			inGo = append(inGo, name)
			if !keys[prefix+"properties|"+name+"|description"] && !keys[prefix+"properties|"+name+"|$ref"] {
				t.Errorf("schema %s: property %s has no description or $ref", rt.Name(), name)
			}
		}
		slices.Sort(inGo)
		inDoc := childKeys(keys, prefix+"properties|")
		if !slices.Equal(inGo, inDoc) {
			t.Errorf("schema %s: properties differ:\n Go:      %v\n OpenAPI: %v", rt.Name(), inGo, inDoc)
		}
		if !keys[prefix+"description"] {
			t.Errorf("schema %s has no description", rt.Name())
		}
		if !keys[prefix+"additionalProperties"] {
			t.Errorf("schema %s does not say additionalProperties (unknown fields are refused)", rt.Name())
		}
	}
	enums := []struct {
		schema string
		values []string
	}{
		{"ErrorDetail|properties|code", []string{CodeUnauthorized, CodeForbidden, CodeNotFound, CodeInvalidJSON,
			CodeInvalidField, CodeBodyTooLarge, CodeConflict, CodeInternal, CodeMethodNotAllowed,
			CodeUnsupportedMediaType, CodeUnavailable, CodeTooManyRequests}},
		{"Severity", []string{string(SeverityDebug), string(SeverityInfo), string(SeverityWarning), string(SeverityError), string(SeverityCritical)}},
		{"Direction", []string{string(DirectionBoth), string(DirectionIncoming), string(DirectionOutgoing)}},
		{"Charset", []string{string(CharsetStrict), string(CharsetLenient)}},
		{"Source", []string{string(SourceServer), string(SourceClient)}},
	}
	for _, e := range enums {
		prefix := "components|schemas|" + e.schema + "|enum|="
		var inDoc []string
		for k := range keys {
			if v, ok := strings.CutPrefix(k, prefix); ok {
				inDoc = append(inDoc, v)
			}
		}
		slices.Sort(inDoc)
		want := slices.Clone(e.values)
		slices.Sort(want)
		if !slices.Equal(want, inDoc) {
			t.Errorf("enum %s differs:\n Go:      %v\n OpenAPI: %v", e.schema, want, inDoc)
		}
	}
}

// TestOpenAPIHeaders checks that the headers, media types and limits of the contract are
// documented.
func TestOpenAPIHeaders(t *testing.T) {
	keys := yamlKeys(t, openAPIFile)
	for _, k := range []string{
		"components|parameters|IfNoneMatch|name", "components|headers|ETag",
		"components|headers|RetryAfter", "components|securitySchemes|bearerAuth|scheme",
		"components|parameters|Wait|schema|maximum", "paths|" + PathConfig + "|get|parameters",
		"paths|" + PathCRL + "|get|responses|200|content|" + ContentTypeCRL,
		"paths|" + PathLicense + "|get|responses|200|content|" + ContentTypeLicense,
		"paths|" + PathEvents + "|post|responses|200|content|" + ContentTypeJSON,
		"paths|" + PathEvents + "|post|responses|413",
	} {
		if !keys[k] {
			t.Errorf("%s lacks %s", openAPIFile, k)
		}
	}
	raw, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, s := range []string{
		"name: " + HeaderIfNoneMatch, "name: " + QueryWait, "maximum: 60", HeaderAuthorization + ": Bearer",
		"\n        " + HeaderETag + ":", "\n        " + HeaderRetryAfter + ":", "\n            " + HeaderETag + ":",
		"1 MiB", "4 MiB", "maxItems: 1000", "api_auth_failed",
	} {
		if !strings.Contains(doc, s) {
			t.Errorf("%s does not contain %q", openAPIFile, s)
		}
	}
	if MaxRequestBytes != 1<<20 || MaxEventsRequestBytes != 4<<20 || MaxEventsPerRequest != 1000 || MaxCRLURLsPerRequest != 1000 || MaxWait.Seconds() != 60 {
		t.Error("a limit changed in Go; update docs/api/openapi.yaml and this test")
	}
}
