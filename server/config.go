package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"smartproxy/internal/event"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// assembler collects one tunnel's pending ConfigSnapshot and the ConfigChunk frames of its
// chunked CRLs. It is owned by the tunnel's control handler (not safe for concurrent use).
type assembler struct {
	maxBytes int64 // bound of all chunked CRL bytes of one snapshot

	pending *tunnelv1.ConfigSnapshot // a private clone; nil when nothing is pending
	missing map[string]*crlParts     // chunked CRLs still incomplete, by Crl.id
	sinceGC int64                    // chunk bytes appended since the last collection
}

// chunkGarbage is how many bytes of received chunks may become garbage before the assembler
// asks for a collection. Each ConfigChunk arrives as a frame of its own (up to 1 MiB) whose
// data is garbage once appended to the CRL being reassembled. Left to the collector's pacing,
// that garbage grows to about the size of the live heap, which by then holds the whole DER,
// before the first collection; the index built next then lifted the peak resident set to
// 3.3 × the CRL's size (docs/benchmarks.md, "A CRL of 1,000,000 revoked serials"). Collecting
// every 8 MiB, and once more when a CRL is whole, keeps the garbage to 8 MiB at a cost of a
// few collections per large CRL, which are rare.
const chunkGarbage = 8 << 20

// crlParts is one chunked CRL being reassembled.
type crlParts struct {
	crl  *tunnelv1.Crl // in pending; its der is filled when complete
	size uint64
	buf  []byte
}

// snapshot starts a new pending configuration. It returns the snapshot when it is already
// complete (no chunked CRL), or errors when it cannot be reassembled at all.
func (a *assembler) snapshot(s *tunnelv1.ConfigSnapshot) (*tunnelv1.ConfigSnapshot, ConfigErrors) {
	a.pending, a.missing = nil, nil
	snap := proto.Clone(s).(*tunnelv1.ConfigSnapshot)
	var errs ConfigErrors
	var total int64
	missing := make(map[string]*crlParts)
	for i, c := range snap.GetConfig().GetCrls() {
		if len(c.GetDer()) > 0 {
			if c.GetSize() != 0 && c.GetSize() != uint64(len(c.GetDer())) {
				errs = append(errs, ConfigError{Field: fmt.Sprintf("crls[%d].size", i), Message: fmt.Sprintf("%d, but der holds %d bytes", c.GetSize(), len(c.GetDer()))})
			}
			continue
		}
		if c.GetSize() == 0 {
			continue // CompilePolicy reports the empty CRL with its field
		}
		if c.GetId() == "" || missing[c.GetId()] != nil {
			errs = append(errs, ConfigError{Field: fmt.Sprintf("crls[%d].id", i), Message: "a chunked CRL needs a unique id"})
			continue
		}
		total += int64(c.GetSize())
		if c.GetSize() > uint64(a.maxBytes) || total > a.maxBytes {
			errs = append(errs, ConfigError{Field: fmt.Sprintf("crls[%d].size", i),
				Message: fmt.Sprintf("chunked CRLs of this snapshot exceed the server's limit of %d bytes", a.maxBytes)})
			continue
		}
		missing[c.GetId()] = &crlParts{crl: c, size: c.GetSize()}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if len(missing) == 0 {
		return snap, nil
	}
	a.pending, a.missing = snap, missing
	return nil, nil
}

// chunk adds one ConfigChunk. It returns the completed snapshot once its last CRL is whole,
// or errors (which drop the pending snapshot).
func (a *assembler) chunk(c *tunnelv1.ConfigChunk) (*tunnelv1.ConfigSnapshot, uint64, ConfigErrors) {
	if a.pending == nil || c.GetVersion() != a.pending.GetVersion() {
		return nil, c.GetVersion(), ConfigErrors{{Field: "config_chunk.version",
			Message: fmt.Sprintf("chunk for version %d, but no snapshot of that version is incomplete", c.GetVersion())}}
	}
	version := a.pending.GetVersion()
	fail := func(msg string) (*tunnelv1.ConfigSnapshot, uint64, ConfigErrors) {
		a.pending, a.missing = nil, nil
		return nil, version, ConfigErrors{{Field: "config_chunk[crl_id=" + strconv.Quote(c.GetCrlId()) + "]", Message: msg}}
	}
	p := a.missing[c.GetCrlId()]
	if p == nil {
		return fail("no chunked CRL of that id is incomplete")
	}
	if c.GetOffset() != uint64(len(p.buf)) {
		return fail(fmt.Sprintf("offset %d, want %d (chunks must arrive in order without gaps)", c.GetOffset(), len(p.buf)))
	}
	if uint64(len(p.buf))+uint64(len(c.GetData())) > p.size {
		return fail(fmt.Sprintf("chunks exceed the announced size %d", p.size))
	}
	if len(c.GetData()) == 0 {
		return fail("empty chunk")
	}
	if p.buf == nil {
		p.buf = make([]byte, 0, p.size) // size was bounded by maxBytes in snapshot
	}
	p.buf = append(p.buf, c.GetData()...)
	a.sinceGC += int64(len(c.GetData()))
	complete := uint64(len(p.buf)) == p.size
	if a.sinceGC >= chunkGarbage || complete {
		a.sinceGC = 0
		runtime.GC()
	}
	if !complete {
		return nil, version, nil
	}
	p.crl.Der, p.buf = p.buf, nil
	delete(a.missing, c.GetCrlId())
	if len(a.missing) > 0 {
		return nil, version, nil
	}
	snap := a.pending
	a.pending, a.missing = nil, nil
	return snap, version, nil
}

// applyResult is what applying a snapshot came to.
type applyResult struct {
	applied bool   // the version is now in force
	current uint64 // the version in force afterwards
	errs    ConfigErrors
}

// applySnapshot compiles a complete snapshot and makes it the policy in force when its version
// is higher than the current one. The newest version wins across all tunnels: an older or
// equal version is not applied (an equal one is reported as in force). Versions are compared
// only between snapshots of one origin: a file's version (a timestamp in milliseconds) would
// otherwise outrank every backend revision for years, and a client switched from its file to
// the backend could not replace the configuration without a restart of the server. A snapshot
// of another origin is applied whatever its version.
func (s *Server) applySnapshot(snap *tunnelv1.ConfigSnapshot, from string) applyResult {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	cur := s.policy.Load()
	var curVersion uint64
	var curOrigin string
	if cur != nil {
		curVersion, curOrigin = cur.Version, cur.Origin
	}
	v, origin := snap.GetVersion(), snap.GetOrigin()
	switched := cur != nil && origin != "" && curOrigin != "" && origin != curOrigin
	if !switched && v != 0 && v <= curVersion {
		s.metrics.configResults.WithLabelValues("stale").Inc()
		if v == curVersion {
			return applyResult{applied: true, current: curVersion}
		}
		return applyResult{current: curVersion, errs: ConfigErrors{{Field: "version",
			Message: fmt.Sprintf("version %d is older than the version %d in force", v, curVersion)}}}
	}
	pol, err := CompilePolicy(v, snap.GetConfig(), s.now())
	if err == nil {
		err = s.checkSourceIP(pol)
	}
	if err != nil {
		ces, ok := err.(ConfigErrors)
		if !ok {
			ces = ConfigErrors{{Field: "config", Message: err.Error()}}
		}
		s.metrics.configResults.WithLabelValues("rejected").Inc()
		s.emit(event.Event{Name: EventConfigRejected, Severity: errorSeverity, Reason: "invalid",
			Message: fmt.Sprintf("configuration version %d refused; version %d stays in force: %s", v, curVersion, joinErrs(ces))}.
			With("config_version", strconv.FormatUint(v, 10)).With("from_tunnel", from))
		return applyResult{current: curVersion, errs: ces}
	}
	pol.Origin = origin
	s.policy.Store(pol)
	s.metrics.configResults.WithLabelValues("applied").Inc()
	if switched {
		s.emit(event.Event{Name: EventConfigOriginChanged, Severity: warnSeverity,
			Message: fmt.Sprintf("configuration of origin %q version %d replaces origin %q version %d", origin, v, curOrigin, curVersion)}.
			With("config_version", strconv.FormatUint(v, 10)).With("old_config_version", strconv.FormatUint(curVersion, 10)).
			With("config_origin", origin).With("old_config_origin", curOrigin).With("from_tunnel", from))
	}
	s.metrics.configVersion.Set(float64(v))
	if pol.LogLevel != 0 && (cur == nil || cur.LogLevel != pol.LogLevel) && pol.LogLevel != s.levels.Global() {
		s.levels.SetGlobal(pol.LogLevel, fmt.Sprintf("configuration version %d", v))
	}
	s.emit(event.Event{Name: EventConfigApplied, Severity: infoSeverity,
		Message: fmt.Sprintf("configuration version %d in force: %d partners, %d trusted CAs, %d CRLs, partner listener %s, PROXY protocol %s",
			v, len(pol.Partners), len(pol.CAs), len(pol.CRLs), pol.ListenAddress, proxySourcesText(pol.ProxySources))}.
		With("config_version", strconv.FormatUint(v, 10)).With("from_tunnel", from))
	for _, w := range pol.Warnings {
		s.emit(event.Event{Name: EventConfigWarning, Severity: warnSeverity, Reason: "config_warning", Message: w}.
			With("config_version", strconv.FormatUint(v, 10)))
	}
	s.kickListener()
	return applyResult{applied: true, current: v}
}

// checkSourceIP checks that the policy's outgoing source address is an address of this host,
// by binding a UDP socket to it (nothing is sent). A missing address refuses the whole
// configuration version with a critical outgoing_source_ip_unavailable event: every outgoing
// session would fail, and the operator must learn it now, not from the first partner that
// cannot be reached. The original product stops the DMZ process here; that would also cut every
// incoming partner, so the server keeps the last good configuration instead.
func (s *Server) checkSourceIP(pol *Policy) error {
	ip := pol.OutgoingSourceIP
	if !ip.IsValid() {
		return nil
	}
	c, err := net.ListenPacket("udp", netip.AddrPortFrom(ip, 0).String())
	if err == nil {
		c.Close()
		return nil
	}
	msg := fmt.Sprintf("%s is not an address of this host (%v)", ip, unwrapOpError(err))
	s.emit(event.Security(EventOutgoingSourceIPUnavailable, "", "", "not_local_address",
		fmt.Sprintf("configuration version %d refused: outgoing_source_ip %s", pol.Version, msg)).
		With("source_ip", ip.String()).With("config_version", strconv.FormatUint(pol.Version, 10)))
	return ConfigErrors{{Field: "outgoing_source_ip", Message: msg}}
}

// unwrapOpError returns the system error inside a *net.OpError ("cannot assign requested
// address"), or err itself.
func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func joinErrs(ces ConfigErrors) string {
	parts := make([]string, len(ces))
	for i, ce := range ces {
		parts[i] = ce.Error()
	}
	return strings.Join(parts, "; ")
}

// reportCRLURLs sends a CrlUrlReport with the URLs not yet reported for the configuration
// version in force.
func (s *Server) reportCRLURLs(version uint64, urls []string) {
	if len(urls) == 0 {
		return
	}
	s.crlMu.Lock()
	if s.crlVersion != version {
		s.crlVersion = version
		clear(s.crlReported)
	}
	var fresh []string
	for _, u := range urls {
		if !s.crlReported[u] {
			s.crlReported[u] = true
			fresh = append(fresh, u)
		}
	}
	s.crlMu.Unlock()
	if len(fresh) == 0 {
		return
	}
	s.metrics.crlReports.Add(float64(len(fresh)))
	s.log.WithFields(map[string]any{"event": "crl_url_report", "urls": strings.Join(fresh, " ")}).
		Info("reporting CRL distribution points the configuration does not cover")
	select {
	case s.events <- queuedEvent{frame: &tunnelv1.Frame{Kind: &tunnelv1.Frame_CrlUrlReport{CrlUrlReport: &tunnelv1.CrlUrlReport{Urls: fresh}}}}:
	default:
		s.metrics.eventsDropped.Inc()
	}
}
