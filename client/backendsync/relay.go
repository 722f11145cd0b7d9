package backendsync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"smartproxy/internal/event"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
	"smartproxy/apiclient"
	"smartproxy/client"
	"smartproxy/client/spool"
	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// maxStatuses bounds the configuration statuses waiting for the backend; older ones are
// superseded by newer ones anyway.
const maxStatuses = 32

var _ client.Observer = (*Syncer)(nil)

// ConfigResult reports a server's answer to a configuration version to the backend (once per
// version and outcome). It implements client.Observer.
func (s *Syncer) ConfigResult(r client.ConfigResult) {
	s.mu.Lock()
	rev, ok := s.revs[r.Version]
	done, seen := s.reported[r.Version]
	s.mu.Unlock()
	if !ok {
		s.log.WithField("config_version", r.Version).Debug("answer for a configuration version not from the backend; not reported")
		return
	}
	if seen && done == r.Applied {
		return
	}
	st := &apiv1.ConfigStatus{Revision: rev.rev, ETag: rev.etag, Applied: r.Applied}
	for _, e := range r.Errors {
		st.Errors = append(st.Errors, apiv1.ConfigError{Field: e.GetField(), Message: e.GetMessage()})
	}
	s.mu.Lock()
	s.reported[r.Version] = r.Applied
	s.mu.Unlock()
	s.queueStatus(st)
}

// queueStatus queues a configuration status for the backend.
func (s *Syncer) queueStatus(st *apiv1.ConfigStatus) {
	s.mu.Lock()
	s.statuses = append(s.statuses, st)
	if n := len(s.statuses); n > maxStatuses {
		s.statuses = slices.Delete(s.statuses, 0, n-maxStatuses)
	}
	s.mu.Unlock()
	s.signal()
}

// ServerEvent queues a server event for the spool. It implements client.Observer.
func (s *Syncer) ServerEvent(ev *tunnelv1.Event) {
	e := apiv1.Event{Name: ev.GetName(), Severity: severityOf(ev.GetSeverity()), SessionID: ev.GetSessionId(),
		OdetteID: ev.GetOdetteId(), RemoteAddr: ev.GetRemoteAddr(), Message: ev.GetMessage(), Source: apiv1.SourceServer}
	if ts := ev.GetTime(); ts != nil {
		e.Time = ts.AsTime()
	} else {
		e.Time = s.now()
	}
	if len(ev.GetFields()) > 0 {
		e.Fields = make(map[string]string, len(ev.GetFields()))
		for k, v := range ev.GetFields() {
			e.Fields[k] = v
		}
	}
	s.enqueue(e)
}

// CRLURLs queues reported CRL distribution points for the backend. It implements
// client.Observer.
func (s *Syncer) CRLURLs(urls []string) {
	s.mu.Lock()
	for _, u := range urls {
		if err := apiv1.ValidateCRLURL(u); err != nil {
			s.log.WithError(err).WithField("url", u).Warn("reported CRL distribution point not passed to the backend (only http and https URLs are)")
			continue
		}
		s.urls[u] = true
	}
	s.mu.Unlock()
	s.signal()
}

// LicenseStatus queues a server's license state for the backend. It implements client.Observer.
func (s *Syncer) LicenseStatus(l *tunnelv1.LicenseStatus) {
	st := &apiv1.LicenseStatus{ProxyID: l.GetProxyId(), Valid: l.GetValid(), Reason: l.GetReason()}
	if ts := l.GetExpiresAt(); ts != nil {
		t := ts.AsTime()
		st.ExpiresAt = &t
	}
	s.mu.Lock()
	s.license, s.lastLic = st, st
	s.mu.Unlock()
	s.signal()
}

// tunnelState summarises the client's tunnel streams for the backend.
func tunnelState(list []client.TunnelInfo) *apiv1.TunnelState {
	st := &apiv1.TunnelState{Streams: len(list)}
	for _, ti := range list {
		st.OpenSessions += ti.Sessions
		if st.ConnectedAt == nil || ti.ConnectedAt.Before(*st.ConnectedAt) {
			at := ti.ConnectedAt.UTC()
			st.ConnectedAt = &at
		}
	}
	return st
}

func (s *Syncer) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func severityOf(v tunnelv1.Severity) apiv1.Severity {
	switch v {
	case tunnelv1.Severity_SEVERITY_DEBUG:
		return apiv1.SeverityDebug
	case tunnelv1.Severity_SEVERITY_WARNING:
		return apiv1.SeverityWarning
	case tunnelv1.Severity_SEVERITY_ERROR:
		return apiv1.SeverityError
	case tunnelv1.Severity_SEVERITY_CRITICAL:
		return apiv1.SeverityCritical
	}
	return apiv1.SeverityInfo
}

// enqueue hands an event to eventLoop without blocking; a full queue drops it and counts.
func (s *Syncer) enqueue(e apiv1.Event) {
	select {
	case s.events <- e:
	default:
		s.eventsDropped.Add(1)
	}
}

// ClientEvent queues one of the client's own events for the spool, with source "client". It
// implements client.Observer; the Syncer's own emitter hands its events here too.
func (s *Syncer) ClientEvent(ev event.Event) {
	e := apiv1.Event{Time: s.now(), Name: ev.Name, Severity: severityOf(ev.Severity), SessionID: ev.SessionID,
		OdetteID: ev.OdetteID, RemoteAddr: ev.RemoteAddr, Message: ev.Message, Source: apiv1.SourceClient}
	if len(ev.Fields) > 0 || ev.Reason != "" {
		e.Fields = make(map[string]string, len(ev.Fields)+1)
		for k, v := range ev.Fields {
			e.Fields[k] = v
		}
		if ev.Reason != "" {
			e.Fields["reason"] = ev.Reason
		}
	}
	s.enqueue(e)
}

// sanitize fits an event into the contract's limits, marking what it shortened, so that the
// backend never refuses it for its size or encoding (the full text stays in the log).
func sanitize(e *apiv1.Event) {
	e.Message = clip(e.Message, apiv1.MaxTextLength)
	e.OdetteID = clip(e.OdetteID, apiv1.MaxAddressLength)
	e.RemoteAddr = clip(e.RemoteAddr, apiv1.MaxAddressLength)
	if bad := strings.IndexFunc(e.Name, func(r rune) bool { return r <= ' ' || r >= 0x7f }); bad >= 0 || e.Name == "" || len(e.Name) > apiv1.MaxNameLength {
		if e.Fields == nil {
			e.Fields = make(map[string]string)
		}
		e.Fields["original_name"] = clip(strconv.Quote(e.Name), apiv1.MaxFieldValueLength)
		e.Name = "unnamed_event"
	}
	if len(e.Fields) == 0 {
		return
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string]string, min(len(keys), apiv1.MaxFields))
	for i, k := range keys {
		if len(out) == apiv1.MaxFields-1 && i < len(keys)-1 {
			out["fields_omitted"] = strconv.Itoa(len(keys) - i)
			break
		}
		nk := clip(k, apiv1.MaxNameLength)
		if nk == "" {
			continue
		}
		out[nk] = clip(e.Fields[k], apiv1.MaxFieldValueLength)
	}
	e.Fields = out
}

// clip returns s as valid UTF-8 of at most n bytes; a shortened text ends with a marker that
// says how long it was.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	marker := fmt.Sprintf("… [%d bytes, shortened]", len(s))
	cut := n - len(marker)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:max(cut, 0)] + marker
}

// eventLoop moves queued events into the spool, in batches, and reports drops.
func (s *Syncer) eventLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	var reportedDrops uint64
	batch := make([]apiv1.Event, 0, 256)
	for {
		select {
		case <-ctx.Done():
			// Whatever is still queued goes to disk: it was promised to the log already.
			batch = batch[:0]
			for drained := false; !drained; {
				select {
				case e := <-s.events:
					batch = append(batch, e)
				default:
					drained = true
				}
			}
			s.spoolBatch(batch)
			return
		case e := <-s.events:
			batch = append(batch[:0], e)
		more:
			for len(batch) < cap(batch) {
				select {
				case e := <-s.events:
					batch = append(batch, e)
				default:
					break more
				}
			}
			s.spoolBatch(batch)
		case <-t.C:
		}
		if n := s.eventsDropped.Load(); n != reportedDrops {
			s.log.WithFields(logrus.Fields{"event": EventEventsDropped, "dropped_total": n, "dropped": n - reportedDrops}).
				Error("events dropped before reaching the spool (queue full or event refused); they are in this log only")
			reportedDrops = n
		}
	}
}

// spoolBatch appends events to the spool. An event the spool refuses is dropped and counted;
// the others are kept.
func (s *Syncer) spoolBatch(batch []apiv1.Event) {
	if len(batch) == 0 {
		return
	}
	for i := range batch {
		sanitize(&batch[i])
	}
	if err := s.spool.Append(batch...); err == nil {
		return
	}
	for i := range batch {
		if err := s.spool.Append(batch[i]); err != nil {
			s.eventsDropped.Add(1)
			s.log.WithError(err).WithField("event_name", batch[i].Name).Warn("event not spooled")
		}
	}
}

// postEvents is the spool's PostFunc: it maps the backend's refusal of one event to a
// spool.RejectedError.
func (s *Syncer) postEvents(ctx context.Context, evs []apiv1.Event) error {
	accepted, dups, err := s.cfg.API.PostEvents(ctx, evs)
	if err == nil {
		s.log.WithFields(logrus.Fields{"accepted": accepted, "duplicates": dups}).Debug("events posted")
		return nil
	}
	var ae *apiclient.APIError
	var fe *apiv1.FieldError
	switch {
	case errors.As(err, &ae) && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusRequestEntityTooLarge):
		return &spool.RejectedError{Index: eventIndex(ae.Field), Err: err}
	case errors.As(err, &fe):
		// Refused by the client's own check before sending.
		return &spool.RejectedError{Index: eventIndex(fe.Field), Err: err}
	case errors.Is(err, apiclient.ErrRequestTooLarge):
		return &spool.RejectedError{Index: -1, Err: err}
	}
	return err
}

// eventIndex returns i of a field path "events[i]…", or -1.
func eventIndex(field string) int {
	rest, ok := strings.CutPrefix(field, "events[")
	if !ok {
		return -1
	}
	end := strings.IndexByte(rest, ']')
	if end <= 0 {
		return -1
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}

// reportLoop sends the queued configuration statuses, CRL URLs and license state, retrying
// with backoff until each is delivered or superseded, and the last license state again every
// StateInterval with the tunnel's current state.
func (s *Syncer) reportLoop(ctx context.Context, target Target) {
	bo := s.cfg.Backoff
	var retry <-chan time.Time
	var timer *time.Timer
	state := time.NewTicker(s.cfg.StateInterval)
	defer func() {
		state.Stop()
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-state.C:
			// The license status again, so that the backend sees the tunnel's current state.
			s.mu.Lock()
			if s.license == nil {
				s.license = s.lastLic
			}
			s.mu.Unlock()
			if retry != nil {
				continue
			}
		case <-s.wake:
			if retry != nil {
				continue // a retry is scheduled; it takes the new work too
			}
		case <-s.recovered:
			if timer != nil {
				timer.Stop()
			}
			retry = nil
		case <-retry:
			retry = nil
		}
		if err := s.report(ctx, target); err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			s.log.WithError(err).WithField("retry_in", d.Round(time.Millisecond).String()).Warn("report to the backend failed; retrying")
			timer = time.NewTimer(d)
			retry = timer.C
			continue
		}
		bo.Reset()
	}
}

// report sends what is queued; it stops at the first failure, leaving the rest queued.
func (s *Syncer) report(ctx context.Context, target Target) error {
	for {
		s.mu.Lock()
		var st *apiv1.ConfigStatus
		if len(s.statuses) > 0 {
			st = s.statuses[0]
		}
		s.mu.Unlock()
		if st == nil {
			break
		}
		if err := s.cfg.API.ReportConfigStatus(ctx, st); err != nil && !isPermanent(err) {
			return fmt.Errorf("configuration status: %w", err)
		} else if err != nil {
			s.log.WithError(err).WithField("revision", st.Revision).Error("the backend refused a configuration status; dropped")
		}
		s.mu.Lock()
		if len(s.statuses) > 0 && s.statuses[0] == st {
			s.statuses = s.statuses[1:]
		}
		s.mu.Unlock()
	}

	s.mu.Lock()
	urls := make([]string, 0, len(s.urls))
	for u := range s.urls {
		urls = append(urls, u)
	}
	s.mu.Unlock()
	slices.Sort(urls)
	for len(urls) > 0 {
		n := min(len(urls), apiv1.MaxCRLURLsPerRequest)
		part := urls[:n]
		urls = urls[n:]
		if err := s.cfg.API.ReportCRLURLs(ctx, part); err != nil && !isPermanent(err) {
			return fmt.Errorf("CRL URLs: %w", err)
		} else if err != nil {
			s.log.WithError(err).WithField("urls", strings.Join(part, " ")).Error("the backend refused reported CRL URLs; dropped")
		} else {
			s.log.WithField("urls", strings.Join(part, " ")).Info("CRL distribution points reported to the backend")
		}
		s.mu.Lock()
		for _, u := range part {
			delete(s.urls, u)
		}
		s.mu.Unlock()
	}

	s.mu.Lock()
	lic := s.license
	s.mu.Unlock()
	if lic != nil {
		withTunnel := *lic
		withTunnel.Tunnel = tunnelState(target.Tunnels())
		if err := s.cfg.API.PutLicenseStatus(ctx, &withTunnel); err != nil && !isPermanent(err) {
			return fmt.Errorf("license status: %w", err)
		} else if err != nil {
			s.log.WithError(err).Error("the backend refused the license status; dropped")
		}
		s.mu.Lock()
		if s.license == lic {
			s.license = nil
		}
		s.mu.Unlock()
		select {
		case s.licWake <- struct{}{}:
		default:
		}
	}
	return nil
}

// isPermanent reports whether the backend refused a request in a way that repeating it cannot
// change (a 4xx other than 401, 403, 408 and 429: the token may be fixed meanwhile).
func isPermanent(err error) bool {
	var ae *apiclient.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return ae.Status >= 400 && ae.Status < 500
}
