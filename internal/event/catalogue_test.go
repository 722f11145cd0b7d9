package event

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const root = "../.."

// TestCatalogue: every name once, in snake_case, with a severity and a sentence.
func TestCatalogue(t *testing.T) {
	seen := map[string]bool{}
	name := regexp.MustCompile(`^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$`)
	for _, d := range defs {
		if seen[d.Name] {
			t.Errorf("%s is catalogued twice", d.Name)
		}
		seen[d.Name] = true
		if !name.MatchString(d.Name) || d.Severity == 0 || d.Doc == "" || d.Daemons == "" {
			t.Errorf("%+v: want a snake_case name, a severity, the daemons and a sentence", d)
		}
		if d.Refusal && !d.Security {
			t.Errorf("%s: a refusal is a security event", d.Name)
		}
	}
}

// documentedEvents returns the event names of docs/security-events.md: those in the first
// column of its tables (except the table of fields) and those a paragraph begins with.
func documentedEvents(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docs", "security-events.md"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	section := ""
	cell := regexp.MustCompile("`([a-z0-9_]+)`")
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			section = line
			continue
		}
		if m := regexp.MustCompile("^`([a-z0-9_]+)` \\(").FindStringSubmatch(line); m != nil {
			names[m[1]] = true // a paragraph about one event: "`name` (SEVERITY) ..."
			continue
		}
		if !strings.HasPrefix(line, "| `") || strings.HasSuffix(section, " Fields") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("docs/security-events.md: no event tables found")
	}
	return names
}

// TestSecurityEventsDocumented: every catalogued security event is documented in
// docs/security-events.md, and every event documented there is catalogued.
func TestSecurityEventsDocumented(t *testing.T) {
	doc := documentedEvents(t)
	for _, d := range defs {
		if d.Security && !doc[d.Name] {
			t.Errorf("security event %s is not documented in docs/security-events.md", d.Name)
		}
	}
	for n := range doc {
		if _, ok := Lookup(n); !ok {
			t.Errorf("docs/security-events.md documents %s, which is not catalogued", n)
		}
	}
}

// expand turns the fail2ban filter's _events alternation (names, and prefix(?:a|b) groups)
// into the names it matches.
func expand(t *testing.T, pattern string) []string {
	t.Helper()
	var alts []string
	depth, start := 0, 0
	for i, c := range pattern {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case '|':
			if depth == 0 {
				alts = append(alts, pattern[start:i])
				start = i + 1
			}
		}
	}
	alts = append(alts, pattern[start:])
	group := regexp.MustCompile(`^([a-z0-9_]*)\(\?:([a-z0-9_|]+)\)([a-z0-9_]*)$`)
	plain := regexp.MustCompile(`^[a-z0-9_]+$`)
	var out []string
	for _, a := range alts {
		if m := group.FindStringSubmatch(a); m != nil {
			for _, inner := range strings.Split(m[2], "|") {
				out = append(out, m[1]+inner+m[3])
			}
			continue
		}
		if !plain.MatchString(a) {
			t.Fatalf("fail2ban _events: %q is neither a name nor prefix(?:a|b)", a)
		}
		out = append(out, a)
	}
	return out
}

// TestFail2banFilter: every event the fail2ban filter matches is catalogued and is a refusal,
// and the filter's alternation matches exactly the names it lists.
func TestFail2banFilter(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "deploy", "fail2ban", "smartproxy.conf"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^_events = (.+)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("deploy/fail2ban/smartproxy.conf has no _events line")
	}
	pattern := string(m[1])
	names := expand(t, pattern)
	if len(names) < 10 {
		t.Fatalf("the filter matches %d names: %v", len(names), names)
	}
	re := regexp.MustCompile(`^(?:` + pattern + `)$`)
	listed := map[string]bool{}
	for _, n := range names {
		listed[n] = true
		d, ok := Lookup(n)
		switch {
		case !ok:
			t.Errorf("the fail2ban filter matches %s, which is not catalogued", n)
		case !d.Refusal:
			t.Errorf("the fail2ban filter matches %s, which is not a refusal: a ban for it would punish an innocent source", n)
		}
		if !re.MatchString(n) {
			t.Errorf("expanded name %s does not match the filter's own pattern", n)
		}
	}
	for _, d := range defs {
		if re.MatchString(d.Name) && !listed[d.Name] {
			t.Errorf("the filter's pattern matches %s beyond the names it lists", d.Name)
		}
	}
}

// TestNamesInCode: every event name the code writes — the value of a constant Event…, of an
// "event" map key or of WithField("event", …) — is catalogued.
func TestNamesInCode(t *testing.T) {
	found := map[string]string{} // name → where
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n != ".." && (strings.HasPrefix(n, ".") || n == "gen" || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		lit := func(e ast.Expr) (string, bool) {
			bl, ok := e.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(bl.Value)
			return s, err == nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if strings.HasPrefix(id.Name, "Event") && i < len(n.Values) {
						if s, ok := lit(n.Values[i]); ok {
							found[s] = fset.Position(id.Pos()).String()
						}
					}
				}
			case *ast.KeyValueExpr:
				if k, ok := lit(n.Key); ok && k == "event" {
					if s, ok := lit(n.Value); ok {
						found[s] = fset.Position(n.Pos()).String()
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "WithField" && len(n.Args) == 2 {
					if k, ok := lit(n.Args[0]); ok && k == "event" {
						if s, ok := lit(n.Args[1]); ok {
							found[s] = fset.Position(n.Pos()).String()
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 50 {
		t.Fatalf("found %d event names in the code, want the whole vocabulary", len(found))
	}
	for name, where := range found {
		if _, ok := Lookup(name); !ok {
			t.Errorf("%s: event %q is not catalogued in internal/event", where, name)
		}
	}
}
