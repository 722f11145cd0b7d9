package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel/transport"
)

// handleStream runs one Connect stream. The session multiplexer (package tunnel) has not
// landed in this tree yet, so streams are refused with UNIMPLEMENTED until it is wired in.
func (s *Server) handleStream(ctx context.Context, peer transport.PeerInfo, stream tunnelv1.TunnelService_ConnectServer) error {
	s.log.WithField("remote_addr", peer.RemoteAddr.String()).Error("tunnel stream refused: the session multiplexer is not part of this build")
	return status.Error(codes.Unimplemented, "smartproxy-server: tunnel multiplexer not available in this build")
}
