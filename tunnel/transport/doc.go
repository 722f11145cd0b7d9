// Package transport carries tunnel streams between smartproxy-client and
// smartproxy-server over gRPC with mutual TLS.
//
// The server side ([Server]) listens on the tunnel port (2878 by default),
// accepts only client certificates issued by the tunnel CA (optionally only
// listed identities), and serves the tunnel service's Connect stream, gRPC
// health and server reflection. Every stream is handed to a hook that runs the
// multiplexer on it. The client side ([Client]) dials the server, trusting only
// the tunnel CA for the server certificate, keeps N streams up and reconnects
// with full-jitter exponential backoff (internal/backoff).
//
// Certificates come from a [CertSource] that reloads changed files; TLS
// configurations look the certificate and the CA pool up on every handshake,
// so rotated files are used by new connections while established tunnels keep
// running.
//
// # Running a multiplexer per stream
//
// The daemons run a tunnel.Mux on every stream the hooks receive:
//
//	srv, err := transport.NewServer(transport.ServerConfig{
//		Credentials: certSource,
//		OnStream: func(ctx context.Context, peer transport.PeerInfo, s ConnectServer) error {
//			mux, err := tunnel.New(tunnel.ServerStream(s), tunnel.Config{Side: tunnel.SideServer, Accept: accept})
//			if err != nil {
//				return err
//			}
//			return mux.Run(ctx)
//		},
//	})
//
// When the connection under a stream dies (closed, reset, or silent until
// keepalive gives up), the stream's Recv fails, the Mux ends every session
// with ABORT_REASON_TUNNEL_LOST and the hook returns; the client then dials a
// new connection. [Server.Drain] sends a Drain frame on every stream itself
// (Send is serialised with the handler's writer); the client reacts to it by
// dialling a replacement stream and passes the frame on to its handler.
//
// # Security events
//
// A refused tunnel client is logged once per attempt, at WARN level, with
// event=tunnel_client_rejected, remote_addr and reason (one of the Reject*
// constants). This covers TLS handshake failures (no client certificate, a
// certificate from another CA, an expired certificate, a TLS version below
// 1.3) as well as an identity missing from the allow-list.
//
// # gRPC settings and why
//
// Keepalive: the client pings every 20s (ClientConfig.KeepaliveTime) on an
// idle connection and gives up after 10s without an answer, so a dead path
// (firewall state dropped, cable pulled, DMZ host gone) is noticed within about
// 30s even when no frame is in flight; the server's enforcement policy permits
// pings every 10s, with or without active streams, so those pings are never
// answered with GOAWAY "too_many_pings". The server itself pings an idle client
// every 30s and drops it after 10s more, which frees a stream whose client
// vanished. Both bounds are well below the idle timeouts of common firewalls
// (typically 5 minutes or more for established TCP), so the tunnel's NAT and
// firewall state stays alive too.
//
// Flow-control windows: the HTTP/2 stream and connection windows are fixed,
// [DefaultFlowWindow] (1 MiB) unless ServerConfig/ClientConfig
// InitialWindowSize and InitialConnWindowSize are both given (one without the
// other is a configuration error). grpc-go's bandwidth-delay estimation, which
// any fixed window switches off, measured the link with PINGs and adjusted the
// windows with WINDOW_UPDATEs several times per exchange buffer on the
// tunnel's one busy stream, a cost in CPU per byte that the fixed windows do
// not have. Per-session backpressure does not rely on HTTP/2 windows at all:
// the tunnel's own credit windows bound every session, so the HTTP/2 windows
// only need to keep the single stream busy. Measurements of the options are
// in the tunnel benchmarks (docs/benchmarks.md).
//
// Message size: gRPC's default limit of 4 MiB is replaced by 8 MiB
// ([DefaultMaxMessageSize]) in both directions. The largest OFTP2 exchange
// buffer is 99,999 bytes and a CRL travels in chunks of at most 1 MiB; the
// margin is for a configuration snapshot with many partners and CA
// certificates.
package transport
