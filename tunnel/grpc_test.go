package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/pki"
	"smartproxy/tunnel/bufpool"
	"smartproxy/tunnel/transport"
)

// grpcOptions are the gRPC settings a tunnel is built with.
type grpcOptions struct {
	// streamWindow and connWindow set InitialWindowSize and
	// InitialConnWindowSize on both ends; zero leaves both unset (BDP
	// estimation on).
	streamWindow, connWindow int32
	// tuned adds ServerOptions and DialOptions (pooled codec without
	// zeroing, 256 KiB socket buffers); otherwise gRPC's defaults apply.
	tuned bool
}

// testPKI is a tunnel CA with a server and a client certificate.
type testPKI struct {
	ca             *pki.CA
	server, client *pki.Leaf
}

func newTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	ca, err := pki.NewCA("tunnel test CA")
	if err != nil {
		tb.Fatal(err)
	}
	server, err := ca.Issue(pki.Request{CommonName: "smartproxy-server", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	if err != nil {
		tb.Fatal(err)
	}
	client, err := ca.Issue(pki.Request{CommonName: "smartproxy-client", Usage: pki.UsageClient})
	if err != nil {
		tb.Fatal(err)
	}
	return &testPKI{ca: ca, server: server, client: client}
}

func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.server.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
	}
}

func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.client.TLS},
		RootCAs:      p.ca.Pool(),
		ServerName:   "127.0.0.1",
	}
}

// grpcTunnel is a client Mux and a server Mux over one real Connect stream
// with mutual TLS on 127.0.0.1.
type grpcTunnel struct {
	client, server *Mux
	// raw, when the tunnel was made with rawClient, is the client's stream
	// driven by hand instead of by a Mux.
	raw Stream
	ln  *recordingListener
}

// tunnelServer implements TunnelService with a Mux per stream.
type tunnelServer struct {
	cfg   Config
	muxes chan *Mux
}

func (s *tunnelServer) Connect(stream transport.ConnectServer) error {
	cfg := s.cfg
	cfg.Side = SideServer
	m, err := New(transport.ServerStream(stream), cfg)
	if err != nil {
		return err
	}
	s.muxes <- m
	return m.Run(stream.Context())
}

// newGRPCTunnel starts a gRPC server with a server Mux (serverCfg) and
// connects a client Mux (clientCfg) to it; if rawClient is set, the client
// stream is left to the test instead. Everything stops when the test ends.
func newGRPCTunnel(tb testing.TB, p *testPKI, opts grpcOptions, clientCfg, serverCfg Config, rawClient bool) *grpcTunnel {
	tb.Helper()
	var sopts []grpc.ServerOption
	copts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS()))}
	sopts = append(sopts, grpc.Creds(credentials.NewTLS(p.serverTLS())), grpc.MaxRecvMsgSize(8<<20))
	if opts.streamWindow != 0 {
		sopts = append(sopts, grpc.InitialWindowSize(opts.streamWindow), grpc.InitialConnWindowSize(opts.connWindow))
		copts = append(copts, grpc.WithInitialWindowSize(opts.streamWindow), grpc.WithInitialConnWindowSize(opts.connWindow))
	}
	if opts.tuned {
		sopts = append(sopts, transport.ServerOptions()...)
		copts = append(copts, transport.DialOptions()...)
	}
	srv := grpc.NewServer(sopts...)
	ts := &tunnelServer{cfg: serverCfg, muxes: make(chan *Mux, 1)}
	transport.RegisterService(srv, ts.Connect)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln := &recordingListener{Listener: inner}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })

	cc, err := grpc.NewClient(ln.Addr().String(), copts...)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := transport.Connect(ctx, cc)
	if err != nil {
		tb.Fatal(err)
	}
	gt := &grpcTunnel{ln: ln}
	if rawClient {
		gt.raw = transport.ClientStream(stream)
		// The server sees the stream only once the client sends.
		if err := gt.raw.Send(&tunnelv1.Frame{Kind: &tunnelv1.Frame_Hello{Hello: &tunnelv1.Hello{ClientId: "raw"}}}); err != nil {
			tb.Fatal(err)
		}
	} else {
		clientCfg.Side = SideClient
		gt.client, err = New(transport.ClientStream(stream), clientCfg)
		if err != nil {
			tb.Fatal(err)
		}
		wg.Go(func() { gt.client.Run(ctx) })
		// Open the stream towards the server now: a Ping makes the client
		// send a frame.
		wg.Go(func() { gt.client.Ping(ctx) })
	}
	select {
	case gt.server = <-ts.muxes:
	case <-time.After(20 * time.Second):
		tb.Fatal("server stream not established within 20s")
	}
	tb.Cleanup(func() {
		cancel()
		if gt.client != nil {
			<-gt.client.Done()
		}
		srv.Stop() // ends the server's stream, and with it its Mux
		<-gt.server.Done()
		cc.Close()
		wg.Wait()
	})
	return gt
}

// TestGRPCManySessionsOneStalled is the tunnel's acceptance test over real
// mutual TLS: 200 sessions on one stream, opened from both sides, move data
// in both directions (checked by SHA-256) while one session's reader reads
// nothing; every other session completes, and the stalled session holds at
// most one window. It runs with the recommended gRPC options.
func TestGRPCManySessionsOneStalled(t *testing.T) {
	const (
		sessions = 200
		window   = 256 << 10
		maxBuf   = 16 << 10
	)
	p := newTestPKI(t)
	cAcc, sAcc := newAcceptor(), newAcceptor()
	// The recommended gRPC options (ServerOptions, DialOptions).
	gt := newGRPCTunnel(t, p, grpcOptions{tuned: true}, Config{Window: window, Accept: cAcc.hook}, Config{Window: window, Accept: sAcc.hook}, false)
	ctx := context.Background()

	// The stalled session: the client writes three windows, the server
	// reads nothing until the others are done.
	stalledC, err := gt.client.Open(ctx, &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_INCOMING})
	if err != nil {
		t.Fatal(err)
	}
	stalledS := sAcc.next(t)
	stalledData, stalledSum := payload(999, 3*window/(maxBuf/2), maxBuf)
	stalledWrite := make(chan error, 1)
	go func() { stalledWrite <- writeAll(ctx, stalledC, stalledData) }()

	type result struct {
		what string
		id   uint64
		err  error
	}
	results := make(chan result, 4*sessions)
	for i := range sessions {
		// Half the sessions are opened by each side; c is the client's end.
		var c, s *Session
		if i%2 == 0 {
			if c, err = gt.client.Open(ctx, &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_INCOMING}); err != nil {
				t.Fatal(err)
			}
			s = sAcc.next(t)
		} else {
			if s, err = gt.server.Open(ctx, &tunnelv1.SessionOpen{Direction: tunnelv1.Direction_DIRECTION_OUTGOING}); err != nil {
				t.Fatal(err)
			}
			c = cAcc.next(t)
		}
		if c.ID() != s.ID() {
			t.Fatalf("session ids differ: client %d, server %d", c.ID(), s.ID())
		}
		up, upSum := payload(uint64(2*i), 12, maxBuf)
		down, downSum := payload(uint64(2*i+1), 12, maxBuf)
		go func() { results <- result{"client write", c.ID(), writeAll(ctx, c, up)} }()
		go func() { results <- result{"server write", s.ID(), writeAll(ctx, s, down)} }()
		go func() {
			got, _, err := readAll(ctx, s)
			if err == nil && got != upSum {
				err = errors.New("checksum mismatch")
			}
			results <- result{"server read", s.ID(), err}
		}()
		go func() {
			got, _, err := readAll(ctx, c)
			if err == nil && got != downSum {
				err = errors.New("checksum mismatch")
			}
			results <- result{"client read", c.ID(), err}
		}()
	}
	timeout := time.After(2 * time.Minute)
	for range 4 * sessions {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("session %d %s: %v", r.id, r.what, r.err)
			}
		case <-timeout:
			t.Fatal("sessions did not complete within 2 minutes")
		}
	}
	if t.Failed() {
		return
	}
	// Every other session has ended cleanly on both sides.
	eventually(t, "only the stalled session left", func() bool {
		return len(gt.client.Sessions()) == 1 && len(gt.server.Sessions()) == 1
	})

	// Everything the stalled writer could send has arrived: the window is
	// divided exactly between bytes buffered and credit not used.
	eventually(t, "stalled session settles", func() bool {
		ci := stalledC.Info()
		return ci.Queued == 0 && stalledS.Buffered()+ci.SendCredit == window
	})
	if got := stalledS.Buffered(); got > window || got <= window-maxBuf {
		t.Errorf("stalled session Buffered() = %d, want in (%d, %d]", got, window-maxBuf, window)
	}
	if got := stalledS.Info().RecvCredit; got != window-stalledS.Buffered() {
		t.Errorf("stalled session RecvCredit = %d, want window - buffered = %d", got, window-stalledS.Buffered())
	}
	select {
	case err := <-stalledWrite:
		t.Fatalf("stalled session's writer finished (%v) although nothing was read", err)
	default:
	}
	got, _, err := readAll(ctx, stalledS)
	if err != nil || got != stalledSum {
		t.Fatalf("stalled session after release: err %v, checksum match %v", err, got == stalledSum)
	}
	if err := <-stalledWrite; err != nil {
		t.Fatal(err)
	}
}

// TestGRPCCreditIgnored: a client that ignores credit, writing raw frames
// on a real stream, gets that session aborted with CREDIT_EXCEEDED while
// another session on the same tunnel keeps working.
func TestGRPCCreditIgnored(t *testing.T) {
	const window = 256 << 10
	p := newTestPKI(t)
	sAcc := newAcceptor()
	gt := newGRPCTunnel(t, p, grpcOptions{}, Config{}, Config{Window: window, Accept: sAcc.hook}, true)
	ctx := context.Background()
	recv := func() *tunnelv1.Frame {
		t.Helper()
		f, err := gt.raw.Recv()
		if err != nil {
			t.Fatalf("Recv() = %v", err)
		}
		return f
	}
	for _, id := range []uint64{1, 3} {
		if err := gt.raw.Send(openFrame(id, window)); err != nil {
			t.Fatal(err)
		}
		if o := recv().GetSessionOpened(); !o.GetAccepted() || o.GetSessionId() != id {
			t.Fatalf("SessionOpened = %v, want session %d accepted", o, id)
		}
	}
	greedy, good := sAcc.next(t), sAcc.next(t)

	// Three windows' worth on session 1, without waiting for credit.
	buf := make([]byte, DefaultMaxBufferSize)
	for range 3 * window / len(buf) {
		if err := gt.raw.Send(dataFrame(1, buf)); err != nil {
			t.Fatal(err)
		}
	}
	var abort *tunnelv1.SessionAbort
	for abort == nil {
		abort = recv().GetSessionAbort()
	}
	if abort.GetSessionId() != 1 || abort.GetReason() != tunnelv1.AbortReason_ABORT_REASON_CREDIT_EXCEEDED {
		t.Errorf("SessionAbort = %v, want session 1 CREDIT_EXCEEDED", abort)
	}
	waitDone(t, greedy)
	if ce := closeErr(t, greedy.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_CREDIT_EXCEEDED {
		t.Errorf("greedy session Err() = %v, want CREDIT_EXCEEDED", ce)
	}
	if got := greedy.Buffered(); got != 0 {
		t.Errorf("aborted session still buffers %d bytes", got)
	}

	// Session 3 still works both ways.
	if err := gt.raw.Send(dataFrame(3, []byte("SFID"))); err != nil {
		t.Fatal(err)
	}
	b, err := good.ReadBuffer(ctx)
	if err != nil || string(b) != "SFID" {
		t.Fatalf("ReadBuffer() = %q, %v, want SFID", b, err)
	}
	if err := good.WriteBuffer(ctx, []byte("SFPA")); err != nil {
		t.Fatal(err)
	}
	for {
		d := recv().GetSessionData()
		if d == nil {
			continue
		}
		if d.GetSessionId() != 3 || string(d.GetBuffer()) != "SFPA" {
			t.Errorf("SessionData = %v, want session 3 SFPA", d)
		}
		break
	}
	if err := gt.server.Err(); err != nil {
		t.Errorf("server Mux Err() = %v, want nil", err)
	}
}

// TestGRPCStreamLoss: when the connection breaks, every session on both
// sides ends with TUNNEL_LOST and both Muxes stop.
func TestGRPCStreamLoss(t *testing.T) {
	p := newTestPKI(t)
	sAcc := newAcceptor()
	gt := newGRPCTunnel(t, p, grpcOptions{}, Config{}, Config{Accept: sAcc.hook}, false)
	ctx := context.Background()
	var all []*Session
	for range 10 {
		c, err := gt.client.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, c, sAcc.next(t))
	}
	// Data in flight in one of them.
	if err := all[0].WriteBuffer(ctx, make([]byte, 50000)); err != nil {
		t.Fatal(err)
	}
	gt.breakConnections()
	for _, s := range all {
		waitDone(t, s)
		if ce := closeErr(t, s.Err()); ce.Reason != tunnelv1.AbortReason_ABORT_REASON_TUNNEL_LOST || ce.ESID != 5 {
			t.Errorf("session %d Err() = %+v, want TUNNEL_LOST with ESID 5", s.ID(), ce)
		}
	}
	for _, m := range []*Mux{gt.client, gt.server} {
		select {
		case <-m.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("Mux did not stop within 20s")
		}
		if m.Err() == nil {
			t.Error("Mux Err() = nil after the connection broke")
		}
	}
}

// recordingListener remembers accepted connections so that a test can
// break them.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// breakConnections closes the server side of every tunnel connection.
func (gt *grpcTunnel) breakConnections() {
	gt.ln.mu.Lock()
	defer gt.ln.mu.Unlock()
	for _, c := range gt.ln.conns {
		c.Close()
	}
}

// TestGRPCReleaseBuffer: over the real transport, received buffers come from
// the stream's pool (the Mux uses the stream's pool), and buffers released
// and reused carry exactly the data of the frame they were reused for, in
// both directions, for buffers of every size class a session uses, whether
// sent with WriteBuffer (copied) or WriteOwned (handed over, sent by gRPC
// from the buffer itself and reused once written).
func TestGRPCReleaseBuffer(t *testing.T) {
	p := newTestPKI(t)
	acc := newAcceptor()
	gt := newGRPCTunnel(t, p, grpcOptions{tuned: true}, Config{}, Config{Accept: acc.hook}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bufs, _ := payload(42, 300, DefaultMaxBufferSize)
	// writeOwned sends each buffer as a relay does: read into the session's memory, handed over.
	writeOwned := func(ctx context.Context, s *Session, bufs [][]byte) error {
		for _, b := range bufs {
			nb := s.NewBuffer(len(b))
			copy(nb, b)
			if err := s.WriteOwned(ctx, nb); err != nil {
				return err
			}
		}
		return s.CloseWrite()
	}
	for _, mode := range []struct {
		name  string
		write func(context.Context, *Session, [][]byte) error
	}{{"WriteBuffer", writeAll}, {"WriteOwned", writeOwned}} {
		c, err := gt.client.Open(ctx, &tunnelv1.SessionOpen{})
		if err != nil {
			t.Fatal(err)
		}
		s := acc.next(t)
		for _, dir := range []struct {
			name     string
			from, to *Session
		}{{"client to server", c, s}, {"server to client", s, c}} {
			errc := make(chan error, 1)
			go func() { errc <- mode.write(ctx, dir.from, bufs) }()
			for i, want := range bufs {
				got, err := dir.to.ReadBuffer(ctx)
				if err != nil {
					t.Fatalf("%s, %s: ReadBuffer %d: %v", mode.name, dir.name, i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s, %s: buffer %d: %d bytes differing from the %d sent", mode.name, dir.name, i, len(got), len(want))
				}
				dir.to.ReleaseBuffer(got)
			}
			if err := <-errc; err != nil {
				t.Fatalf("%s, %s: writing: %v", mode.name, dir.name, err)
			}
		}
	}
	for _, m := range []*Mux{gt.client, gt.server} {
		if _, ok := m.stream.(interface{ BufferPool() *bufpool.Pool }); !ok || m.pool != m.stream.(interface{ BufferPool() *bufpool.Pool }).BufferPool() {
			t.Errorf("the %v Mux does not use its stream's buffer pool", m.cfg.Side)
		}
		if m.owningSender() == nil {
			t.Errorf("the %v Mux copies data buffers for its stream, want them handed over (OwningSender)", m.cfg.Side)
		}
	}
}
