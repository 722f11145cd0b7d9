package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/backoff"
)

// ClientStreamHandler runs one tunnel stream, typically a multiplexer, until
// the stream or ctx ends. index is the stream's slot, 0 to Streams-1, to be
// sent as Hello.tunnel_index. ctx ends when the context given to Client.Run
// ends ("shut down"); a connection that dies shows as an error from the
// stream's Recv. When the handler returns, the connection is closed and the
// slot reconnects.
type ClientStreamHandler func(ctx context.Context, index int, peer PeerInfo, stream ConnectClient) error

// ClientConfig configures a [Client].
type ClientConfig struct {
	// Address is the server, "host[:port]"; the port defaults to 2878. An
	// IPv6 literal with a port needs brackets. Required.
	Address string
	// ServerName is the name the server certificate must carry. If empty,
	// the host of Address.
	ServerName string
	// SourceIP is the local address connections are made from (the
	// product's -o option). If empty, the system chooses.
	SourceIP string
	// Credentials are the client certificate and the tunnel CA. Required.
	Credentials Credentials
	// OnStream runs each established stream. Required.
	OnStream ClientStreamHandler
	// Streams is the number of parallel streams kept up, each on its own
	// connection. If zero, 1.
	Streams int
	// KeepaliveTime is how long a connection may be idle before the client
	// pings the server. If zero, 20s. It must be at least 10s (gRPC's
	// minimum) and not below the server's MinClientPingInterval.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long the client waits for the answer to a ping
	// before it closes the connection, which ends the stream. If zero, 10s.
	KeepaliveTimeout time.Duration
	// ConnectTimeout bounds one connection attempt: TCP, TLS and the server
	// accepting the stream. If zero, 15s.
	ConnectTimeout time.Duration
	// Backoff spaces the reconnects of each stream. Its zero value is the
	// documented default (0.5s base, 3s cap, reset after 10s up). Each
	// stream uses its own copy.
	Backoff backoff.Exponential
	// MaxMessageSize is the message size limit in both directions. If zero,
	// DefaultMaxMessageSize; otherwise at least MinMaxMessageSize.
	MaxMessageSize int
	// InitialWindowSize and InitialConnWindowSize: see ServerConfig.
	InitialWindowSize     int32
	InitialConnWindowSize int32
	// Logger receives connection events. If nil, nothing is logged.
	Logger logrus.FieldLogger
}

// Client keeps tunnel streams to one server up.
type Client struct {
	cfg    ClientConfig // immutable
	log    logrus.FieldLogger
	target string            // "host:port"; immutable
	source *net.TCPAddr      // nil for any; immutable
	opts   []grpc.DialOption // immutable
	active atomic.Int32      // established streams
}

// NewClient checks cfg and returns a client that is not yet running.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("transport: client needs credentials")
	}
	if cfg.OnStream == nil {
		return nil, errors.New("transport: client needs an OnStream handler")
	}
	host, port, err := splitHostPortDefault(cfg.Address, DefaultPort)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.Streams < 0 {
		return nil, fmt.Errorf("transport: negative stream count %d", cfg.Streams)
	}
	if cfg.Streams == 0 {
		cfg.Streams = 1
	}
	for name, d := range map[string]time.Duration{
		"KeepaliveTime": cfg.KeepaliveTime, "KeepaliveTimeout": cfg.KeepaliveTimeout, "ConnectTimeout": cfg.ConnectTimeout,
	} {
		if d < 0 {
			return nil, fmt.Errorf("transport: negative %s %v", name, d)
		}
	}
	cfg.KeepaliveTime = orDefault(cfg.KeepaliveTime, 20*time.Second)
	cfg.KeepaliveTimeout = orDefault(cfg.KeepaliveTimeout, 10*time.Second)
	cfg.ConnectTimeout = orDefault(cfg.ConnectTimeout, 15*time.Second)
	if cfg.KeepaliveTime < 10*time.Second {
		return nil, fmt.Errorf("transport: KeepaliveTime %v is below gRPC's minimum of 10s", cfg.KeepaliveTime)
	}
	if err := cfg.Backoff.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxMessageSize < MinMaxMessageSize {
		return nil, fmt.Errorf("transport: MaxMessageSize %d is below the minimum %d", cfg.MaxMessageSize, MinMaxMessageSize)
	}
	if err := checkWindows(cfg.InitialWindowSize, cfg.InitialConnWindowSize); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: loggerOrDiscard(cfg.Logger), target: net.JoinHostPort(host, port)}
	if cfg.SourceIP != "" {
		ip := net.ParseIP(cfg.SourceIP)
		if ip == nil {
			return nil, fmt.Errorf("transport: source IP %q is not an IP address", cfg.SourceIP)
		}
		c.source = &net.TCPAddr{IP: ip}
	}
	tlsCfg, err := ClientTLSConfig(cfg.Credentials, cfg.ServerName)
	if err != nil {
		return nil, err
	}
	c.opts = []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithAuthority(cfg.ServerName),
		grpc.WithContextDialer(c.dial),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveTime,
			Timeout:             cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.MaxMessageSize),
			grpc.MaxCallSendMsgSize(cfg.MaxMessageSize),
		),
	}
	stream, conn := flowWindows(cfg.InitialWindowSize, cfg.InitialConnWindowSize)
	c.opts = append(c.opts, grpc.WithInitialWindowSize(stream), grpc.WithInitialConnWindowSize(conn))
	c.opts = append(c.opts, DialOptions()...)
	return c, nil
}

// dial opens the TCP connection, from the source IP if one is configured.
func (c *Client) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: c.source}
	if c.source != nil {
		// A bound source address and a host name resolving to the other
		// family cannot work; keep to the source's family.
		network := "tcp6"
		if c.source.IP.To4() != nil {
			network = "tcp4"
		}
		return d.DialContext(ctx, network, addr)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// Active returns the number of streams currently established.
func (c *Client) Active() int { return int(c.active.Load()) }

// Run keeps Streams streams up until ctx ends, then returns ctx.Err() once
// every stream and handler has ended. Each stream reconnects with its own
// backoff; after a Drain frame from the server the stream's replacement is
// dialled (after the frame's reconnect_after, else the backoff delay) while
// the draining stream runs on until the server ends it.
func (c *Client) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range c.cfg.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.slot(ctx, i)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// connEvent is what a connection attempt reports to its slot.
type connEvent struct {
	drain *tunnelv1.Drain // set for a Drain frame; the stream still runs
	// set when the attempt ended:
	ended     bool
	connected bool          // the stream was established
	lasted    time.Duration // how long it was established
	err       error
}

// slot keeps stream index up until ctx ends.
func (c *Client) slot(ctx context.Context, index int) {
	bo := c.cfg.Backoff // own copy, owned by this loop
	var conns sync.WaitGroup
	defer conns.Wait()
	log := c.log.WithFields(logrus.Fields{"server": c.target, "tunnel_index": index})
	for {
		events := make(chan connEvent, 2) // at most one drain and one end
		conns.Add(1)
		go func() {
			defer conns.Done()
			c.connect(ctx, index, log, events)
		}()
		var ev connEvent
		select {
		case ev = <-events:
		case <-ctx.Done():
			return
		}
		var delay time.Duration
		switch {
		case ev.drain != nil:
			if ra := ev.drain.GetReconnectAfter(); ra != nil && ra.AsDuration() > 0 {
				delay = ra.AsDuration()
			} else {
				delay = bo.Next()
			}
			log.WithFields(logrus.Fields{"reason": ev.drain.GetReason(), "reconnect_in": delay.String()}).Info("tunnel server is draining; dialling a replacement stream")
		default:
			if ev.connected {
				bo.Connected(ev.lasted)
			}
			delay = bo.Next()
			if ctx.Err() != nil {
				return
			}
			log.WithError(ev.err).WithFields(logrus.Fields{"reconnect_in": delay.String(), "attempt": bo.Attempt()}).Warn("tunnel stream down")
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// connect makes one connection, runs the handler on its stream and reports to
// events.
func (c *Client) connect(ctx context.Context, index int, log logrus.FieldLogger, events chan<- connEvent) {
	ev := connEvent{ended: true}
	defer func() { events <- ev }()

	cc, err := grpc.NewClient("passthrough:///"+c.target, c.opts...)
	if err != nil {
		ev.err = fmt.Errorf("transport: %w", err)
		return
	}
	defer cc.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(c.cfg.ConnectTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	stream, err := Connect(sctx, cc)
	if err == nil {
		err = waitAccepted(stream)
	}
	if !timer.Stop() || timedOut.Load() {
		err = fmt.Errorf("transport: connecting to %s took longer than %v", c.target, c.cfg.ConnectTimeout)
	}
	if err != nil {
		ev.err = connectError(err)
		return
	}
	info := PeerInfo{}
	if p, ok := peer.FromContext(stream.Context()); ok {
		info.RemoteAddr = p.Addr
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			info.Certificate = ti.State.PeerCertificates[0]
		}
	}
	var drainOnce sync.Once
	wrapped := &clientStream{ConnectClient: stream, onDrain: func(d *tunnelv1.Drain) {
		drainOnce.Do(func() { events <- connEvent{drain: d} })
	}}

	start := time.Now()
	c.active.Add(1)
	log.WithFields(logrus.Fields{"remote_addr": addrString(info.RemoteAddr), "server_identity": info.Identity()}).Info("tunnel stream connected")
	err = c.cfg.OnStream(sctx, index, info, wrapped)
	c.active.Add(-1)
	ev.connected, ev.lasted = true, time.Since(start)
	if err == nil {
		err = errors.New("stream handler returned")
	}
	ev.err = err
}

// waitAccepted waits for the server's response headers, which it sends once
// it accepted the stream. A refusal arrives as a trailers-only response: no
// headers, and the status on the next receive.
func waitAccepted(stream grpc.ClientStream) error {
	md, err := stream.Header()
	if err != nil {
		return err
	}
	if md == nil {
		if err := stream.RecvMsg(new(tunnelv1.ConnectResponse)); err != nil {
			return err
		}
		return errors.New("stream ended without headers")
	}
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// connectError keeps the gRPC status (it carries the server's refusal) but
// names the step.
func connectError(err error) error {
	return fmt.Errorf("transport: open tunnel stream: %w", err)
}

// clientStream reports Drain frames as they are received; every frame is
// passed on to the handler unchanged.
type clientStream struct {
	ConnectClient
	onDrain func(*tunnelv1.Drain)
}

// Recv receives the next message.
func (s *clientStream) Recv() (*tunnelv1.ConnectResponse, error) {
	m, err := s.ConnectClient.Recv()
	if err == nil {
		if d := m.GetFrame().GetDrain(); d != nil {
			s.onDrain(d)
		}
	}
	return m, err
}
