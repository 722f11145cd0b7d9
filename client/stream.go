package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"smartproxy/internal/event"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/admin"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel"
	"smartproxy/tunnel/transport"
)

// stream is one tunnel stream to the server: its multiplexer and what the server told about
// itself on it.
type stream struct {
	// Immutable after runStream set them up.
	c           *Client
	server      string // the address in Config.Servers
	index       int
	peer        transport.PeerInfo
	ctx         context.Context // ends when the stream's connection goes away
	mux         *tunnel.Mux
	log         logrus.FieldLogger
	connectedAt time.Time

	// notify wakes runStream when the Control callback recorded a Welcome or ConfigApplied.
	notify chan struct{}
	rtt    atomic.Int64 // last round-trip time in nanoseconds

	mu       sync.Mutex // guards the fields below
	welcome  *tunnelv1.Welcome
	sent     uint64 // last configuration version pushed
	applied  uint64 // last configuration version the server confirmed
	answered uint64 // last version the server answered (ok or not)
	cfgErrs  []*tunnelv1.ConfigError
	draining bool
	sessions int
}

// info returns a TunnelInfo of st.
func (st *stream) info() TunnelInfo {
	st.mu.Lock()
	defer st.mu.Unlock()
	ti := TunnelInfo{Server: st.server, Index: st.index, ConnectedAt: st.connectedAt, SentVersion: st.sent, AppliedVersion: st.applied,
		ConfigErrors: st.cfgErrs, Draining: st.draining, Sessions: st.sessions, LastRTT: time.Duration(st.rtt.Load())}
	if st.peer.RemoteAddr != nil {
		ti.RemoteAddr = st.peer.RemoteAddr.String()
	}
	if st.welcome != nil {
		ti.ProxyID, ti.ServerVersion = st.welcome.GetProxyId(), st.welcome.GetServerVersion()
	}
	return ti
}

func (st *stream) wake() {
	select {
	case st.notify <- struct{}{}:
	default:
	}
}

// errHandshake marks a stream that ended before the server's Welcome.
var errHandshake = errors.New("tunnel handshake failed")

// runStream runs one tunnel stream to server (a transport.ClientStreamHandler): Hello, Welcome,
// the configuration push, then sessions until the stream ends.
func (c *Client) runStream(ctx context.Context, server string, index int, peer transport.PeerInfo, cs transport.ConnectClient) error {
	st := &stream{c: c, server: server, index: index, peer: peer, ctx: ctx, connectedAt: time.Now(), notify: make(chan struct{}, 1),
		log: c.log.WithFields(logrus.Fields{"server": server, "tunnel": index, "server_addr": addrString(peer.RemoteAddr)})}
	mux, err := tunnel.New(transport.ClientStream(cs), tunnel.Config{
		Side:         tunnel.SideClient,
		Window:       c.cfg.Window,
		Logger:       st.log,
		Accept:       func(s *tunnel.Session) { c.accept(st, s) },
		Control:      st.control,
		PingInterval: c.cfg.PingInterval,
		Metrics:      muxMetrics{st},
	})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	st.mux = mux
	runDone := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		runDone <- mux.Run(ctx)
	}()
	// From here on, returning ends the stream: the transport cancels ctx, which ends Run.

	snap, cfgChanged := c.configState()
	hello := &tunnelv1.Hello{ProtocolVersion: ProtocolVersion, ClientId: c.clientID, SoftwareVersion: c.cfg.Version,
		TunnelIndex: uint32(index), SessionWindow: uint32(mux.Window()), ConfigVersion: snap.Version,
		Capabilities: tunnel.Capabilities()}
	hctx, hcancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer hcancel()
	if err := mux.SendControl(hctx, &tunnelv1.Frame{Kind: &tunnelv1.Frame_Hello{Hello: hello}}); err != nil {
		c.metrics.tunnelConns.WithLabelValues("failed").Inc()
		return fmt.Errorf("%w: sending Hello: %v", errHandshake, err)
	}
	var welcome *tunnelv1.Welcome
	for welcome == nil {
		select {
		case <-st.notify:
			st.mu.Lock()
			welcome = st.welcome
			st.mu.Unlock()
		case err := <-runDone:
			c.metrics.tunnelConns.WithLabelValues("failed").Inc()
			return fmt.Errorf("%w: the stream ended before Welcome: %v", errHandshake, err)
		case <-hctx.Done():
			c.metrics.tunnelConns.WithLabelValues("failed").Inc()
			return fmt.Errorf("%w: no Welcome within %v", errHandshake, c.cfg.HandshakeTimeout)
		}
	}
	hcancel()
	if v := welcome.GetProtocolVersion(); v != ProtocolVersion {
		c.metrics.tunnelConns.WithLabelValues("failed").Inc()
		return fmt.Errorf("%w: the server speaks tunnel protocol version %d, this client %d", errHandshake, v, ProtocolVersion)
	}
	mux.UsePeerCapabilities(welcome.GetCapabilities())
	c.metrics.tunnelConns.WithLabelValues("up").Inc()
	st.mu.Lock()
	st.applied = welcome.GetConfigVersion()
	if o := welcome.GetConfigOrigin(); o != "" && snap.Origin != "" && o != snap.Origin {
		// The server's version counts in another origin's numbers (a file's timestamp against
		// backend revisions): it does not keep this client from pushing.
		st.log.WithFields(logrus.Fields{"server_config_version": st.applied, "server_config_origin": o, "config_origin": snap.Origin}).
			Info("the server holds a configuration of another origin; it will be replaced")
		st.applied = 0
	}
	st.mu.Unlock()

	c.mu.Lock()
	c.streams[st] = struct{}{}
	n := len(c.streams)
	c.reportTunnels(n)
	c.mu.Unlock()
	c.metrics.tunnels.Set(float64(n))
	st.log.WithFields(logrus.Fields{"event": EventTunnelUp, "proxy_id": welcome.GetProxyId(), "server_version": welcome.GetServerVersion(),
		"server_config_version": welcome.GetConfigVersion(), "license_valid": welcome.GetLicense().GetValid()}).
		Info("tunnel established")
	defer func() {
		c.mu.Lock()
		delete(c.streams, st)
		n := len(c.streams)
		c.reportTunnels(n)
		c.mu.Unlock()
		c.metrics.tunnels.Set(float64(n))
	}()

	// The configuration push: now, and whenever the configuration changes.
	var waitApplied <-chan time.Time
	var waitTimer *time.Timer
	push := func(snap *Snapshot) {
		st.mu.Lock()
		known := max(st.applied, st.sent)
		st.mu.Unlock()
		if snap.Version <= known {
			if snap.Version < known {
				st.log.WithFields(logrus.Fields{"config_version": snap.Version, "server_config_version": known}).
					Warn("the server holds a newer configuration version (from another client?); not pushing this one")
			}
			return
		}
		if err := c.pushConfig(ctx, st, snap); err != nil {
			st.log.WithError(err).WithField("config_version", snap.Version).Warn("configuration not pushed: the stream ended")
			return
		}
		if waitTimer != nil {
			waitTimer.Stop()
		}
		waitTimer = time.NewTimer(c.cfg.ConfigTimeout)
		waitApplied = waitTimer.C
	}
	defer func() {
		if waitTimer != nil {
			waitTimer.Stop()
		}
	}()
	push(snap)
	lic, licSum, licChanged := c.licenseState()
	c.pushLicense(ctx, st, lic, licSum)
	for {
		select {
		case err := <-runDone:
			c.events.Emit(st.log, event.New(EventTunnelDown, "tunnel ended").With("error", errString(err)))
			return err
		case <-cfgChanged:
			snap, cfgChanged = c.configState()
			push(snap)
		case <-licChanged:
			lic, licSum, licChanged = c.licenseState()
			c.pushLicense(ctx, st, lic, licSum)
		case <-st.notify:
			st.mu.Lock()
			answered := st.answered >= st.sent
			st.mu.Unlock()
			if answered && waitTimer != nil {
				waitTimer.Stop()
				waitApplied = nil
			}
		case <-waitApplied:
			waitApplied = nil
			st.log.WithFields(logrus.Fields{"config_version": snap.Version, "waited": c.cfg.ConfigTimeout.String()}).
				Warn("no ConfigApplied from the server yet")
		}
	}
}

// pushConfig sends snap on st: one ConfigSnapshot and the chunks of large CRLs.
func (c *Client) pushConfig(ctx context.Context, st *stream, snap *Snapshot) error {
	frames := configFrames(snap, ChunkSize)
	sent := len(frames)
	for _, f := range frames {
		if err := st.mux.SendControl(ctx, f); err != nil {
			return err
		}
	}
	for _, c := range snap.Security.GetCrls() {
		if !streamed(c) {
			continue
		}
		n, err := streamCRL(ctx, st.mux.SendControl, snap.Version, c, snap.CRLSource, ChunkSize)
		sent += n
		if err != nil {
			// The server keeps waiting for the chunks until a newer version replaces this one.
			st.log.WithError(err).WithField("config_version", snap.Version).Error("configuration push incomplete: a CRL could not be read")
			return err
		}
	}
	st.mu.Lock()
	st.sent = snap.Version
	st.mu.Unlock()
	st.log.WithFields(logrus.Fields{"event": EventConfigPushed, "config_version": snap.Version,
		"config_sha256": fmt.Sprintf("%x", snap.Digest[:8]), "frames": sent}).Info("configuration pushed")
	return nil
}

// control handles every frame that is not about a session (tunnel.Config.Control). It runs on
// the stream's reading goroutine and must not block: it records and logs, and wakes runStream.
func (st *stream) control(f *tunnelv1.Frame) {
	c := st.c
	switch k := f.GetKind().(type) {
	case *tunnelv1.Frame_Welcome:
		st.mu.Lock()
		first := st.welcome == nil
		if first {
			st.welcome = k.Welcome
		}
		st.mu.Unlock()
		if !first {
			st.log.Warn("second Welcome from the server ignored")
			return
		}
		// Recorded here, on the reading goroutine, so that a LicenseStatus that follows the
		// Welcome is never overwritten by it.
		c.mu.Lock()
		c.proxyID = k.Welcome.GetProxyId()
		if l := k.Welcome.GetLicense(); l != nil {
			c.license = l
		}
		c.mu.Unlock()
		if l := k.Welcome.GetLicense(); l != nil {
			logLicense(st.log, l)
			if l.GetProxyId() == "" {
				l = &tunnelv1.LicenseStatus{ProxyId: k.Welcome.GetProxyId(), Valid: l.GetValid(), ExpiresAt: l.GetExpiresAt(), Reason: l.GetReason()}
			}
			c.observe(func(o Observer) { o.LicenseStatus(l) })
		}
		st.wake()
	case *tunnelv1.Frame_ConfigApplied:
		ca := k.ConfigApplied
		st.mu.Lock()
		st.answered = max(st.answered, ca.GetVersion())
		if ca.GetOk() {
			st.applied = max(st.applied, ca.GetVersion())
			st.cfgErrs = nil
		} else {
			st.cfgErrs = ca.GetErrors()
		}
		st.mu.Unlock()
		log := st.log.WithField("config_version", ca.GetVersion())
		if ca.GetOk() {
			c.metrics.configResults.WithLabelValues("applied").Inc()
			log.WithField("event", EventConfigApplied).Info("the server applied the configuration")
		} else {
			c.metrics.configResults.WithLabelValues("rejected").Inc()
			if len(ca.GetErrors()) == 0 {
				c.events.Emit(log, event.New(EventConfigRejected, "the server refused the configuration without naming a field"))
			}
			for _, e := range ca.GetErrors() {
				c.events.Emit(log, event.New(EventConfigRejected, "the server refused the configuration").
					With("field", e.GetField()).With("error", e.GetMessage()))
			}
		}
		st.mu.Lock()
		proxyID := st.welcome.GetProxyId()
		st.mu.Unlock()
		c.observe(func(o Observer) {
			o.ConfigResult(ConfigResult{Version: ca.GetVersion(), Applied: ca.GetOk(), Errors: ca.GetErrors(), Tunnel: st.index, ProxyID: proxyID})
		})
		st.wake()
	case *tunnelv1.Frame_Event:
		c.metrics.events.WithLabelValues(severityName(k.Event.GetSeverity())).Inc()
		logEvent(st.log, k.Event)
		c.observe(func(o Observer) { o.ServerEvent(k.Event) })
	case *tunnelv1.Frame_CrlUrlReport:
		logCRLURLReport(st.log, k.CrlUrlReport)
		c.observe(func(o Observer) { o.CRLURLs(k.CrlUrlReport.GetUrls()) })
	case *tunnelv1.Frame_LicenseStatus:
		c.mu.Lock()
		c.license = k.LicenseStatus
		if id := k.LicenseStatus.GetProxyId(); id != "" {
			c.proxyID = id
		}
		c.mu.Unlock()
		logLicense(st.log, k.LicenseStatus)
		c.observe(func(o Observer) { o.LicenseStatus(k.LicenseStatus) })
	case *tunnelv1.Frame_Drain:
		d := k.Drain
		st.mu.Lock()
		st.draining = true
		st.mu.Unlock()
		e := event.New(EventTunnelDraining, "the server is draining this tunnel; its sessions run on, new ones come on the replacement tunnel")
		e.Reason = d.GetReason()
		if ts := d.GetDeadline(); ts != nil {
			e = e.With("deadline", ts.AsTime().UTC().Format(time.RFC3339))
		}
		if ra := d.GetReconnectAfter(); ra != nil {
			e = e.With("reconnect_after", ra.AsDuration().String())
		}
		c.events.Emit(st.log, e)
	default:
		st.log.WithField("frame", fmt.Sprintf("%T", f.GetKind())).Warn("unexpected frame from the server ignored")
	}
}

func severityName(s tunnelv1.Severity) string {
	switch s {
	case tunnelv1.Severity_SEVERITY_DEBUG:
		return "debug"
	case tunnelv1.Severity_SEVERITY_INFO:
		return "info"
	case tunnelv1.Severity_SEVERITY_WARNING:
		return "warning"
	case tunnelv1.Severity_SEVERITY_ERROR:
		return "error"
	case tunnelv1.Severity_SEVERITY_CRITICAL:
		return "critical"
	}
	return "unspecified"
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// muxMetrics feeds a stream's multiplexer counters into the client's metrics
// (tunnel.Metrics). Its methods run under the multiplexer's lock: they only count.
type muxMetrics struct{ st *stream }

func (m muxMetrics) DataSent(int)        {}
func (m muxMetrics) DataReceived(int)    {}
func (m muxMetrics) SessionStarted(bool) {}
func (m muxMetrics) SessionEnded(error)  {}
func (m muxMetrics) WindowStall()        {}
func (m muxMetrics) RTT(d time.Duration) {
	m.st.rtt.Store(int64(d))
	m.st.c.metrics.rtt.Observe(d.Seconds())
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// reportTunnels tells the health service how many tunnel streams are up. c.mu is held, so
// that the reports keep the order of the changes.
func (c *Client) reportTunnels(n int) {
	if c.cfg.Health != nil {
		c.cfg.Health.Set(admin.HealthClientTunnel, n > 0, "no tunnel stream to the server")
	}
}
