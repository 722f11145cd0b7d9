package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/grpclogrus"
)

// DefaultPort is the tunnel port.
const DefaultPort = 2878

// DefaultMaxMessageSize is the gRPC message size limit of the tunnel in both
// directions.
const DefaultMaxMessageSize = 8 << 20

// MinMaxMessageSize is the smallest accepted message size limit: a 1 MiB
// ConfigChunk or a 99,999-byte OFTP2 buffer with framing must fit.
const MinMaxMessageSize = 1<<20 + 64<<10

// ErrServerClosed is returned by [Server.Serve] after [Server.Shutdown] or
// [Server.Close].
var ErrServerClosed = errors.New("transport: server closed")

// ServerStreamHandler runs one tunnel stream, typically a multiplexer, until
// the stream or ctx ends. ctx is cancelled only when the server is closed
// ([Server.Close], or [Server.Shutdown] running out of time): it means "shut
// down". A client that goes away, or a connection that dies, shows as an error
// from the stream's Recv (and the end of stream.Context()), so that the
// handler can tell a lost tunnel from a shutdown. The stream's Send may be
// called by one goroutine of the handler at a time; the server may send a
// Drain frame in between (Send is serialised).
type ServerStreamHandler func(ctx context.Context, peer PeerInfo, stream ConnectServer) error

// ServerConfig configures a [Server].
type ServerConfig struct {
	// Credentials are the server certificate and the tunnel CA. Required.
	Credentials Credentials
	// AllowedClients restricts the clients to these identities (see
	// AllowList). If empty, every certificate of the tunnel CA is accepted.
	AllowedClients AllowList
	// OnStream runs each Connect stream. Required.
	OnStream ServerStreamHandler
	// Health, if not nil, is the gRPC health service of the tunnel port,
	// shared with its owner, who reports the overall status (service "");
	// the server reports only TunnelServiceName on it. If nil, the server has
	// its own, SERVING until Drain.
	Health *health.Server
	// Register, if not nil, registers further services on the tunnel port
	// (they are served behind the same mTLS and allow-list), for example the
	// admin service.
	Register func(grpc.ServiceRegistrar)
	// Logger receives security events and call logs. If nil, nothing is
	// logged.
	Logger logrus.FieldLogger

	// MinClientPingInterval is the keepalive enforcement policy: clients may
	// ping this often, with or without active streams. If zero, 10s (the
	// clients ping every 20s).
	MinClientPingInterval time.Duration
	// PingInterval is how long a connection may be idle before the server
	// pings the client. If zero, 30s. gRPC raises values below 1s to 1s.
	PingInterval time.Duration
	// PingTimeout is how long the server waits for the answer to its ping
	// before closing the connection. If zero, 10s.
	PingTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface of a new
	// connection. If zero, 10s.
	HandshakeTimeout time.Duration
	// MaxMessageSize is the message size limit in both directions. If zero,
	// DefaultMaxMessageSize; otherwise at least MinMaxMessageSize.
	MaxMessageSize int
	// InitialWindowSize and InitialConnWindowSize set the HTTP/2 stream and
	// connection flow-control windows; setting one requires setting the
	// other. When set, each must be at least 64 KiB. If both are zero,
	// DefaultFlowWindow is used for both.
	InitialWindowSize     int32
	InitialConnWindowSize int32
}

// Server is the tunnel listener of smartproxy-server: gRPC over mutual TLS
// serving the tunnel service, gRPC health and server reflection.
type Server struct {
	cfg    ServerConfig // immutable
	log    logrus.FieldLogger
	grpc   *grpc.Server
	health *health.Server

	streamCtx    context.Context // parent of every handler's context; immutable
	cancelStream context.CancelFunc

	mu       sync.Mutex
	streams  map[*serverStream]struct{} // guarded by mu
	drain    *tunnelv1.Drain            // guarded by mu; non-nil once draining
	closed   bool                       // guarded by mu
	handlers sync.WaitGroup             // running OnStream calls
	drainers sync.WaitGroup             // goroutines sending Drain frames
}

// NewServer checks cfg and returns a server that is not yet serving.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("transport: server needs credentials")
	}
	if cfg.OnStream == nil {
		return nil, errors.New("transport: server needs an OnStream handler")
	}
	if err := cfg.AllowedClients.validate(); err != nil {
		return nil, err
	}
	for name, d := range map[string]time.Duration{
		"MinClientPingInterval": cfg.MinClientPingInterval, "PingInterval": cfg.PingInterval,
		"PingTimeout": cfg.PingTimeout, "HandshakeTimeout": cfg.HandshakeTimeout,
	} {
		if d < 0 {
			return nil, fmt.Errorf("transport: negative %s %v", name, d)
		}
	}
	cfg.MinClientPingInterval = orDefault(cfg.MinClientPingInterval, 10*time.Second)
	cfg.PingInterval = orDefault(cfg.PingInterval, 30*time.Second)
	cfg.PingTimeout = orDefault(cfg.PingTimeout, 10*time.Second)
	cfg.HandshakeTimeout = orDefault(cfg.HandshakeTimeout, 10*time.Second)
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxMessageSize < MinMaxMessageSize {
		return nil, fmt.Errorf("transport: MaxMessageSize %d is below the minimum %d", cfg.MaxMessageSize, MinMaxMessageSize)
	}
	if err := checkWindows(cfg.InitialWindowSize, cfg.InitialConnWindowSize); err != nil {
		return nil, err
	}

	s := &Server{
		cfg:     cfg,
		log:     loggerOrDiscard(cfg.Logger),
		health:  cfg.Health,
		streams: make(map[*serverStream]struct{}),
	}
	if s.health == nil {
		s.health = health.NewServer()
	}
	s.streamCtx, s.cancelStream = context.WithCancel(context.Background())
	authFn := func(ctx context.Context) (context.Context, error) {
		return authenticate(ctx, cfg.AllowedClients, s.log)
	}
	glog := grpclogrus.Logger(s.log)
	recov := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.log.WithField("panic", p).WithField("stack", string(debug.Stack())).Error("panic in tunnel gRPC handler")
		return status.Error(codes.Internal, "internal error")
	})
	opts := []grpc.ServerOption{
		grpc.Creds(newServerCreds(cfg.Credentials, s.log)),
		grpc.StatsHandler(connTagger{}),
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.MinClientPingInterval,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.PingInterval,
			Timeout: cfg.PingTimeout,
		}),
		grpc.MaxRecvMsgSize(cfg.MaxMessageSize),
		grpc.MaxSendMsgSize(cfg.MaxMessageSize),
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(glog, grpclogrus.LoggingOptions()...),
			recovery.UnaryServerInterceptor(recov),
			auth.UnaryServerInterceptor(authFn),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(glog, grpclogrus.LoggingOptions()...),
			recovery.StreamServerInterceptor(recov),
			auth.StreamServerInterceptor(authFn),
		),
	}
	stream, conn := flowWindows(cfg.InitialWindowSize, cfg.InitialConnWindowSize)
	opts = append(opts, grpc.InitialWindowSize(stream), grpc.InitialConnWindowSize(conn))
	// The codec with the non-zeroing buffer pool and the socket buffer sizes measured in
	// docs/benchmarks.md (tunnel section).
	opts = append(opts, ServerOptions()...)
	s.grpc = grpc.NewServer(opts...)
	RegisterService(s.grpc, (&tunnelService{s: s}).Connect)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if cfg.Register != nil {
		cfg.Register(s.grpc)
	}
	reflection.Register(s.grpc)
	if cfg.Health == nil {
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	}
	s.health.SetServingStatus(TunnelServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// DefaultFlowWindow is the HTTP/2 stream and connection window of the tunnel
// when the configuration sets none. A fixed window turns off gRPC's
// bandwidth-delay estimation, which measures with a PING per burst of data
// and adjusts with WINDOW_UPDATEs: on the tunnel's one busy stream two to
// three PINGs and three WINDOW_UPDATEs per 100 KB buffer, each a flushed TLS
// record and a wake-up on both ends. Fixed windows of 1 MiB and of 4 MiB
// cost the same CPU per byte, 7-8 % less than the estimation, for one and
// for 100 sessions (docs/benchmarks.md, tunnel section); 4 MiB let the
// client push more of a large CRL ahead of the server's assembly and raised
// the server's peak while loading a 1,000,001-serial CRL from 2.4 to 2.8
// times the CRL (the limit is 3), so the default is 1 MiB. It caps the whole
// tunnel at 1 MiB per round trip (1 GB/s at 1 ms, 100 MB/s at 10 ms), far
// above a DMZ link's needs; per-session memory is bounded anyway by the
// tunnel's per-session windows.
const DefaultFlowWindow = 1 << 20

// flowWindows returns the configured windows, or DefaultFlowWindow for both.
func flowWindows(stream, conn int32) (int32, int32) {
	if stream == 0 && conn == 0 {
		return DefaultFlowWindow, DefaultFlowWindow
	}
	return stream, conn
}

func checkWindows(stream, conn int32) error {
	if (stream == 0) != (conn == 0) {
		return fmt.Errorf("transport: set both InitialWindowSize (%d) and InitialConnWindowSize (%d), or neither", stream, conn)
	}
	if stream != 0 && (stream < 64<<10 || conn < 64<<10) {
		return fmt.Errorf("transport: flow-control windows %d/%d below 64 KiB", stream, conn)
	}
	return nil
}

// Serve accepts tunnel connections on ln until Shutdown or Close; then it
// returns ErrServerClosed. ln is closed when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		ln.Close()
		return ErrServerClosed
	}
	s.log.WithField("listen_addr", ln.Addr().String()).Info("tunnel listener started")
	err := s.grpc.Serve(ln)
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return ErrServerClosed
	}
	return fmt.Errorf("transport: serve: %w", err)
}

// ListenAndServe listens on addr (":2878" if empty) and serves.
func (s *Server) ListenAndServe(addr string) error {
	if addr == "" {
		addr = fmt.Sprintf(":%d", DefaultPort)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	return s.Serve(ln)
}

// Drain puts the server into draining mode: new Connect streams are refused,
// the health status becomes NOT_SERVING, and every open stream receives a
// Drain frame with reason, deadline and reconnectAfter (zero values are left
// unset). Existing streams keep running. Drain is idempotent: only the first
// call sends frames.
func (s *Server) Drain(reason string, deadline time.Time, reconnectAfter time.Duration) {
	d := &tunnelv1.Drain{Reason: reason}
	if !deadline.IsZero() {
		d.Deadline = timestamppb.New(deadline)
	}
	if reconnectAfter > 0 {
		d.ReconnectAfter = durationpb.New(reconnectAfter)
	}
	s.mu.Lock()
	if s.drain != nil {
		s.mu.Unlock()
		return
	}
	s.drain = d
	var streams []*serverStream
	if !s.closed {
		for st := range s.streams {
			streams = append(streams, st)
		}
	}
	// Added under mu: after Close has set closed, no Add can happen, so its
	// Wait is well-defined.
	s.drainers.Add(len(streams))
	s.mu.Unlock()

	if s.cfg.Health == nil {
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	s.health.SetServingStatus(TunnelServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	s.log.WithFields(logrus.Fields{"reason": reason, "streams": len(streams)}).Info("tunnel server draining")
	// One goroutine per stream: a Send can block on flow control, and one
	// stuck client must not delay the others. Each ends when its Send
	// returns, at the latest when the stream ends.
	for _, st := range streams {
		go func() {
			defer s.drainers.Done()
			st.sendDrain(d)
		}()
	}
}

// Streams returns the number of Connect streams being handled.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Shutdown drains the server (see Drain, reason "shutdown") and stops it
// gracefully: the listener closes at once, and Shutdown waits until every
// stream handler has returned. When ctx ends first, the handlers' contexts are
// cancelled, every connection is closed and Shutdown returns ctx.Err() after
// the handlers have returned.
func (s *Server) Shutdown(ctx context.Context) error {
	deadline, _ := ctx.Deadline()
	s.Drain("shutdown", deadline, 0)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		s.health.Shutdown()
		s.cancelStream()
		s.drainers.Wait()
		return nil
	case <-ctx.Done():
	}
	s.log.Warn("tunnel server shutdown timed out; closing the remaining connections")
	s.cancelStream()
	s.health.Shutdown()
	s.grpc.Stop()
	<-done
	s.handlers.Wait()
	s.drainers.Wait()
	return ctx.Err()
}

// Close stops the server at once: it closes the listener and every
// connection, cancels the handlers' contexts and waits for the handlers to
// return.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancelStream()
	s.health.Shutdown()
	s.grpc.Stop()
	s.handlers.Wait()
	s.drainers.Wait()
}

// tunnelService implements the gRPC tunnel service on top of OnStream.
type tunnelService struct {
	s *Server
}

func (t *tunnelService) Connect(stream ConnectServer) error {
	s := t.s
	info, ok := PeerFromContext(stream.Context())
	if !ok {
		return status.Error(codes.Unauthenticated, errNoTLSPeer.Error())
	}
	st := &serverStream{ConnectServer: stream}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "server is shutting down")
	case s.drain != nil:
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "server is draining; reconnect later")
	}
	s.streams[st] = struct{}{}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
		s.handlers.Done()
	}()

	// Headers tell the client the stream is accepted before any frame flows.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	// The handler's context ends only when the server is closed: it means
	// "shut down". A client that goes away shows as an error from Recv, so
	// that the handler can tell a lost tunnel from a shutdown.
	ctx, cancel := context.WithCancel(context.WithoutCancel(stream.Context()))
	defer cancel()
	stop := context.AfterFunc(s.streamCtx, cancel)
	defer stop()

	log := s.log.WithFields(logrus.Fields{"remote_addr": info.RemoteAddr.String(), "client": info.Identity()})
	log.Info("tunnel stream connected")
	start := time.Now()
	err := s.cfg.OnStream(ctx, info, st)
	st.end()
	log = log.WithField("duration", time.Since(start).Round(time.Millisecond).String())
	if err != nil && ctx.Err() == nil {
		log.WithError(err).Warn("tunnel stream ended with an error")
	} else {
		log.Info("tunnel stream ended")
	}
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.Aborted, err.Error())
	}
	return nil
}
