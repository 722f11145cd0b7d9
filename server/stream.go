package server

import (
	"context"
	"errors"
	"fmt"
	"smartproxy/internal/event"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

// maxControlBacklog bounds the bytes of control frames waiting for the tunnel's control
// goroutine beyond the chunked CRLs of one snapshot; a client that floods more is cut off.
const maxControlBacklog = 16 << 20

// handleStream runs one Connect stream: a multiplexer, and a control goroutine that expects
// Hello, answers Welcome and then handles configuration, license and liveness frames in order.
// Sessions opened by the client are outgoing sessions (serveOutgoing). It returns when the
// stream has ended and everything it started has exited.
func (s *Server) handleStream(ctx context.Context, peer transport.PeerInfo, stream transport.ConnectServer) error {
	tc := &tunnelConn{
		s:           s,
		peer:        peer,
		connectedAt: s.now(),
		log:         s.log.WithFields(logrus.Fields{"tunnel_peer": peer.String()}),
		asm:         assembler{maxBytes: s.cfg.MaxCRLBytes},
	}
	q := newControlQueue(s.cfg.MaxCRLBytes + maxControlBacklog)
	mux, err := tunnel.New(transport.ServerStream(stream), tunnel.Config{
		Side:    tunnel.SideServer,
		Window:  int(s.cfg.SessionWindow),
		Logger:  tc.log,
		Control: q.push,
		Metrics: tunnelMetrics{m: s.metrics, tc: tc},
		Accept:  func(sess *tunnel.Session) { s.acceptOutgoing(tc, sess) },
	})
	if err != nil {
		return status.Errorf(codes.Internal, "tunnel: %v", err)
	}
	tc.mux = mux

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		runErr = mux.Run(runCtx)
		cancel()
	}()
	go func() {
		defer wg.Done()
		defer cancel()
		tc.controlLoop(runCtx, q)
	}()
	wg.Wait()
	if errors.Is(runErr, context.Canceled) || errors.Is(runErr, tunnel.ErrClosed) {
		return nil
	}
	return runErr
}

// controlLoop waits for Hello, answers Welcome, registers the tunnel and handles control
// frames until ctx ends or the client breaks the protocol.
func (tc *tunnelConn) controlLoop(ctx context.Context, q *controlQueue) {
	s := tc.s
	helloCtx, cancelHello := context.WithTimeout(ctx, s.cfg.HelloTimeout)
	f, err := q.pop(helloCtx)
	cancelHello()
	if err != nil {
		if ctx.Err() == nil {
			tc.log.WithError(err).Warn("tunnel: no Hello from the client; closing the stream")
		}
		return
	}
	hello := f.GetHello()
	if hello == nil {
		tc.log.WithField("frame", fmt.Sprintf("%T", f.GetKind())).Warn("tunnel: the first frame is not Hello; closing the stream")
		return
	}
	tc.clientID = hello.GetClientId()
	if tc.clientID == "" {
		tc.clientID = tc.peer.Identity()
	}
	tc.index = hello.GetTunnelIndex()
	tc.log = tc.log.WithFields(logrus.Fields{"client_id": tc.clientID, "tunnel_index": tc.index})
	if v := hello.GetProtocolVersion(); v != protocolVersion {
		tc.log.WithField("protocol_version", v).Warn("tunnel: the client speaks another protocol version; answering with version 1")
	}
	// Sessions open only after Welcome, so the writer batches from the first SessionData on.
	tc.mux.UsePeerCapabilities(hello.GetCapabilities())
	if err := tc.sendControl(ctx, s.welcome(uint32(tc.mux.Window()), hello.GetCapabilities())); err != nil {
		tc.log.WithError(err).Warn("tunnel: cannot send Welcome")
		return
	}
	s.addTunnel(tc)
	s.emitOn(tc, event.Event{Name: EventTunnelConnected, Severity: infoSeverity, RemoteAddr: tc.peer.RemoteAddr.String(),
		Message: "client tunnel connected"}.
		With("client_id", tc.clientID).With("tunnel_index", fmt.Sprint(tc.index)).
		With("client_version", hello.GetSoftwareVersion()).With("client_config_version", fmt.Sprint(hello.GetConfigVersion())))
	defer func() {
		s.removeTunnel(tc)
		s.emit(event.Event{Name: EventTunnelDisconnected, Severity: infoSeverity, RemoteAddr: tc.peer.RemoteAddr.String(),
			Message: "client tunnel disconnected"}.With("client_id", tc.clientID).With("tunnel_index", fmt.Sprint(tc.index)).
			With("connected_for", s.now().Sub(tc.connectedAt).Round(time.Second).String()))
	}()
	for {
		f, err := q.pop(ctx)
		if err != nil {
			if !errors.Is(err, ctx.Err()) {
				tc.log.WithError(err).Error("tunnel: closing the stream")
			}
			return
		}
		tc.control(ctx, f)
	}
}

// controlQueue hands control frames from the multiplexer's reader, which must never block, to
// the tunnel's control goroutine, in order. It is bounded by bytes: a client that sends more
// than maxBytes of control frames faster than they are handled is cut off.
type controlQueue struct {
	maxBytes int64

	mu       sync.Mutex
	frames   []*tunnelv1.Frame
	bytes    int64
	overflow bool
	ready    chan struct{} // capacity 1: a frame was pushed
}

func newControlQueue(maxBytes int64) *controlQueue {
	return &controlQueue{maxBytes: maxBytes, ready: make(chan struct{}, 1)}
}

// push queues f without blocking.
func (q *controlQueue) push(f *tunnelv1.Frame) {
	n := int64(len(f.GetConfigChunk().GetData())) + 1024
	q.mu.Lock()
	if q.overflow || q.bytes+n > q.maxBytes {
		q.overflow = true
		q.frames = nil
	} else {
		q.frames = append(q.frames, f)
		q.bytes += n
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// errControlOverflow ends a tunnel whose client floods control frames.
var errControlOverflow = errors.New("the client sent control frames faster than they can be handled")

// pop returns the next frame, waiting until one arrives or ctx ends.
func (q *controlQueue) pop(ctx context.Context) (*tunnelv1.Frame, error) {
	for {
		q.mu.Lock()
		if q.overflow {
			q.mu.Unlock()
			return nil, errControlOverflow
		}
		if len(q.frames) > 0 {
			f := q.frames[0]
			q.frames[0] = nil
			q.frames = q.frames[1:]
			q.bytes -= int64(len(f.GetConfigChunk().GetData())) + 1024
			q.mu.Unlock()
			return f, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
