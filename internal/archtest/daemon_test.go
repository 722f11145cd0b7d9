package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// maxRunDaemonLines bounds each daemon's runDaemon: set-up, signals, listeners, systemd and the
// shutdown order belong to internal/daemon, so a runDaemon only builds the daemon's own parts.
const maxRunDaemonLines = 60

// TestRunDaemonLength checks that each of the three daemons has a runDaemon of at most
// maxRunDaemonLines lines (from func to the closing brace) that runs through internal/daemon.
func TestRunDaemonLength(t *testing.T) {
	for _, cmd := range []string{"smartproxy-server", "smartproxy-client", "smartproxy-api"} {
		t.Run(cmd, func(t *testing.T) {
			fset := token.NewFileSet()
			pkgs, err := parser.ParseDir(fset, filepath.Join("..", "..", "cmd", cmd), func(fi os.FileInfo) bool {
				return !strings.HasSuffix(fi.Name(), "_test.go")
			}, 0)
			if err != nil {
				t.Fatal(err)
			}
			var fn *ast.FuncDecl
			for _, p := range pkgs {
				for _, f := range p.Files {
					for _, d := range f.Decls {
						if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == "runDaemon" {
							fn = fd
						}
					}
				}
			}
			if fn == nil {
				t.Fatalf("cmd/%s has no runDaemon", cmd)
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines > maxRunDaemonLines {
				t.Errorf("cmd/%s: runDaemon has %d lines, want at most %d: move what all daemons do into internal/daemon", cmd, lines, maxRunDaemonLines)
			}
			usesDaemon := false
			ast.Inspect(fn, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == "daemon" && sel.Sel.Name == "Start" {
						usesDaemon = true
					}
				}
				return true
			})
			if !usesDaemon {
				t.Errorf("cmd/%s: runDaemon does not call daemon.Start", cmd)
			}
		})
	}
}

// TestOneSignalLoop checks that only internal/daemon handles the run-time signals (SIGHUP,
// SIGUSR1, SIGUSR2): a second signal loop in a daemon is a copy of the first.
func TestOneSignalLoop(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name != ".." && (strings.HasPrefix(name, ".") || name == "gen") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if filepath.Dir(rel) == filepath.Join("internal", "daemon") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, sig := range []string{"SIGHUP", "SIGUSR1", "SIGUSR2"} {
			if strings.Contains(string(src), "syscall."+sig) {
				t.Errorf("%s handles %s: the signal loop is internal/daemon's", rel, sig)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
