package admin

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "smartproxy/gen/smartproxy/admin/v1"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 30 * time.Second

// fakeBackend is a daemon in miniature: a session table and log levels.
type fakeBackend struct {
	mu       sync.Mutex
	started  time.Time
	sessions map[uint64]*Session
	global   tunnelv1.LogLevel
	killed   map[uint64]string
	changes  []string
}

func newFakeBackend() *fakeBackend {
	started := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &fakeBackend{
		started: started,
		global:  tunnelv1.LogLevel_LOG_LEVEL_INFO,
		killed:  map[uint64]string{},
		sessions: map[uint64]*Session{
			7: {ID: 7, Direction: tunnelv1.Direction_DIRECTION_INCOMING, PartnerOdetteID: "O0013000000000000001", RemoteAddr: "192.0.2.1:40000", StartedAt: started.Add(time.Minute), State: "open", BytesFromPartner: 100},
			3: {ID: 3, Direction: tunnelv1.Direction_DIRECTION_OUTGOING, PartnerOdetteID: "O0013000000000000002", RemoteAddr: "192.0.2.2:6619", State: "open"},
			5: {ID: 5, Direction: tunnelv1.Direction_DIRECTION_INCOMING, PartnerOdetteID: "O0013000000000000001", RemoteAddr: "192.0.2.1:40001", State: "half-closed (inbound)"},
		},
	}
}

func (b *fakeBackend) Status(context.Context) (Status, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Status{
		Program: "smartproxy-server", Version: "test", ProxyID: "PX-1", StartedAt: b.started,
		Tunnels:       []Tunnel{{ClientID: "smartproxy-client", RemoteAddr: "127.0.0.1:5000", Index: 1, ConnectedAt: b.started, OpenSessions: 3, LastRTT: 2 * time.Millisecond}},
		ConfigVersion: 12, PartnerListenerActive: true, PartnerListenAddress: ":6619",
		OpenSessions: len(b.sessions), LogLevel: b.global, LicenseValid: true,
	}, nil
}

func (b *fakeBackend) Sessions(context.Context) ([]Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Session
	for _, s := range b.sessions {
		out = append(out, *s)
	}
	return out, nil
}

func (b *fakeBackend) KillSession(_ context.Context, id uint64, text string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.sessions[id]; !ok {
		return ErrNotFound
	}
	delete(b.sessions, id)
	b.killed[id] = text
	return nil
}

func (b *fakeBackend) SetLogLevel(_ context.Context, id uint64, level tunnelv1.LogLevel, by string) (tunnelv1.LogLevel, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changes = append(b.changes, by)
	if id == 0 {
		prev := b.global
		b.global = level
		return prev, nil
	}
	s, ok := b.sessions[id]
	if !ok {
		return 0, ErrNotFound
	}
	prev := s.LogLevel
	s.LogLevel = level
	return prev, nil
}

func (b *fakeBackend) License(context.Context) (License, error) {
	return License{ProxyID: "PX-1", Valid: false, Reason: "expired", ExpiresAt: time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC)}, nil
}

// startAdmin runs an admin server on a loopback port and returns its address.
func startAdmin(t *testing.T, b Backend, log logrus.FieldLogger) string {
	t.Helper()
	s, err := New(Config{Backend: b, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestAdminService(t *testing.T) {
	b := newFakeBackend()
	log, hook := logtest.NewNullLogger()
	addr := startAdmin(t, b, log)
	cc := dialPlain(t, addr)
	c := adminv1.NewAdminServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	st, err := c.GetStatus(ctx, &adminv1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("GetStatus = %v", err)
	}
	if st.Program != "smartproxy-server" || st.ProxyId != "PX-1" || st.ConfigVersion != 12 || st.OpenSessions != 3 || !st.PartnerListenerActive {
		t.Errorf("GetStatus = %v, want the backend's status", st)
	}
	if !st.StartedAt.AsTime().Equal(b.started) || st.Uptime.AsDuration() <= 0 {
		t.Errorf("GetStatus started_at %v uptime %v, want %v and a positive uptime", st.StartedAt.AsTime(), st.Uptime.AsDuration(), b.started)
	}
	if len(st.Tunnels) != 1 || st.Tunnels[0].TunnelIndex != 1 || st.Tunnels[0].LastRtt.AsDuration() != 2*time.Millisecond {
		t.Errorf("GetStatus tunnels = %v", st.Tunnels)
	}

	ls, err := c.ListSessions(ctx, &adminv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions = %v", err)
	}
	var ids []uint64
	for _, s := range ls.Sessions {
		ids = append(ids, s.SessionId)
	}
	if diff := cmp.Diff([]uint64{3, 5, 7}, ids); diff != "" {
		t.Errorf("ListSessions ids (-want +got):\n%s", diff)
	}
	ls, err = c.ListSessions(ctx, &adminv1.ListSessionsRequest{PartnerOdetteId: "O0013000000000000001"})
	if err != nil {
		t.Fatalf("ListSessions(partner) = %v", err)
	}
	if len(ls.Sessions) != 2 || ls.Sessions[0].SessionId != 5 || ls.Sessions[1].BytesFromPartner != 100 {
		t.Errorf("ListSessions(partner) = %v, want sessions 5 and 7", ls.Sessions)
	}

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"kill unknown session", func() error {
			_, err := c.KillSession(ctx, &adminv1.KillSessionRequest{SessionId: 99})
			return err
		}, codes.NotFound},
		{"kill without id", func() error {
			_, err := c.KillSession(ctx, &adminv1.KillSessionRequest{})
			return err
		}, codes.InvalidArgument},
		{"process level unspecified", func() error {
			_, err := c.SetLogLevel(ctx, &adminv1.SetLogLevelRequest{})
			return err
		}, codes.InvalidArgument},
		{"unknown level", func() error {
			_, err := c.SetLogLevel(ctx, &adminv1.SetLogLevelRequest{Level: 42})
			return err
		}, codes.InvalidArgument},
		{"level of unknown session", func() error {
			_, err := c.SetLogLevel(ctx, &adminv1.SetLogLevelRequest{Level: tunnelv1.LogLevel_LOG_LEVEL_DEBUG, SessionId: 99})
			return err
		}, codes.NotFound},
	}
	for _, tt := range tests {
		if got := status.Code(tt.call()); got != tt.want {
			t.Errorf("%s: code = %v, want %v", tt.name, got, tt.want)
		}
	}

	if _, err := c.KillSession(ctx, &adminv1.KillSessionRequest{SessionId: 5, Text: "stuck"}); err != nil {
		t.Errorf("KillSession(5) = %v", err)
	}
	if got := b.killed[5]; got != "stuck" {
		t.Errorf("backend kill text = %q, want %q", got, "stuck")
	}
	var killLine *logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Data["event"] == "session_killed" {
			killLine = e
		}
	}
	if killLine == nil || killLine.Data["session_id"] != uint64(5) || !strings.Contains(killLine.Data["changed_by"].(string), "127.0.0.1") {
		t.Errorf("kill not logged with session and caller: %v", killLine)
	}

	r, err := c.SetLogLevel(ctx, &adminv1.SetLogLevelRequest{Level: tunnelv1.LogLevel_LOG_LEVEL_DEBUG})
	if err != nil || r.PreviousLevel != tunnelv1.LogLevel_LOG_LEVEL_INFO {
		t.Errorf("SetLogLevel(process DEBUG) = %v, %v, want previous INFO", r, err)
	}
	r, err = c.SetLogLevel(ctx, &adminv1.SetLogLevelRequest{Level: tunnelv1.LogLevel_LOG_LEVEL_TRACE, SessionId: 7})
	if err != nil || r.PreviousLevel != tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED {
		t.Errorf("SetLogLevel(session 7 TRACE) = %v, %v, want previous UNSPECIFIED", r, err)
	}
	r, err = c.SetLogLevel(ctx, &adminv1.SetLogLevelRequest{SessionId: 7})
	if err != nil || r.PreviousLevel != tunnelv1.LogLevel_LOG_LEVEL_TRACE {
		t.Errorf("SetLogLevel(session 7 follow) = %v, %v, want previous TRACE", r, err)
	}
	if len(b.changes) == 0 || !strings.HasPrefix(b.changes[0], "admin api (127.0.0.1:") {
		t.Errorf("SetLogLevel by = %q, want the caller's address", b.changes)
	}

	lic, err := c.GetLicense(ctx, &adminv1.GetLicenseRequest{})
	if err != nil {
		t.Fatalf("GetLicense = %v", err)
	}
	if lic.License.Valid || lic.License.Reason != "expired" || lic.License.ProxyId != "PX-1" || lic.License.ExpiresAt.AsTime().Year() != 2024 {
		t.Errorf("GetLicense = %v", lic)
	}

	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health Check(admin) = %v, %v, want SERVING", hr, err)
	}
}

func TestCheckAddr(t *testing.T) {
	tests := []struct {
		addr  string
		allow bool
		ok    bool
	}{
		{"127.0.0.1:2879", false, true},
		{"127.1.2.3:2879", false, true},
		{"[::1]:2879", false, true},
		{"localhost:2879", false, true},
		{":2879", false, false},
		{"0.0.0.0:2879", false, false},
		{"192.0.2.1:2879", false, false},
		{"admin.example.com:2879", false, false},
		{"192.0.2.1:2879", true, true},
		{"127.0.0.1", false, false},
	}
	for _, tt := range tests {
		err := CheckAddr(tt.addr, tt.allow)
		if (err == nil) != tt.ok {
			t.Errorf("CheckAddr(%q, %v) = %v, want ok=%v", tt.addr, tt.allow, err, tt.ok)
		}
	}
}

// fakeAddrListener is a loopback listener that reports another address, to
// test the refusal without binding a non-loopback address.
type fakeAddrListener struct {
	net.Listener
	addr net.Addr
}

func (l fakeAddrListener) Addr() net.Addr { return l.addr }

func TestServeRefusesNonLoopback(t *testing.T) {
	s, err := New(Config{Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Listen(":0"); err == nil || !strings.Contains(err.Error(), "not a loopback") {
		t.Errorf("Listen(:0) = %v, want a loopback refusal", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(fakeAddrListener{Listener: ln, addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 2879}})
	if err == nil || !strings.Contains(err.Error(), "not a loopback") {
		t.Errorf("Serve(non-loopback) = %v, want a loopback refusal", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Errorf("listener still open after the refusal")
	}
	if _, err := New(Config{}); err == nil {
		t.Errorf("New(no backend) = nil error")
	}
}

func TestLevelConversion(t *testing.T) {
	for _, l := range []logrus.Level{logrus.TraceLevel, logrus.DebugLevel, logrus.InfoLevel, logrus.WarnLevel, logrus.ErrorLevel} {
		got, ok := LevelToLogrus(LevelFromLogrus(l))
		if !ok || got != l {
			t.Errorf("LevelToLogrus(LevelFromLogrus(%v)) = %v, %v, want %v, true", l, got, ok, l)
		}
	}
	if got := LevelFromLogrus(logrus.FatalLevel); got != tunnelv1.LogLevel_LOG_LEVEL_ERROR {
		t.Errorf("LevelFromLogrus(fatal) = %v, want ERROR", got)
	}
	if _, ok := LevelToLogrus(tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED); ok {
		t.Errorf("LevelToLogrus(UNSPECIFIED) ok = true, want false")
	}
}

func TestBackendError(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{ErrNotFound, codes.NotFound},
		{errors.Join(errors.New("x"), ErrNotFound), codes.NotFound},
		{context.Canceled, codes.Canceled},
		{status.Error(codes.FailedPrecondition, "no tunnel"), codes.FailedPrecondition},
		{errors.New("boom"), codes.Internal},
	}
	for _, tt := range tests {
		if got := status.Code(backendError(tt.err)); got != tt.want {
			t.Errorf("backendError(%v) code = %v, want %v", tt.err, got, tt.want)
		}
	}
}
