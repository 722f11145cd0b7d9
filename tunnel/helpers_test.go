package tunnel

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// errPipeClosed is what a closed pipe end returns.
var errPipeClosed = errors.New("pipe closed")

// pipeEnd is one end of an in-memory Stream pair. Frames are marshalled on
// Send and unmarshalled on Recv, as on a real stream, so neither side shares
// memory with the other. The channel capacity stands in for flow control: a
// Send blocks while the peer has that many frames unread.
type pipeEnd struct {
	in     <-chan []byte
	out    chan<- []byte
	closed chan struct{}
	once   *sync.Once

	mu   sync.Mutex
	drop func(*tunnelv1.Frame) bool // frames for which drop is true are not sent
	gate chan struct{}              // if not nil, Send waits for a token
	// gateWaiting, if not nil, receives a token when Send starts waiting
	// for the gate.
	gateWaiting chan struct{}
	sent        []*tunnelv1.Frame // every frame sent, if record is set
	rec         bool

	// sending counts calls of Send in progress; overlapped is set when two
	// overlapped, which the Stream contract forbids (checked by start).
	sending    atomic.Int32
	overlapped atomic.Bool
}

// newPipe returns two connected Stream ends.
func newPipe(capacity int) (a, b *pipeEnd) {
	ab := make(chan []byte, capacity)
	ba := make(chan []byte, capacity)
	closed := make(chan struct{})
	once := new(sync.Once)
	return &pipeEnd{in: ba, out: ab, closed: closed, once: once},
		&pipeEnd{in: ab, out: ba, closed: closed, once: once}
}

// close closes both ends.
func (p *pipeEnd) close() { p.once.Do(func() { close(p.closed) }) }

func (p *pipeEnd) Send(f *tunnelv1.Frame) error {
	if p.sending.Add(1) > 1 {
		p.overlapped.Store(true)
	}
	defer p.sending.Add(-1)
	p.mu.Lock()
	drop, gate, rec, waiting := p.drop, p.gate, p.rec, p.gateWaiting
	p.mu.Unlock()
	if gate != nil {
		if waiting != nil {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}
		select {
		case <-gate:
		case <-p.closed:
			return errPipeClosed
		}
	}
	if drop != nil && drop(f) {
		return nil
	}
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	if rec {
		c := new(tunnelv1.Frame)
		if err := proto.Unmarshal(b, c); err != nil {
			return err
		}
		p.mu.Lock()
		p.sent = append(p.sent, c)
		p.mu.Unlock()
	}
	select {
	case p.out <- b:
		return nil
	case <-p.closed:
		return errPipeClosed
	}
}

func (p *pipeEnd) Recv() (*tunnelv1.Frame, error) {
	select {
	case b := <-p.in:
		f := new(tunnelv1.Frame)
		if err := proto.Unmarshal(b, f); err != nil {
			return nil, err
		}
		return f, nil
	case <-p.closed:
		return nil, errPipeClosed
	}
}

// recvTimeout receives one frame within a generous bound, for tests that
// drive one end by hand.
func (p *pipeEnd) recvTimeout(t *testing.T) *tunnelv1.Frame {
	t.Helper()
	type res struct {
		f   *tunnelv1.Frame
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := p.Recv()
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Recv() = %v, want a frame", r.err)
		}
		return r.f
	case <-time.After(10 * time.Second):
		p.close() // ends the goroutine above
		t.Fatal("no frame within 10s")
		return nil
	}
}

// recvKind receives frames until one of kind T arrives (skipping Ping,
// Pong, SessionWindow and SessionSync, which may come at any time unless
// asked for).
func recvUntil[T any](t *testing.T, p *pipeEnd, want func(*tunnelv1.Frame) (T, bool)) T {
	t.Helper()
	for range 1000 {
		f := p.recvTimeout(t)
		if v, ok := want(f); ok {
			return v
		}
	}
	t.Fatal("wanted frame not among 1000 frames")
	var zero T
	return zero
}

// running is a Mux with its Run goroutine.
type running struct {
	*Mux
	cancel context.CancelFunc
	runErr chan error
}

// wait returns Run's result, failing the test if it does not come in time.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.runErr:
		r.runErr <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s")
		return nil
	}
}

// start runs a Mux over s until the test ends. ctx cancellation closes the
// pipe (a real stream's Recv ends with its context).
func start(t *testing.T, s Stream, onCancel func(), cfg Config) *running {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	m, err := New(s, cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, onCancel)
	r := &running{Mux: m, cancel: cancel, runErr: make(chan error, 1)}
	go func() { r.runErr <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.wait(t)
		stop()
		if p, ok := s.(*pipeEnd); ok && p.overlapped.Load() {
			t.Error("the Mux called Send while another Send was in progress")
		}
	})
	return r
}

// pair starts a client and a server Mux over an in-memory pipe.
func pair(t *testing.T, client, server Config) (c, s *running, pc, ps *pipeEnd) {
	t.Helper()
	pc, ps = newPipe(64)
	client.Side, server.Side = SideClient, SideServer
	c = start(t, pc, pc.close, client)
	s = start(t, ps, ps.close, server)
	return c, s, pc, ps
}

// testLogger logs through t at debug level.
func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetLevel(logrus.DebugLevel)
	if !testing.Verbose() {
		l.SetOutput(io.Discard)
	}
	return l
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// acceptor collects accepted sessions.
type acceptor struct {
	ch     chan *Session
	reject bool
}

func newAcceptor() *acceptor { return &acceptor{ch: make(chan *Session, 1024)} }

// hook accepts (or rejects) every session on the dispatcher goroutine; this
// does not block.
func (a *acceptor) hook(s *Session) {
	if a.reject {
		s.Reject(tunnelv1.AbortReason_ABORT_REASON_REFUSED, 3, "partner unknown")
		return
	}
	if err := s.Accept(&tunnelv1.SessionOpened{RemoteAddr: "127.0.0.1:6619"}); err != nil {
		panic(err)
	}
	a.ch <- s
}

// next returns the next accepted session.
func (a *acceptor) next(t testing.TB) *Session {
	t.Helper()
	select {
	case s := <-a.ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no session accepted within 10s")
		return nil
	}
}

// payload returns n deterministic buffers of sizes in [1, maxSize] and the
// SHA-256 of their concatenation.
func payload(seed uint64, n, maxSize int) ([][]byte, [32]byte) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := sha256.New()
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 1+r.IntN(maxSize))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		out[i] = b
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return out, sum
}

// writeAll writes every buffer, then half-closes.
func writeAll(ctx context.Context, s *Session, bufs [][]byte) error {
	for _, b := range bufs {
		if err := s.WriteBuffer(ctx, b); err != nil {
			return err
		}
	}
	return s.CloseWrite()
}

// readAll reads until io.EOF and returns the SHA-256 of everything read and
// the number of buffers.
func readAll(ctx context.Context, s *Session) ([32]byte, int, error) {
	h := sha256.New()
	n := 0
	for {
		b, err := s.ReadBuffer(ctx)
		if err == io.EOF {
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			return sum, n, nil
		}
		if err != nil {
			return [32]byte{}, n, err
		}
		h.Write(b)
		n++
	}
}

// waitDone waits for the session to end.
func waitDone(t *testing.T, s *Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("session %d did not end within 10s", s.ID())
	}
}

// closeErr returns err as *CloseError or fails.
func closeErr(t *testing.T, err error) *CloseError {
	t.Helper()
	var ce *CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want *CloseError", err, err)
	}
	return ce
}

// eventually polls cond until it holds, failing after a generous bound.
// It is for states reached asynchronously, never for timing assertions.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 20s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// frameOf wraps a kind in a Frame.
func dataFrame(id uint64, b []byte, more ...[]byte) *tunnelv1.Frame {
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionData{SessionData: &tunnelv1.SessionData{SessionId: id, Buffer: b, MoreBuffers: more}}}
}

func openFrame(id uint64, window uint32) *tunnelv1.Frame {
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpen{SessionOpen: &tunnelv1.SessionOpen{
		SessionId: id, Direction: tunnelv1.Direction_DIRECTION_INCOMING, PartnerOdetteId: "O0013000000TEST", InitialWindow: window,
	}}}
}

func getOpened(f *tunnelv1.Frame) (*tunnelv1.SessionOpened, bool) {
	o := f.GetSessionOpened()
	return o, o != nil
}

func getAbort(f *tunnelv1.Frame) (*tunnelv1.SessionAbort, bool) {
	a := f.GetSessionAbort()
	return a, a != nil
}
