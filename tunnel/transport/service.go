package transport

import (
	"context"

	"google.golang.org/grpc"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// The tunnel service (smartproxy.tunnel.v1.TunnelService in
// proto/smartproxy/tunnel/v1/tunnel.proto) has one bidirectional streaming
// method, Connect. Its gRPC binding lives here rather than beside the
// generated messages: protoc-gen-go-grpc writes service stubs into the
// messages' Go package, and that package must not depend on gRPC, so that the
// multiplexer (package tunnel) is free of it (buf.gen.yaml leaves the service
// out of the gRPC plugin's input). The method's name, the message types and
// therefore the wire format are those of the proto file; server reflection
// still describes the service from the generated file descriptor.

// TunnelServiceName is the full name of the tunnel service, as health checks
// and reflection know it.
const TunnelServiceName = "smartproxy.tunnel.v1.TunnelService"

// ConnectMethod is the full gRPC method name of Connect.
const ConnectMethod = "/" + TunnelServiceName + "/Connect"

// ConnectServer is the server end of a Connect stream.
type ConnectServer = grpc.BidiStreamingServer[tunnelv1.ConnectRequest, tunnelv1.ConnectResponse]

// ConnectClient is the client end of a Connect stream.
type ConnectClient = grpc.BidiStreamingClient[tunnelv1.ConnectRequest, tunnelv1.ConnectResponse]

// connectStream describes Connect to gRPC.
var connectStream = grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}

// connectHandler is what RegisterService registers.
type connectHandler func(ConnectServer) error

// RegisterService registers the tunnel service on s; connect runs every
// Connect stream. NewServer does this for its own gRPC server; tests that
// build a gRPC server of their own use it too.
func RegisterService(s grpc.ServiceRegistrar, connect func(ConnectServer) error) {
	desc := grpc.ServiceDesc{
		ServiceName: TunnelServiceName,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName: connectStream.StreamName, ServerStreams: true, ClientStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				return srv.(connectHandler)(&grpc.GenericServerStream[tunnelv1.ConnectRequest, tunnelv1.ConnectResponse]{ServerStream: stream})
			},
		}},
		Metadata: "smartproxy/tunnel/v1/tunnel.proto",
	}
	s.RegisterService(&desc, connectHandler(connect))
}

// Connect opens a Connect stream on cc.
func Connect(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (ConnectClient, error) {
	s, err := cc.NewStream(ctx, &connectStream, ConnectMethod, append([]grpc.CallOption{grpc.StaticMethod()}, opts...)...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[tunnelv1.ConnectRequest, tunnelv1.ConnectResponse]{ClientStream: s}, nil
}
