package client

import (
	"context"
	"fmt"
	"sort"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/oftp2"
)

// Admin returns the client's implementation of the admin service's backend.
func (c *Client) Admin() admin.Backend { return adminBackend{c} }

// adminBackend implements admin.Backend over a Client.
type adminBackend struct{ c *Client }

// Status reports the process status. ConfigVersion is the version in force in the client; the
// version each server applied is in the log (event config_applied) and in Client.Tunnels.
func (a adminBackend) Status(context.Context) (admin.Status, error) {
	c := a.c
	c.mu.Lock()
	st := admin.Status{
		Program:       "smartproxy-client",
		Version:       c.cfg.Version,
		ProxyID:       c.proxyID,
		StartedAt:     c.started,
		ConfigVersion: c.snap.Version,
		OpenSessions:  len(c.sessions),
		LicenseValid:  c.license.GetValid(),
	}
	c.mu.Unlock()
	if c.cfg.Levels != nil {
		st.LogLevel = admin.LevelFromLogrus(c.cfg.Levels.Global())
	}
	for _, ti := range c.Tunnels() {
		st.Tunnels = append(st.Tunnels, admin.Tunnel{ClientID: c.clientID, RemoteAddr: ti.RemoteAddr, Index: ti.Index,
			ConnectedAt: ti.ConnectedAt, OpenSessions: ti.Sessions, LastRTT: ti.LastRTT})
	}
	return st, nil
}

// Sessions lists the open sessions.
func (a adminBackend) Sessions(context.Context) ([]admin.Session, error) {
	c := a.c
	c.mu.Lock()
	list := make([]*session, 0, len(c.sessions))
	for _, s := range c.sessions {
		list = append(list, s)
	}
	c.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	out := make([]admin.Session, 0, len(list))
	for _, s := range list {
		s.mu.Lock()
		state := s.state
		s.mu.Unlock()
		level := tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED
		if s.logKey != "" && c.cfg.Levels != nil {
			if lv, own := c.cfg.Levels.SessionLevel(s.logKey); own {
				level = admin.LevelFromLogrus(lv)
			}
		}
		out = append(out, admin.Session{
			ID: s.id, Direction: tunnelv1.Direction_DIRECTION_INCOMING, PartnerOdetteID: s.partner, RemoteAddr: s.remote,
			StartedAt: s.started, BytesFromPartner: s.toInternal.Load(), BytesToPartner: s.fromInternal.Load(),
			ClientID: c.clientID, State: state, LogLevel: level,
		})
	}
	return out, nil
}

// KillSession aborts a session: the server receives ABORT_REASON_ADMIN_KILL (and ends the
// partner's session with ESID 05), the internal server an ESID 05.
func (a adminBackend) KillSession(_ context.Context, id uint64, text string) error {
	c := a.c
	c.mu.Lock()
	s := c.sessions[id]
	c.mu.Unlock()
	if s == nil {
		return admin.ErrNotFound
	}
	if text == "" {
		text = "ended by an operator"
	}
	c.events.Emit(c.log, s.event(EventSessionKilled, "session killed by an operator").With("text", text))
	s.ts.Abort(tunnelv1.AbortReason_ABORT_REASON_ADMIN_KILL, uint32(oftp2.ESIDLocalEmergency), text)
	return nil
}

// SetLogLevel changes the process level (sessionID 0) or one session's level.
func (a adminBackend) SetLogLevel(_ context.Context, sessionID uint64, level tunnelv1.LogLevel, by string) (tunnelv1.LogLevel, error) {
	c := a.c
	levels := c.cfg.Levels
	if levels == nil {
		return 0, fmt.Errorf("log levels cannot be changed in this process")
	}
	if sessionID == 0 {
		return admin.SetLevel(levels, "", level, by)
	}
	c.mu.Lock()
	s := c.sessions[sessionID]
	c.mu.Unlock()
	if s == nil || s.logKey == "" {
		return 0, admin.ErrNotFound
	}
	return admin.SetLevel(levels, s.logKey, level, by)
}

// License reports the license state the server last reported.
func (a adminBackend) License(context.Context) (admin.License, error) {
	c := a.c
	c.mu.Lock()
	l := c.license
	c.mu.Unlock()
	out := admin.License{ProxyID: l.GetProxyId(), Valid: l.GetValid(), Reason: l.GetReason()}
	if ts := l.GetExpiresAt(); ts != nil {
		out.ExpiresAt = ts.AsTime()
	}
	if l == nil {
		out.Reason = "no server has reported its license yet"
	}
	return out, nil
}
