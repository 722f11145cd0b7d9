// Package admin serves the operator's diagnostic and control interface of
// smartproxy-server and smartproxy-client: the AdminService (status, sessions,
// kill session, log levels, license) next to gRPC health and server
// reflection, so that grpcurl can drive it.
//
// The admin listener is plaintext gRPC and therefore bound to a loopback
// address by default; [Server.Serve] refuses any other address unless
// Config.AllowNonLoopback is set. The same service can also be registered on
// the mTLS tunnel port ([Register] with transport.ServerConfig.Register), where
// only holders of a tunnel certificate reach it.
//
// The daemons implement the small [Backend] interface; this package converts
// between it and the protobuf messages, maps errors to gRPC status codes and
// logs every change an operator makes.
package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "smartproxy/gen/smartproxy/admin/v1"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// ErrNotFound is returned by a Backend when a session id is unknown; the
// service answers NOT_FOUND.
var ErrNotFound = errors.New("admin: no such session")

// Backend is what a daemon provides to the admin service. Its methods are
// called concurrently.
type Backend interface {
	// Status reports the process status.
	Status(ctx context.Context) (Status, error)
	// Sessions lists the open sessions, in any order.
	Sessions(ctx context.Context) ([]Session, error)
	// KillSession aborts session id with ABORT_REASON_ADMIN_KILL and text,
	// or returns ErrNotFound.
	KillSession(ctx context.Context, id uint64, text string) error
	// SetLogLevel sets the process level (sessionID 0) or the level of one
	// session (LOG_LEVEL_UNSPECIFIED: follow the process level again) and
	// returns the previous level. by names who asked, for the log line the
	// daemon writes. An unknown session is ErrNotFound.
	SetLogLevel(ctx context.Context, sessionID uint64, level tunnelv1.LogLevel, by string) (previous tunnelv1.LogLevel, err error)
	// License reports the license state.
	License(ctx context.Context) (License, error)
}

// Status is the process status.
type Status struct {
	// Program is "smartproxy-server" or "smartproxy-client".
	Program string
	// Version is the software version.
	Version string
	// ProxyID is the Proxy ID of the server host.
	ProxyID string
	// StartedAt is when the process started; the uptime is computed from it.
	StartedAt time.Time
	// Tunnels are the connected tunnel streams.
	Tunnels []Tunnel
	// ConfigVersion is the configuration version in force, 0 if none.
	ConfigVersion uint64
	// PartnerListenerActive is true while partners can connect (server).
	PartnerListenerActive bool
	// PartnerListenAddress is the partner listener's address (server).
	PartnerListenAddress string
	// OpenSessions is the number of open sessions.
	OpenSessions int
	// LogLevel is the process log level.
	LogLevel tunnelv1.LogLevel
	// LicenseValid is true when the license is valid.
	LicenseValid bool
}

// Tunnel is one connected tunnel stream.
type Tunnel struct {
	// ClientID is the client identity from Hello.
	ClientID string
	// RemoteAddr is the other end, "ip:port".
	RemoteAddr string
	// Index is Hello.tunnel_index.
	Index int
	// ConnectedAt is when the stream was established.
	ConnectedAt time.Time
	// OpenSessions is the number of sessions on the stream.
	OpenSessions int
	// LastRTT is the last Ping round-trip time; zero before the first Pong.
	LastRTT time.Duration
}

// Session is one open session.
type Session struct {
	// ID is unique within the process.
	ID uint64
	// Direction is the OFTP2 session's direction.
	Direction tunnelv1.Direction
	// PartnerOdetteID is the partner's Odette ID.
	PartnerOdetteID string
	// RemoteAddr is the partner connection's address.
	RemoteAddr string
	// StartedAt is when the session was opened.
	StartedAt time.Time
	// BytesFromPartner and BytesToPartner count the relayed bytes.
	BytesFromPartner, BytesToPartner uint64
	// ClientID is the identity of the tunnel carrying the session.
	ClientID string
	// State is a human-readable state.
	State string
	// LogLevel is the session's own level; LOG_LEVEL_UNSPECIFIED when it
	// follows the process level.
	LogLevel tunnelv1.LogLevel
}

// License is the license state.
type License struct {
	// ProxyID is the Proxy ID of the server host.
	ProxyID string
	// Valid is true for an installed, correctly signed, unexpired license.
	Valid bool
	// ExpiresAt is the end of validity; zero when none is installed.
	ExpiresAt time.Time
	// Reason says why the license is not valid.
	Reason string
}

// Service implements adminv1.AdminServiceServer over a Backend.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	backend Backend
	log     logrus.FieldLogger
	now     func() time.Time
}

// NewService returns the service over backend. log receives one line per
// operator action; if nil, nothing is logged.
func NewService(backend Backend, log logrus.FieldLogger) (*Service, error) {
	if backend == nil {
		return nil, errors.New("admin: service needs a backend")
	}
	return &Service{backend: backend, log: loggerOrDiscard(log), now: time.Now}, nil
}

// GetStatus reports the process status.
func (s *Service) GetStatus(ctx context.Context, _ *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	st, err := s.backend.Status(ctx)
	if err != nil {
		return nil, backendError(err)
	}
	r := &adminv1.GetStatusResponse{
		Program:               st.Program,
		Version:               st.Version,
		ProxyId:               st.ProxyID,
		ConfigVersion:         st.ConfigVersion,
		PartnerListenerActive: st.PartnerListenerActive,
		PartnerListenAddress:  st.PartnerListenAddress,
		OpenSessions:          uint32(st.OpenSessions),
		LogLevel:              st.LogLevel,
		LicenseValid:          st.LicenseValid,
	}
	if !st.StartedAt.IsZero() {
		r.StartedAt = timestamppb.New(st.StartedAt)
		r.Uptime = durationpb.New(s.now().Sub(st.StartedAt).Round(time.Second))
	}
	for _, t := range st.Tunnels {
		ts := &adminv1.TunnelStatus{
			ClientId:     t.ClientID,
			RemoteAddr:   t.RemoteAddr,
			TunnelIndex:  uint32(t.Index),
			OpenSessions: uint32(t.OpenSessions),
		}
		if !t.ConnectedAt.IsZero() {
			ts.ConnectedAt = timestamppb.New(t.ConnectedAt)
		}
		if t.LastRTT > 0 {
			ts.LastRtt = durationpb.New(t.LastRTT)
		}
		r.Tunnels = append(r.Tunnels, ts)
	}
	return r, nil
}

// ListSessions lists the open sessions ordered by id, optionally of one
// partner.
func (s *Service) ListSessions(ctx context.Context, req *adminv1.ListSessionsRequest) (*adminv1.ListSessionsResponse, error) {
	list, err := s.backend.Sessions(ctx)
	if err != nil {
		return nil, backendError(err)
	}
	r := &adminv1.ListSessionsResponse{}
	for _, x := range list {
		if req.PartnerOdetteId != "" && x.PartnerOdetteID != req.PartnerOdetteId {
			continue
		}
		si := &adminv1.SessionInfo{
			SessionId:        x.ID,
			Direction:        x.Direction,
			PartnerOdetteId:  x.PartnerOdetteID,
			RemoteAddr:       x.RemoteAddr,
			BytesFromPartner: x.BytesFromPartner,
			BytesToPartner:   x.BytesToPartner,
			ClientId:         x.ClientID,
			State:            x.State,
			LogLevel:         x.LogLevel,
		}
		if !x.StartedAt.IsZero() {
			si.StartedAt = timestamppb.New(x.StartedAt)
		}
		r.Sessions = append(r.Sessions, si)
	}
	sortSessions(r.Sessions)
	return r, nil
}

func sortSessions(s []*adminv1.SessionInfo) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].SessionId < s[j-1].SessionId; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// KillSession aborts one session.
func (s *Service) KillSession(ctx context.Context, req *adminv1.KillSessionRequest) (*adminv1.KillSessionResponse, error) {
	if req.SessionId == 0 {
		return nil, status.Error(codes.InvalidArgument, "session_id is required")
	}
	text := req.Text
	if text == "" {
		text = "killed by operator"
	}
	if err := s.backend.KillSession(ctx, req.SessionId, text); err != nil {
		return nil, backendError(err)
	}
	s.log.WithFields(logrus.Fields{
		"event":      "session_killed",
		"session_id": req.SessionId,
		"text":       text,
		"changed_by": caller(ctx),
	}).Warn("session killed through the admin service")
	return &adminv1.KillSessionResponse{}, nil
}

// SetLogLevel changes the process or a session's log level.
func (s *Service) SetLogLevel(ctx context.Context, req *adminv1.SetLogLevelRequest) (*adminv1.SetLogLevelResponse, error) {
	if _, ok := tunnelv1.LogLevel_name[int32(req.Level)]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "unknown log level %d", req.Level)
	}
	if req.Level == tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED && req.SessionId == 0 {
		return nil, status.Error(codes.InvalidArgument, "a level is required for the process (LOG_LEVEL_UNSPECIFIED is only valid for a session)")
	}
	prev, err := s.backend.SetLogLevel(ctx, req.SessionId, req.Level, caller(ctx))
	if err != nil {
		return nil, backendError(err)
	}
	return &adminv1.SetLogLevelResponse{PreviousLevel: prev}, nil
}

// GetLicense reports the license state.
func (s *Service) GetLicense(ctx context.Context, _ *adminv1.GetLicenseRequest) (*adminv1.GetLicenseResponse, error) {
	l, err := s.backend.License(ctx)
	if err != nil {
		return nil, backendError(err)
	}
	ls := &tunnelv1.LicenseStatus{ProxyId: l.ProxyID, Valid: l.Valid, Reason: l.Reason}
	if !l.ExpiresAt.IsZero() {
		ls.ExpiresAt = timestamppb.New(l.ExpiresAt)
	}
	return &adminv1.GetLicenseResponse{License: ls}, nil
}

// backendError maps a Backend error to a gRPC status.
func backendError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// caller names who made an admin call, for the log.
func caller(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return fmt.Sprintf("admin api (%s)", p.Addr)
	}
	return "admin api"
}

// LevelFromLogrus converts a logrus level to the protobuf level (panic and
// fatal become ERROR).
func LevelFromLogrus(l logrus.Level) tunnelv1.LogLevel {
	switch l {
	case logrus.TraceLevel:
		return tunnelv1.LogLevel_LOG_LEVEL_TRACE
	case logrus.DebugLevel:
		return tunnelv1.LogLevel_LOG_LEVEL_DEBUG
	case logrus.InfoLevel:
		return tunnelv1.LogLevel_LOG_LEVEL_INFO
	case logrus.WarnLevel:
		return tunnelv1.LogLevel_LOG_LEVEL_WARN
	}
	return tunnelv1.LogLevel_LOG_LEVEL_ERROR
}

// LevelToLogrus converts a protobuf level to logrus; ok is false for
// LOG_LEVEL_UNSPECIFIED and unknown values.
func LevelToLogrus(l tunnelv1.LogLevel) (level logrus.Level, ok bool) {
	switch l {
	case tunnelv1.LogLevel_LOG_LEVEL_TRACE:
		return logrus.TraceLevel, true
	case tunnelv1.LogLevel_LOG_LEVEL_DEBUG:
		return logrus.DebugLevel, true
	case tunnelv1.LogLevel_LOG_LEVEL_INFO:
		return logrus.InfoLevel, true
	case tunnelv1.LogLevel_LOG_LEVEL_WARN:
		return logrus.WarnLevel, true
	case tunnelv1.LogLevel_LOG_LEVEL_ERROR:
		return logrus.ErrorLevel, true
	}
	return 0, false
}
