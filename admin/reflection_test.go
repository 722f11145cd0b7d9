package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"smartproxy/internal/pki"
	"smartproxy/internal/proctest"
	"smartproxy/tunnel/transport"
)

// tunnelFixture is a transport server with the admin service registered on
// the mTLS tunnel port, and the PKI files a client needs.
type tunnelFixture struct {
	addr                      string
	caFile, certFile, keyFile string
	clientTLS                 *tls.Config
}

func startTunnel(t *testing.T, b Backend) *tunnelFixture {
	t.Helper()
	dir := t.TempDir()
	files, err := pki.Init(dir, pki.InitOptions{Hostname: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	path := func(name string) string {
		for _, f := range files {
			if filepath.Base(f.Path) == name {
				return f.Path
			}
		}
		t.Fatalf("pki.Init wrote no %s", name)
		return ""
	}
	serverSrc, err := transport.NewCertSource(transport.CertSourceConfig{
		CertFile: path(pki.FileServerCert), KeyFile: path(pki.FileServerKey), CAFile: path(pki.FileCACert)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.NewServer(transport.ServerConfig{
		Credentials: serverSrc,
		OnStream: func(ctx context.Context, _ transport.PeerInfo, _ transport.ConnectServer) error {
			<-ctx.Done()
			return nil
		},
		Register: func(r grpc.ServiceRegistrar) { Register(r, svc) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	clientCert, err := tls.LoadX509KeyPair(path(pki.FileClientCert), path(pki.FileClientKey))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(path(pki.FileCACert))
	if err != nil {
		t.Fatal(err)
	}
	cas, err := pki.ParseCertificatesPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cas[0])
	clientCreds := &transport.StaticCredentials{Cert: clientCert, Pool: pool}
	clientTLS, err := transport.ClientTLSConfig(clientCreds, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return &tunnelFixture{
		addr:      ln.Addr().String(),
		caFile:    path(pki.FileCACert),
		certFile:  path(pki.FileClientCert),
		keyFile:   path(pki.FileClientKey),
		clientTLS: clientTLS,
	}
}

// reflect lists the services over reflection and describes the admin service
// (its method names), as grpcurl's list and describe do.
func reflect(t *testing.T, cc *grpc.ClientConn) (services, methods []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo = %v", err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection list = %v", err)
	}
	for _, s := range r.GetListServicesResponse().GetService() {
		services = append(services, s.Name)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: ServiceName}}); err != nil {
		t.Fatal(err)
	}
	r, err = stream.Recv()
	if err != nil {
		t.Fatalf("reflection describe = %v", err)
	}
	if e := r.GetErrorResponse(); e != nil {
		t.Fatalf("reflection describe %s: %v", ServiceName, e)
	}
	for _, raw := range r.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fd); err != nil {
			t.Fatal(err)
		}
		for _, s := range fd.Service {
			if fd.GetPackage()+"."+s.GetName() != ServiceName {
				continue
			}
			for _, m := range s.Method {
				methods = append(methods, m.GetName())
			}
		}
	}
	return services, methods
}

var wantMethods = []string{"GetStatus", "ListSessions", "KillSession", "SetLogLevel", "GetLicense"}

func TestReflection(t *testing.T) {
	b := newFakeBackend()
	plainAddr := startAdmin(t, b, nil)
	tun := startTunnel(t, b)

	tlsCC, err := grpc.NewClient("passthrough:///"+tun.addr, grpc.WithTransportCredentials(credentials.NewTLS(tun.clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsCC.Close()

	tests := []struct {
		name         string
		cc           *grpc.ClientConn
		wantServices []string
	}{
		{"admin port, plaintext", dialPlain(t, plainAddr), []string{ServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}},
		{"tunnel port, mTLS", tlsCC, []string{ServiceName, transport.TunnelServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			services, methods := reflect(t, tt.cc)
			for _, s := range tt.wantServices {
				if !slices.Contains(services, s) {
					t.Errorf("reflection list = %v, want it to contain %s", services, s)
				}
			}
			if !slices.Equal(methods, wantMethods) {
				t.Errorf("reflection describe %s methods = %v, want %v", ServiceName, methods, wantMethods)
			}
		})
	}
}

// TestGrpcurl drives both ports with the real grpcurl binary.
func TestGrpcurl(t *testing.T) {
	bin := proctest.Grpcurl(t)
	b := newFakeBackend()
	plainAddr := startAdmin(t, b, nil)
	tun := startTunnel(t, b)
	tlsArgs := []string{"-cacert", tun.caFile, "-cert", tun.certFile, "-key", tun.keyFile}

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"plaintext list", []string{"-plaintext", plainAddr, "list"},
			[]string{ServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}},
		{"plaintext describe", []string{"-plaintext", plainAddr, "describe", ServiceName},
			[]string{"service AdminService", "rpc GetStatus", "rpc KillSession", "rpc SetLogLevel"}},
		{"plaintext call", []string{"-plaintext", "-d", "{}", plainAddr, ServiceName + "/GetStatus"},
			[]string{`"program": "smartproxy-server"`, `"proxyId": "PX-1"`}},
		{"plaintext health", []string{"-plaintext", plainAddr, "grpc.health.v1.Health/Check"},
			[]string{`"status": "SERVING"`}},
		{"mTLS list", append(slices.Clone(tlsArgs), tun.addr, "list"),
			[]string{ServiceName, transport.TunnelServiceName, "grpc.health.v1.Health"}},
		{"mTLS describe", append(slices.Clone(tlsArgs), tun.addr, "describe", transport.TunnelServiceName),
			[]string{"rpc Connect ( stream .smartproxy.tunnel.v1.ConnectRequest ) returns ( stream .smartproxy.tunnel.v1.ConnectResponse )"}},
		{"mTLS call", append(slices.Clone(tlsArgs), "-d", "{}", tun.addr, ServiceName+"/GetLicense"),
			[]string{`"reason": "expired"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := proctest.RunGrpcurl(t, bin, tt.args...)
			if err != nil {
				t.Fatalf("grpcurl %s = %v:\n%s", strings.Join(tt.args, " "), err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("grpcurl %s output lacks %q:\n%s", strings.Join(tt.args, " "), w, out)
				}
			}
		})
	}

	// Without a client certificate the tunnel port refuses grpcurl.
	out, err := proctest.RunGrpcurl(t, bin, "-cacert", tun.caFile, tun.addr, "list")
	if err == nil {
		t.Errorf("grpcurl without client certificate succeeded:\n%s", out)
	}
}
