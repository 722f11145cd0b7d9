package server

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

// protocolVersion is the tunnel protocol version this server speaks.
const protocolVersion = 1

// tunnelConn is one connected client tunnel stream. Fields are immutable after the Hello was
// answered, except those marked otherwise.
type tunnelConn struct {
	s           *Server
	mux         *tunnel.Mux
	peer        transport.PeerInfo
	clientID    string
	index       uint32
	connectedAt time.Time
	log         *logrus.Entry

	lastRTT atomic.Int64 // nanoseconds; 0 before the first Pong
	asm     assembler    // owned by the control goroutine
}

// name identifies the tunnel in logs and events: "client-id#index@addr".
func (tc *tunnelConn) name() string {
	return fmt.Sprintf("%s#%d@%s", tc.clientID, tc.index, tc.peer.RemoteAddr)
}

func (tc *tunnelConn) sendControl(ctx context.Context, f *tunnelv1.Frame) error {
	return tc.mux.SendControl(ctx, f)
}

// status describes the tunnel for the admin service.
func (tc *tunnelConn) status() admin.Tunnel {
	return admin.Tunnel{
		ClientID:     tc.clientID,
		RemoteAddr:   tc.peer.RemoteAddr.String(),
		Index:        int(tc.index),
		ConnectedAt:  tc.connectedAt,
		OpenSessions: len(tc.mux.Sessions()),
		LastRTT:      time.Duration(tc.lastRTT.Load()),
	}
}

// welcome answers a Hello whose client announced capabilities.
func (s *Server) welcome(window uint32, capabilities []string) *tunnelv1.Frame {
	w := &tunnelv1.Welcome{
		ProxyId:         s.cfg.ProxyID,
		ServerVersion:   s.cfg.Version,
		ProtocolVersion: protocolVersion,
		License:         s.currentLicenseProto(),
		Capabilities:    tunnel.CommonCapabilities(capabilities),
		SessionWindow:   window,
	}
	if pol := s.policy.Load(); pol != nil {
		w.ConfigVersion = pol.Version
		w.ConfigOrigin = pol.Origin
	}
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_Welcome{Welcome: w}}
}

// control handles one control frame of a connected tunnel (after Hello). It runs on the
// tunnel's control goroutine, so frames of one tunnel are handled in order. Ping and Pong are
// answered and measured by the multiplexer (tunnelMetrics.RTT).
func (tc *tunnelConn) control(ctx context.Context, f *tunnelv1.Frame) {
	s := tc.s
	reply := func(r *tunnelv1.Frame) {
		if err := tc.sendControl(ctx, r); err != nil && ctx.Err() == nil {
			tc.log.WithError(err).Warn("tunnel: cannot send a control frame")
		}
	}
	switch k := f.GetKind().(type) {
	case *tunnelv1.Frame_ConfigSnapshot:
		snap, errs := tc.asm.snapshot(k.ConfigSnapshot)
		version := k.ConfigSnapshot.GetVersion()
		tc.log.WithFields(logrus.Fields{"config_version": version, "complete": snap != nil}).Info("configuration snapshot received")
		tc.finishConfig(ctx, version, snap, errs, reply)
	case *tunnelv1.Frame_ConfigChunk:
		snap, version, errs := tc.asm.chunk(k.ConfigChunk)
		tc.finishConfig(ctx, version, snap, errs, reply)
	case *tunnelv1.Frame_LicenseUpdate:
		st := s.updateLicense(k.LicenseUpdate.GetLicense(), tc.name())
		reply(&tunnelv1.Frame{Kind: &tunnelv1.Frame_LicenseStatus{LicenseStatus: st}})
	case *tunnelv1.Frame_Hello:
		tc.log.Warn("tunnel: a second Hello on the stream is ignored")
	default:
		tc.log.WithField("frame", fmt.Sprintf("%T", f.GetKind())).Warn("tunnel: unexpected control frame from the client ignored")
	}
}

// finishConfig applies a completed snapshot, or reports errors, with ConfigApplied.
func (tc *tunnelConn) finishConfig(ctx context.Context, version uint64, snap *tunnelv1.ConfigSnapshot, errs ConfigErrors, reply func(*tunnelv1.Frame)) {
	var res applyResult
	switch {
	case len(errs) > 0:
		tc.s.metrics.configResults.WithLabelValues("rejected").Inc()
		res = applyResult{errs: errs}
	case snap != nil:
		res = tc.s.applySnapshot(snap, tc.name())
	default:
		return // waiting for more chunks
	}
	ca := &tunnelv1.ConfigApplied{Version: version, Ok: res.applied, Errors: res.errs.Proto()}
	if !res.applied {
		tc.log.WithFields(logrus.Fields{"config_version": version, "errors": joinErrs(res.errs)}).Warn("configuration not applied")
	}
	reply(&tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigApplied{ConfigApplied: ca}})
}

// addTunnel registers a tunnel whose Hello was answered and wakes the listener manager.
func (s *Server) addTunnel(tc *tunnelConn) {
	s.tunnelsMu.Lock()
	s.tunnels[tc] = struct{}{}
	n := len(s.tunnels)
	s.tunnelsMu.Unlock()
	s.metrics.tunnels.Set(float64(n))
	s.kickListener()
}

// removeTunnel forgets a tunnel and wakes the listener manager (the last one closes it).
func (s *Server) removeTunnel(tc *tunnelConn) {
	s.tunnelsMu.Lock()
	delete(s.tunnels, tc)
	n := len(s.tunnels)
	s.tunnelsMu.Unlock()
	s.metrics.tunnels.Set(float64(n))
	s.kickListener()
}

func (s *Server) tunnelCount() int {
	s.tunnelsMu.Lock()
	defer s.tunnelsMu.Unlock()
	return len(s.tunnels)
}

func (s *Server) tunnelConnected(tc *tunnelConn) bool {
	s.tunnelsMu.Lock()
	defer s.tunnelsMu.Unlock()
	_, ok := s.tunnels[tc]
	return ok
}

// tunnelList returns the connected tunnels, oldest first.
func (s *Server) tunnelList() []*tunnelConn {
	s.tunnelsMu.Lock()
	list := make([]*tunnelConn, 0, len(s.tunnels))
	for tc := range s.tunnels {
		list = append(list, tc)
	}
	s.tunnelsMu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].connectedAt.Before(list[j].connectedAt) })
	return list
}

// anyTunnel returns the oldest connected tunnel, or nil.
func (s *Server) anyTunnel() *tunnelConn {
	if l := s.tunnelList(); len(l) > 0 {
		return l[0]
	}
	return nil
}

// pickTunnel returns the healthy tunnel with the fewest open sessions, or nil. With several
// clients (high availability, docs/high-availability.md) this spreads new incoming sessions
// over them by load: a tunnel's sessions are what its client, its internal OFTP2 server and
// the tunnel's credit windows are busy with, and counting them needs no configuration, keeps
// sessions off a client that is still busy after a reconnect, and sends everything new to a
// client that just came back. Ties go to the oldest tunnel. A tunnel is healthy while its
// multiplexer runs: one whose stream has just ended but is not yet unregistered is skipped, so
// that no partner is refused for a tunnel that is already gone while another is up.
func (s *Server) pickTunnel() *tunnelConn {
	var best *tunnelConn
	bestN := 0
	for _, tc := range s.tunnelList() {
		if !tc.healthy() {
			continue
		}
		if n := len(tc.mux.Sessions()); best == nil || n < bestN {
			best, bestN = tc, n
		}
	}
	return best
}

// healthy reports whether the tunnel's multiplexer still runs.
func (tc *tunnelConn) healthy() bool {
	select {
	case <-tc.mux.Done():
		return false
	default:
		return true
	}
}

// broadcast sends a control frame to every connected tunnel without waiting for slow ones.
func (s *Server) broadcast(f *tunnelv1.Frame) {
	for _, tc := range s.tunnelList() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := tc.sendControl(ctx, f); err != nil {
			tc.log.WithError(err).Debug("broadcast to tunnel failed")
		}
		cancel()
	}
}
