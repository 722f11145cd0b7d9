package transport

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/protobuf/proto"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel/bufpool"
)

// msgStream is what both ends of a gRPC stream have in common.
type msgStream interface {
	SendMsg(m any) error
	RecvMsg(m any) error
}

// envelope is a Connect message: ConnectRequest or ConnectResponse.
type envelope interface {
	proto.Message
	GetFrame() *tunnelv1.Frame
}

// Stream adapts one end of a Connect stream to the frames a tunnel.Mux sends
// and receives: frames go out wrapped in one kind of Connect message and come
// in unwrapped from the other. It implements tunnel.Stream; ServerStream and
// ClientStream make one. Send and Recv follow tunnel.Stream's rules: one
// goroutine sends, another receives.
//
// Recv reuses the SessionData frame it returned last time (not its buffer,
// which belongs to the caller), so that receiving data allocates only the
// buffer; every other frame is new.
type Stream struct {
	s   msgStream
	out envelope              // reused by Send
	set func(*tunnelv1.Frame) // sets out's frame
	own *owned                // reused by SendOwned
	in  envelope              // reused by Recv while it carries SessionData
	new func() envelope       // a fresh incoming message
	// data is the SessionData frame Recv returned last, for reuse.
	data *tunnelv1.Frame
	// pool is where the codec takes received exchange buffers from; the Mux
	// uses it too (BufferPool), so that buffers its users release come back.
	pool bufpool.Pool

	// control attaches the Mux's SendControl to the transport's server
	// stream, which sends Drain frames with it (nil on the client side).
	control func(send func(context.Context, *tunnelv1.Frame) error)
}

// ServerStream adapts the server end of a Connect stream (the stream a
// ServerStreamHandler receives).
func ServerStream(s ConnectServer) *Stream {
	out := new(tunnelv1.ConnectResponse)
	st := &Stream{s: s, out: out, set: func(f *tunnelv1.Frame) { out.Frame = f }}
	st.own = &owned{envelope: out, pool: &st.pool}
	st.new = func() envelope { return pooledRequest{new(tunnelv1.ConnectRequest), &st.pool} }
	if ss, ok := s.(*serverStream); ok {
		st.control = ss.attach
	}
	return st
}

// ClientStream adapts the client end of a Connect stream (the stream a
// ClientStreamHandler receives).
func ClientStream(s ConnectClient) *Stream {
	out := new(tunnelv1.ConnectRequest)
	st := &Stream{s: s, out: out, set: func(f *tunnelv1.Frame) { out.Frame = f }}
	st.own = &owned{envelope: out, pool: &st.pool}
	st.new = func() envelope { return pooledResponse{new(tunnelv1.ConnectResponse), &st.pool} }
	return st
}

// Send sends one frame. It does not keep f.
func (s *Stream) Send(f *tunnelv1.Frame) error {
	s.set(f)
	err := s.s.SendMsg(s.out)
	s.set(nil)
	return err
}

// SendOwned sends a SessionData frame whose Buffer is *bufs[0] and whose
// MoreBuffers are the rest of bufs, buffers from BufferPool, and takes the
// buffers over (tunnel.OwningSender): the codec passes them to gRPC as the
// message's payload instead of copying them, and gRPC puts them back into
// the pool once it has written them.
func (s *Stream) SendOwned(f *tunnelv1.Frame, bufs []*[]byte) error {
	s.set(f)
	s.own.bufs = bufs
	err := s.s.SendMsg(s.own)
	s.own.bufs = nil
	s.set(nil)
	return err
}

// Recv receives the next frame.
func (s *Stream) Recv() (*tunnelv1.Frame, error) {
	if s.in == nil {
		s.in = s.new()
	}
	// The codec decodes SessionData into the frame already in the message
	// when that is a SessionData frame; any other message replaces it.
	setFrame(s.in, s.data)
	if err := s.s.RecvMsg(s.in); err != nil {
		return nil, err
	}
	f := s.in.GetFrame()
	if f == nil {
		return nil, errNoFrame
	}
	if _, ok := f.GetKind().(*tunnelv1.Frame_SessionData); ok {
		s.data = f
	} else {
		// The caller may keep control frames: the next Recv starts afresh.
		s.in = nil
	}
	return f, nil
}

// AttachControl is called by tunnel.New with the Mux's SendControl: the
// transport server's Drain frames go through the Mux's writer, the only
// sender on the stream.
func (s *Stream) AttachControl(send func(context.Context, *tunnelv1.Frame) error) {
	if s.control != nil {
		s.control(send)
	}
}

// BufferPool returns the pool received exchange buffers come from. tunnel.New
// makes it the Mux's pool, so that Session.ReleaseBuffer returns them here.
func (s *Stream) BufferPool() *bufpool.Pool { return &s.pool }

// pooledRequest and pooledResponse are the Connect messages Recv receives
// into: the message itself (any protobuf codec can decode into the embedded
// message) and, for the tunnel's codec, the pool for the exchange buffer.
type pooledRequest struct {
	*tunnelv1.ConnectRequest
	pool *bufpool.Pool
}

type pooledResponse struct {
	*tunnelv1.ConnectResponse
	pool *bufpool.Pool
}

// owned is the Connect message SendOwned sends: the stream's outgoing message
// (which any protobuf codec can encode) and, for the tunnel's codec, the
// pooled exchange buffers it takes over and the pool they return to.
type owned struct {
	envelope
	bufs []*[]byte // set for one SendMsg; the codec takes them and clears it
	pool *bufpool.Pool
}

// setFrame puts f into a Connect message.
func setFrame(m envelope, f *tunnelv1.Frame) {
	switch m := m.(type) {
	case pooledRequest:
		m.Frame = f
	case pooledResponse:
		m.Frame = f
	}
}

// errNoFrame is returned by Recv for a message without a frame.
var errNoFrame = errors.New("transport: Connect message without a frame")

// serverStream is the stream the server hands to OnStream. Drain frames
// reach it through the Mux the handler runs on it (see Stream.AttachControl);
// the transport never calls Send itself, so the Mux's writer stays the only
// sender (gRPC forbids concurrent Send).
type serverStream struct {
	ConnectServer
	mu      sync.Mutex
	control func(context.Context, *tunnelv1.Frame) error // guarded by mu; the Mux's SendControl once attached
	drain   *tunnelv1.Drain                              // guarded by mu; a Drain waiting for a Mux
	sends   sync.WaitGroup                               // Drain frames being sent
}

// attach records the Mux's SendControl and sends a Drain that came before it.
func (s *serverStream) attach(send func(context.Context, *tunnelv1.Frame) error) {
	s.mu.Lock()
	s.control = send
	d := s.drain
	s.drain = nil
	if d != nil {
		s.sends.Add(1)
	}
	s.mu.Unlock()
	if d != nil {
		// attach runs in tunnel.New, before the Mux's writer: do not wait for it.
		go func() {
			defer s.sends.Done()
			send(s.Context(), drainFrame(d))
		}()
	}
}

// sendDrain hands a Drain frame to the Mux's writer and waits until it has
// been sent, the Mux has stopped or the stream has ended. Without a Mux yet,
// the frame waits for one.
func (s *serverStream) sendDrain(d *tunnelv1.Drain) {
	s.mu.Lock()
	send := s.control
	if send == nil {
		s.drain = d
	}
	s.mu.Unlock()
	if send != nil {
		// A failed send means the stream is ending anyway.
		send(s.Context(), drainFrame(d))
	}
}

// end waits for Drain frames being sent; each send ends once the Mux has
// stopped, which it has when the handler returns.
func (s *serverStream) end() { s.sends.Wait() }

func drainFrame(d *tunnelv1.Drain) *tunnelv1.Frame {
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_Drain{Drain: d}}
}
