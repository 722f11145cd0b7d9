package server

import (
	"context"
	"sort"
	"strconv"

	"smartproxy/admin"
	"smartproxy/bridge"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
)

// Admin returns the server's implementation of the admin service's backend.
func (s *Server) Admin() admin.Backend { return adminBackend{s} }

// adminBackend implements admin.Backend over a Server.
type adminBackend struct{ s *Server }

// Status reports the process status.
func (a adminBackend) Status(context.Context) (admin.Status, error) {
	s := a.s
	st := admin.Status{
		Program:   "smartproxy-server",
		Version:   s.cfg.Version,
		ProxyID:   s.cfg.ProxyID,
		StartedAt: s.started,
		LogLevel:  admin.LevelFromLogrus(s.levels.Global()),
	}
	if pol := s.policy.Load(); pol != nil {
		st.ConfigVersion = pol.Version
	}
	st.PartnerListenAddress = s.PartnerAddr()
	st.PartnerListenerActive = st.PartnerListenAddress != ""
	st.OpenSessions = s.openSessions()
	st.LicenseValid = s.license.Load().check(s.cfg.ProxyID, s.now()) == nil
	for _, tc := range s.tunnelList() {
		st.Tunnels = append(st.Tunnels, tc.status())
	}
	return st, nil
}

// Sessions lists the partner connections, admitted or being admitted.
func (a adminBackend) Sessions(context.Context) ([]admin.Session, error) {
	s := a.s
	s.sessionsMu.Lock()
	list := make([]*partnerSession, 0, len(s.sessions))
	for _, ps := range s.sessions {
		list = append(list, ps)
	}
	s.sessionsMu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	out := make([]admin.Session, 0, len(list))
	for _, ps := range list {
		dir := tunnelv1.Direction_DIRECTION_INCOMING
		if ps.direction == "outgoing" {
			dir = tunnelv1.Direction_DIRECTION_OUTGOING
		}
		ps.mu.Lock()
		as := admin.Session{
			ID:               ps.id,
			Direction:        dir,
			PartnerOdetteID:  ps.odetteID,
			RemoteAddr:       ps.remote,
			StartedAt:        ps.started,
			BytesFromPartner: ps.fromPartner.Load(),
			BytesToPartner:   ps.toPartner.Load(),
			State:            ps.state,
		}
		if ps.tunnel != nil {
			as.ClientID = ps.tunnel.clientID
		}
		ps.mu.Unlock()
		if lv, own := s.levels.SessionLevel(strconv.FormatUint(ps.id, 10)); own {
			as.LogLevel = admin.LevelFromLogrus(lv)
		}
		out = append(out, as)
	}
	return out, nil
}

// KillSession ends a session with ESID 05 (local site emergency close down) to the partner
// and ABORT_REASON_ADMIN_KILL to the inside.
func (a adminBackend) KillSession(_ context.Context, id uint64, text string) error {
	s := a.s
	s.sessionsMu.Lock()
	ps := s.sessions[id]
	s.sessionsMu.Unlock()
	if ps == nil {
		return admin.ErrNotFound
	}
	if text == "" {
		text = "ended by an operator"
	}
	ps.stop(&bridge.Stop{Reason: tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, ESID: oftp2.ESIDLocalEmergency, Text: text})
	return nil
}

// SetLogLevel changes the process level (sessionID 0) or one session's level.
func (a adminBackend) SetLogLevel(_ context.Context, sessionID uint64, level tunnelv1.LogLevel, by string) (tunnelv1.LogLevel, error) {
	s := a.s
	if sessionID == 0 {
		return admin.SetLevel(s.levels, "", level, by)
	}
	s.sessionsMu.Lock()
	_, ok := s.sessions[sessionID]
	s.sessionsMu.Unlock()
	if !ok {
		return 0, admin.ErrNotFound
	}
	return admin.SetLevel(s.levels, strconv.FormatUint(sessionID, 10), level, by)
}

// License reports the license state.
func (a adminBackend) License(context.Context) (admin.License, error) {
	s := a.s
	st := s.license.Load().status(s.cfg.ProxyID, s.now())
	return admin.License{ProxyID: st.ProxyID, Valid: st.Valid, ExpiresAt: st.NotAfter, Reason: st.Reason}, nil
}

// addSession registers ps for the admin service and shutdown.
func (s *Server) addSession(ps *partnerSession) {
	s.sessionsMu.Lock()
	s.sessions[ps.id] = ps
	s.sessionsMu.Unlock()
}

// removeSession forgets ps.
func (s *Server) removeSession(ps *partnerSession) {
	s.sessionsMu.Lock()
	delete(s.sessions, ps.id)
	s.sessionsMu.Unlock()
}

// abortAllSessions stops every partner connection with reason and ESID 05, and returns how
// many there were.
func (s *Server) abortAllSessions(reason tunnelv1.AbortReason, text string) int {
	s.sessionsMu.Lock()
	list := make([]*partnerSession, 0, len(s.sessions))
	for _, ps := range s.sessions {
		list = append(list, ps)
	}
	s.sessionsMu.Unlock()
	for _, ps := range list {
		ps.stop(&bridge.Stop{Reason: reason, ESID: oftp2.ESIDLocalEmergency, Text: text})
	}
	return len(list)
}
