package spool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
	"smartproxy/internal/backoff"
)

// PostFunc delivers a batch of events to the backend. It returns nil when the backend holds
// every event of the batch (stored now, or before under the same id), a *RejectedError when the
// backend refused one event for good, or another error for a failure worth retrying.
type PostFunc func(ctx context.Context, evs []apiv1.Event) error

// RejectedError says the backend refused the event at Index of a batch as invalid; sending it
// again cannot succeed.
type RejectedError struct {
	// Index is the position of the refused event in the batch, or -1 when the backend refused
	// the batch without naming an event (Send then sends the events one by one to find it).
	Index int
	// Err is the backend's answer.
	Err error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("event %d of the batch refused: %v", e.Index, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// Defaults of SendConfig.
const (
	// DefaultBatchEvents is SendConfig.BatchEvents when zero.
	DefaultBatchEvents = 500
	// DefaultBatchBytes is SendConfig.BatchBytes when zero.
	DefaultBatchBytes = 1 << 20
	// DefaultRetryBase is SendConfig.Backoff.Base when zero.
	DefaultRetryBase = time.Second
	// DefaultRetryCap is SendConfig.Backoff.Cap when zero.
	DefaultRetryCap = time.Minute
)

// SendConfig configures Send. Its zero value is the documented defaults.
type SendConfig struct {
	// BatchEvents is the largest number of events posted at once, at most
	// apiv1.MaxEventsPerRequest. If zero, DefaultBatchEvents.
	BatchEvents int
	// BatchBytes bounds the record bytes posted at once (the JSON body is about as large), well
	// below apiv1.MaxEventsRequestBytes. If zero, DefaultBatchBytes.
	BatchBytes int64
	// Backoff spaces retries after a failed post (full jitter). If its Base or Cap is zero,
	// DefaultRetryBase and DefaultRetryCap are used.
	Backoff backoff.Exponential
}

// SendStats counts what Send did.
type SendStats struct {
	// Sent is the number of events the backend accepted (new or duplicate).
	Sent uint64
	// Rejected is the number of events the backend refused as invalid; they were dropped.
	Rejected uint64
	// Failures is the number of failed posts that were retried.
	Failures uint64
}

// Send posts the spooled events, oldest first, in batches until ctx ends, and returns nil then.
// A batch is acknowledged (removed from disk) only after post returned nil for it. A failed post
// is retried after a full-jitter backoff; an event the backend rejects as invalid is dropped and
// logged with its id and name, so that it cannot block the events behind it. If stats is not
// nil, it is updated as Send goes (read it only after Send returned).
func (s *Spool) Send(ctx context.Context, post PostFunc, cfg SendConfig, stats *SendStats) error {
	if cfg.BatchEvents <= 0 {
		cfg.BatchEvents = DefaultBatchEvents
	}
	cfg.BatchEvents = min(cfg.BatchEvents, apiv1.MaxEventsPerRequest)
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	bo := cfg.Backoff
	if bo.Base <= 0 {
		bo.Base = DefaultRetryBase
	}
	if bo.Cap <= 0 {
		bo.Cap = DefaultRetryCap
	}
	if stats == nil {
		stats = &SendStats{}
	}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-s.kick:
			return true
		case <-t.C:
			return true
		}
	}
	limit := cfg.BatchEvents
	for ctx.Err() == nil {
		b, err := s.Peek(limit, cfg.BatchBytes)
		if err != nil {
			stats.Failures++
			s.log.WithError(err).Error("spool: reading events failed; retrying")
			if !wait(bo.Next()) {
				return nil
			}
			continue
		}
		if len(b.Events) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-s.ready:
			}
			continue
		}
		err = post(ctx, b.Events)
		if ctx.Err() != nil {
			return nil
		}
		var rej *RejectedError
		switch {
		case err == nil:
			if err := s.Ack(b, -1); err != nil {
				stats.Failures++
				s.log.WithError(err).Error("spool: acknowledging sent events failed; they will be sent again (the backend drops duplicates)")
				if !wait(bo.Next()) {
					return nil
				}
				continue
			}
			stats.Sent += uint64(len(b.Events))
			limit = cfg.BatchEvents
			bo.Reset()
		case errors.As(err, &rej):
			if rej.Index < 0 || rej.Index >= len(b.Events) {
				if len(b.Events) > 1 {
					// The batch was refused without naming the event: find it one by one.
					limit = 1
					continue
				}
				rej.Index = 0
			}
			if rej.Index > 0 {
				// Send the events before the refused one first; it is then the oldest.
				limit = rej.Index
				continue
			}
			ev := b.Events[0]
			s.log.WithError(rej.Err).WithFields(logrus.Fields{"event": "spool_event_rejected", "event_id": ev.ID, "event_name": ev.Name,
				"event_time": ev.Time.Format(time.RFC3339Nano)}).Error("spool: the backend refused an event as invalid; it is dropped")
			if err := s.Ack(b, 1); err != nil {
				stats.Failures++
				s.log.WithError(err).Error("spool: dropping the refused event failed; retrying")
				if !wait(bo.Next()) {
					return nil
				}
				continue
			}
			stats.Rejected++
			limit = cfg.BatchEvents
		default:
			stats.Failures++
			d := bo.Next()
			n, _ := s.Len()
			s.log.WithError(err).WithFields(logrus.Fields{"pending": n, "retry_in": d.Round(time.Millisecond).String()}).
				Warn("spool: posting events to the backend failed; they stay on disk")
			if !wait(d) {
				return nil
			}
		}
	}
	return nil
}
