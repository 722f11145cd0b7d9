package tunnel

import (
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Stream is one bidirectional stream of frames, as the Mux uses it.
//
// The Mux calls Send from one goroutine and Recv from another, never Send or
// Recv concurrently with itself. Send must not retain f or anything it refers
// to after it returns (the Mux reuses frames and buffers; gRPC streams encode
// the message before Send returns). Recv must return an error once the stream
// is dead, and also soon after the context given to Mux.Run ends: use the
// stream's own context there (client: the context passed to Connect; server:
// the handler's stream context, which ends when the client goes away or the
// gRPC server stops). After Send has returned an error, Recv must fail too.
type Stream interface {
	// Send sends one frame.
	Send(f *tunnelv1.Frame) error
	// Recv receives the next frame.
	Recv() (*tunnelv1.Frame, error)
}

// errNoFrame is returned by the adapters for a message without a frame.
var errNoFrame = &ProtocolError{Text: "message without a frame"}

// ClientStream adapts the client side of a Connect stream: frames go out
// wrapped in ConnectRequest and come in unwrapped from ConnectResponse.
func ClientStream(s tunnelv1.TunnelService_ConnectClient) Stream {
	return &clientStream{s: s}
}

type clientStream struct {
	s   tunnelv1.TunnelService_ConnectClient
	req tunnelv1.ConnectRequest // reused by Send; Send is never called concurrently
}

func (c *clientStream) Send(f *tunnelv1.Frame) error {
	c.req.Frame = f
	err := c.s.Send(&c.req)
	c.req.Frame = nil
	return err
}

func (c *clientStream) Recv() (*tunnelv1.Frame, error) {
	m, err := c.s.Recv()
	if err != nil {
		return nil, err
	}
	if m.GetFrame() == nil {
		return nil, errNoFrame
	}
	return m.Frame, nil
}

// ServerStream adapts the server side of a Connect stream: frames go out
// wrapped in ConnectResponse and come in unwrapped from ConnectRequest.
func ServerStream(s tunnelv1.TunnelService_ConnectServer) Stream {
	return &serverStream{s: s}
}

type serverStream struct {
	s    tunnelv1.TunnelService_ConnectServer
	resp tunnelv1.ConnectResponse // reused by Send; Send is never called concurrently
}

func (c *serverStream) Send(f *tunnelv1.Frame) error {
	c.resp.Frame = f
	err := c.s.Send(&c.resp)
	c.resp.Frame = nil
	return err
}

func (c *serverStream) Recv() (*tunnelv1.Frame, error) {
	m, err := c.s.Recv()
	if err != nil {
		return nil, err
	}
	if m.GetFrame() == nil {
		return nil, errNoFrame
	}
	return m.Frame, nil
}
