package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	adminv1 "smartproxy/gen/smartproxy/admin/v1"
	"smartproxy/internal/diaghttp"
	"smartproxy/internal/grpclogrus"
)

// DefaultAddr is the admin listener's default address.
const DefaultAddr = "127.0.0.1:2879"

// ServiceName is the full name of the admin service.
var ServiceName = adminv1.AdminService_ServiceDesc.ServiceName

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("admin: server closed")

// Register registers svc on r, for example on the tunnel port through
// transport.ServerConfig.Register.
func Register(r grpc.ServiceRegistrar, svc adminv1.AdminServiceServer) {
	adminv1.RegisterAdminServiceServer(r, svc)
}

// Config configures the admin listener.
type Config struct {
	// Backend answers the admin calls. Required.
	Backend Backend
	// Logger receives operator actions and failed calls. If nil, nothing is
	// logged.
	Logger logrus.FieldLogger
	// AllowNonLoopback permits listening on an address that is not a
	// loopback address. The admin port has no authentication of its own, so
	// this is off by default.
	AllowNonLoopback bool
	// Health is the daemon's health service with its named parts, served
	// here next to the admin service. If nil, the admin port answers
	// SERVING for as long as it runs.
	Health *Health
}

// Server is the plaintext admin gRPC listener.
type Server struct {
	cfg    Config // immutable
	log    logrus.FieldLogger
	grpc   *grpc.Server
	health *health.Server // cfg.Health's service, or the admin port's own
}

// New checks cfg and returns a server that is not yet serving.
func New(cfg Config) (*Server, error) {
	log := loggerOrDiscard(cfg.Logger)
	svc, err := NewService(cfg.Backend, log)
	if err != nil {
		return nil, err
	}
	glog := grpclogrus.Logger(log)
	recov := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.WithField("panic", p).WithField("stack", string(debug.Stack())).Error("panic in admin handler")
		return status.Error(codes.Internal, "internal error")
	})
	s := &Server{cfg: cfg, log: log}
	if cfg.Health != nil {
		s.health = cfg.Health.Server()
	} else {
		s.health = health.NewServer()
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	}
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(glog, grpclogrus.LoggingOptions()...),
			recovery.UnaryServerInterceptor(recov),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(glog, grpclogrus.LoggingOptions()...),
			recovery.StreamServerInterceptor(recov),
		),
	)
	Register(s.grpc, svc)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// CheckAddr reports an error when addr ("host:port") is not a loopback
// address and allowNonLoopback is false. "localhost" counts as loopback; an
// empty host (all interfaces) does not.
func CheckAddr(addr string, allowNonLoopback bool) error {
	if allowNonLoopback {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("admin: address %q: %w", addr, err)
		}
		return nil
	}
	if err := diaghttp.CheckLoopback(addr); err != nil {
		return fmt.Errorf("admin: %w (the admin API is unauthenticated; allow it explicitly to override)", err)
	}
	return nil
}

// Serve serves on ln until Shutdown or Close, then returns ErrServerClosed.
// It refuses a TCP listener on a non-loopback address unless
// AllowNonLoopback is set. ln is closed when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !s.cfg.AllowNonLoopback && !tcp.IP.IsLoopback() {
		ln.Close()
		return CheckAddr(tcp.String(), false)
	}
	s.log.WithField("listen_addr", ln.Addr().String()).Info("admin listener started")
	err := s.grpc.Serve(ln)
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return ErrServerClosed
	}
	return fmt.Errorf("admin: serve: %w", err)
}

// Listen checks addr (DefaultAddr if empty) and listens on it.
func (s *Server) Listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	if err := CheckAddr(addr, s.cfg.AllowNonLoopback); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ln, nil
}

// Shutdown stops the server gracefully; when ctx ends first it closes the
// remaining connections and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}

// Close stops the server at once.
func (s *Server) Close() {
	s.health.Shutdown()
	s.grpc.Stop()
}

func loggerOrDiscard(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	d := logrus.New()
	d.SetOutput(io.Discard)
	d.SetLevel(logrus.PanicLevel)
	return d
}
