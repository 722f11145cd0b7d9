package scripts

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"smartproxy/internal/pki"
)

// stubsGenYAML is the buf.gen.yaml of docs/proto.md: managed mode gives the generated code the
// other tool's own Go package prefix.
const stubsGenYAML = `version: v2
managed:
  enabled: true
  override:
    - file_option: go_package_prefix
      value: example.com/statustool/gen
plugins:
  - local: protoc-gen-go
    out: gen
    opt: paths=source_relative
  - local: protoc-gen-go-grpc
    out: gen
    opt: paths=source_relative
`

// stubsMain is the tiny program of docs/proto.md: AdminService.GetStatus over the loopback
// admin listener.
const stubsMain = `package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "example.com/statustool/gen/smartproxy/admin/v1"
)

func main() {
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := adminv1.NewAdminServiceClient(conn).GetStatus(ctx, &adminv1.GetStatusRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("program=%s version=%s proxy_id=%s\n", st.GetProgram(), st.GetVersion(), st.GetProxyId())
}
`

// TestStubsForAnotherTool does what docs/proto.md tells another internal tool to do: generate
// its own Go stubs from proto/ with buf in managed mode in a module of its own, build a program
// that calls AdminService.GetStatus, and run it against a real smartproxy-server; and build a
// descriptor set for other languages.
func TestStubsForAnotherTool(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	buf := findBuf(t)
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(repo, "bin")
	for _, plugin := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		if _, err := os.Stat(filepath.Join(bin, plugin)); err != nil {
			if os.Getenv("SMARTPROXY_REQUIRE_BUF") == "1" {
				t.Fatalf("%s is not in ./bin (make tools); SMARTPROXY_REQUIRE_BUF=1 makes this a failure", plugin)
			}
			t.Skipf("%s is not in ./bin (make tools)", plugin)
		}
	}
	dir := t.TempDir()
	run := func(wd string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = wd
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// The other tool's module: its own path; its requirements are ours, so that the build needs
	// nothing beyond the module cache.
	tool := filepath.Join(dir, "statustool")
	if err := os.MkdirAll(tool, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	gomod = regexp.MustCompile(`(?m)^module .*$`).ReplaceAll(gomod, []byte("module example.com/statustool"))
	gomod = regexp.MustCompile(`(?ms)^tool \(.*?^\)\n|^tool .*\n`).ReplaceAll(gomod, nil)
	gosum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": gomod, "go.sum": gosum, "buf.gen.yaml": []byte(stubsGenYAML), "main.go": []byte(stubsMain)} {
		if err := os.WriteFile(filepath.Join(tool, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(tool, buf, "generate", repo, "--template", "buf.gen.yaml")
	gen, err := os.ReadFile(filepath.Join(tool, "gen", "smartproxy", "admin", "v1", "admin.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(gen, []byte(`"example.com/statustool/gen/smartproxy/tunnel/v1"`)) {
		t.Error("generated admin.pb.go does not import the tunnel package under the tool's own prefix")
	}
	run(tool, "go", "build", "-mod=mod", "-o", filepath.Join(dir, "statustool-bin"), ".")

	// The descriptor set for other languages holds the admin service.
	image := filepath.Join(dir, "smartproxy.binpb")
	run(repo, buf, "build", "-o", image)
	raw, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatalf("buf build -o: %v", err)
	}
	found := false
	for _, f := range set.GetFile() {
		for _, s := range f.GetService() {
			found = found || f.GetPackage()+"."+s.GetName() == "smartproxy.admin.v1.AdminService"
		}
	}
	if !found {
		t.Error("the descriptor set from buf build -o lacks smartproxy.admin.v1.AdminService")
	}

	// A real smartproxy-server with its admin listener on a loopback port of its choosing.
	server := filepath.Join(dir, "smartproxy-server")
	run(repo, "go", "build", "-o", server, "./cmd/smartproxy-server")
	pkiDir := filepath.Join(dir, "pki")
	if _, err := pki.Init(pkiDir, pki.InitOptions{Hostname: "test"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := exec.CommandContext(ctx, server, "-i", "127.0.0.1:0", "-l", filepath.Join(dir, "license"),
		"--tunnel-cert", filepath.Join(pkiDir, pki.FileServerCert),
		"--tunnel-key", filepath.Join(pkiDir, pki.FileServerKey),
		"--tunnel-ca", filepath.Join(pkiDir, pki.FileCACert),
		"--admin", "127.0.0.1:0", "--metrics", "", "--pid-file=", "--log-format", "json")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	logDone := make(chan struct{})
	defer func() {
		cancel()
		<-logDone // the pipe ends when the server exits
		srv.Wait()
	}()
	adminAddr := ""
	var seen strings.Builder
	sc := bufio.NewScanner(stderr)
	for adminAddr == "" && sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if m := regexp.MustCompile(`"admin_addr":"([^"]+)"`).FindStringSubmatch(sc.Text()); m != nil {
			adminAddr = m[1]
		}
	}
	go func() {
		defer close(logDone)
		io.Copy(io.Discard, stderr) // the rest of the log
	}()
	if adminAddr == "" {
		t.Fatalf("smartproxy-server logged no admin_addr:\n%s", seen.String())
	}

	out := run(dir, filepath.Join(dir, "statustool-bin"), adminAddr)
	if !strings.Contains(out, "program=smartproxy-server ") || !strings.Contains(out, "version=") {
		t.Errorf("statustool %s = %q, want the server's GetStatus (program=smartproxy-server)", adminAddr, out)
	}
}
