package tunnel

import (
	"context"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Stream is one bidirectional stream of frames, as the Mux uses it.
// tunnel/transport adapts the gRPC Connect stream to it; tests use in-memory
// pipes.
//
// The Mux calls Send from one goroutine and Recv from another, never Send or
// Recv concurrently with itself. Send must not retain f or anything it refers
// to after it returns (the Mux reuses frames and buffers; gRPC streams encode
// the message before Send returns). Recv may reuse a SessionData frame it
// returned for a later call, but not the frame's buffer, which the Mux hands
// to the session's reader; every other frame must be new, since the Mux hands
// it to Config.Control. Recv must return an error once the stream is dead, and
// also soon after the context given to Mux.Run ends: use the stream's own
// context there (client: the context passed to Connect; server: the handler's
// stream context, which ends when the client goes away or the gRPC server
// stops). After Send has returned an error, Recv must fail too.
type Stream interface {
	// Send sends one frame.
	Send(f *tunnelv1.Frame) error
	// Recv receives the next frame.
	Recv() (*tunnelv1.Frame, error)
}

// ControlAttacher is implemented by a Stream whose owner has frames of its
// own to send on it (the transport server's Drain). New passes it the Mux's
// SendControl, so that those frames go through the Mux's writer, the only
// goroutine that calls Send.
type ControlAttacher interface {
	AttachControl(send func(ctx context.Context, f *tunnelv1.Frame) error)
}

// OwningSender is implemented by a Stream that can send a SessionData frame
// without copying its buffers before SendOwned returns: tunnel/transport
// hands the buffers themselves to gRPC, which writes them to the connection
// later. f is a SessionData frame whose Buffer is *bufs[0] and whose
// MoreBuffers are the rest of bufs, in order, all from the stream's
// BufferPool; SendOwned takes the buffers over and puts them back into that
// pool once they have been written (or drops them to the garbage collector
// when the send fails). It does not keep the slice bufs. Every other rule of
// Send applies. The Mux uses SendOwned only when its pool is the stream's,
// so that the buffers come back where they were taken from.
type OwningSender interface {
	SendOwned(f *tunnelv1.Frame, bufs []*[]byte) error
}
