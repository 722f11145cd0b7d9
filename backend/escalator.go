package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
	"smartproxy/internal/logging"
)

// EscalatorConfig configures the event processor. The zero value logs
// events and runs no script.
type EscalatorConfig struct {
	// Script is the executable run for every escalated event, with the
	// event in SMARTPROXY_EVENT_* environment variables. If empty, events are
	// only logged.
	Script string
	// Timeout bounds one run of the script; then its process group is
	// killed. If zero, 30s.
	Timeout time.Duration
	// Concurrency is how many script runs may go on at once. If zero, 4.
	Concurrency int
	// Queue is how many batches of new events may wait for processing; when
	// it is full, new events stay unprocessed in the store until the next
	// start. If zero, 256.
	Queue int
	// MinSeverity is the least severity that runs the script. If empty,
	// "warning". It cannot be above "critical": critical events always run
	// it.
	MinSeverity apiv1.Severity
}

// Escalator processes new events: it matches each against the log-ignore
// rules valid now (a match is logged at INFO and not escalated) and runs the
// event script for the others of at least MinSeverity. Create it with
// NewEscalator; Run owns its goroutines.
type Escalator struct {
	// Immutable after NewEscalator.
	cfg   EscalatorConfig
	st    *store.Store
	log   logrus.FieldLogger
	now   func() time.Time
	queue chan []store.Event
}

// NewEscalator checks cfg and returns an Escalator. A configured script must
// be an executable regular file.
func NewEscalator(st *store.Store, cfg EscalatorConfig, log logrus.FieldLogger, now func() time.Time) (*Escalator, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 256
	}
	if cfg.MinSeverity == "" {
		cfg.MinSeverity = apiv1.SeverityWarning
	}
	if !cfg.MinSeverity.Valid() {
		return nil, fmt.Errorf("backend: event script severity %q is not debug, info, warning, error or critical", cfg.MinSeverity)
	}
	if cfg.Script != "" {
		fi, err := os.Stat(cfg.Script)
		if err != nil {
			return nil, fmt.Errorf("backend: event script: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("backend: event script %s is not an executable file", cfg.Script)
		}
	}
	if log == nil {
		log = logging.Discard()
	}
	if now == nil {
		now = time.Now
	}
	return &Escalator{cfg: cfg, st: st, log: log, now: now, queue: make(chan []store.Event, cfg.Queue)}, nil
}

// Submit hands newly stored events to the processor without waiting. When
// the queue is full the events stay unprocessed in the store (and are
// processed after the next start); that is logged.
func (e *Escalator) Submit(events []store.Event) {
	if len(events) == 0 {
		return
	}
	select {
	case e.queue <- events:
	default:
		e.log.WithField("events", len(events)).Error("event processing is behind; new events are stored but not processed until the next start")
	}
}

// Run processes pending (events stored but not processed before) and then
// every submitted batch until ctx ends. Script runs still going on then are
// killed; their events stay unprocessed and run again after the next start.
func (e *Escalator) Run(ctx context.Context, pending []store.Event) error {
	jobs := make(chan store.Event)
	var wg sync.WaitGroup
	for range e.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range jobs {
				e.runScript(ctx, ev)
			}
		}()
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	if len(pending) > 0 {
		e.log.WithField("events", len(pending)).Info("processing events left unprocessed before the start")
		if !e.process(ctx, pending, jobs) {
			return nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case batch := <-e.queue:
			if !e.process(ctx, batch, jobs) {
				return nil
			}
		}
	}
}

// severityRank orders severities, least serious first.
func severityRank(s string) int {
	switch apiv1.Severity(s) {
	case apiv1.SeverityDebug:
		return 0
	case apiv1.SeverityInfo:
		return 1
	case apiv1.SeverityWarning:
		return 2
	case apiv1.SeverityError:
		return 3
	case apiv1.SeverityCritical:
		return 4
	}
	return 4 // unknown: treat as serious
}

// EventLine renders an event as the line log-ignore rules are matched
// against: key=value pairs in a fixed order, empty ones left out, then the
// event's own fields sorted by key.
func EventLine(ev store.Event) string {
	var b strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
	}
	add("event", ev.Name)
	add("severity", ev.Severity)
	add("source", ev.Source)
	add("client", ev.Client)
	if ev.SessionID != 0 {
		add("session_id", strconv.FormatUint(ev.SessionID, 10))
	}
	add("odette_id", ev.OdetteID)
	add("remote_addr", ev.RemoteAddr)
	add("message", ev.Message)
	keys := make([]string, 0, len(ev.Fields))
	for k := range ev.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, ev.Fields[k])
	}
	return b.String()
}

// MatchIgnoreRule returns the first rule valid at now whose substring the
// event line contains, case-insensitively.
func MatchIgnoreRule(rules []store.IgnoreRule, line string, now time.Time) (store.IgnoreRule, bool) {
	lower := strings.ToLower(line)
	for _, r := range rules {
		if r.ActiveAt(now) && strings.Contains(lower, strings.ToLower(r.Substring)) {
			return r, true
		}
	}
	return store.IgnoreRule{}, false
}

// eventFields returns the log fields of an event.
func eventFields(ev store.Event) logrus.Fields {
	f := logrus.Fields{"event": ev.Name, "event_id": ev.ID, "severity": ev.Severity, "source": ev.Source,
		"client": ev.Client, "event_time": ev.Time.UTC().Format(time.RFC3339Nano)}
	if ev.SessionID != 0 {
		f["session_id"] = ev.SessionID
	}
	if ev.OdetteID != "" {
		f["odette_id"] = ev.OdetteID
	}
	if ev.RemoteAddr != "" {
		f["remote_addr"] = ev.RemoteAddr
	}
	for k, v := range ev.Fields {
		f["field_"+k] = v
	}
	return f
}

// process matches a batch against the ignore rules, logs every event,
// records the outcomes and hands the events to escalate to the script
// workers. It returns false when ctx ended.
func (e *Escalator) process(ctx context.Context, batch []store.Event, jobs chan<- store.Event) bool {
	rules, err := e.st.IgnoreRules(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.WithError(err).Error("cannot read the log-ignore rules; events stay unprocessed until the next start")
		}
		return ctx.Err() == nil
	}
	now := e.now()
	outcomes := make(map[int64]string, len(batch))
	var escalate []store.Event
	for _, ev := range batch {
		entry := e.log.WithFields(eventFields(ev))
		msg := ev.Message
		if msg == "" {
			msg = "event from a proxy client"
		}
		if r, ok := MatchIgnoreRule(rules, EventLine(ev), now); ok {
			entry.WithField("ignore_rule", r.ID).Info(msg)
			outcomes[ev.Seq] = fmt.Sprintf("ignored by rule %d", r.ID)
			continue
		}
		switch severityRank(ev.Severity) {
		case 0:
			entry.Debug(msg)
		case 1:
			entry.Info(msg)
		case 2:
			entry.Warn(msg)
		default:
			entry.Error(msg)
		}
		if e.cfg.Script != "" && severityRank(ev.Severity) >= severityRank(string(e.cfg.MinSeverity)) {
			escalate = append(escalate, ev)
		} else {
			outcomes[ev.Seq] = "logged"
		}
	}
	if err := e.st.SetEventOutcomes(ctx, outcomes); err != nil && ctx.Err() == nil {
		e.log.WithError(err).Error("cannot record event outcomes")
	}
	for _, ev := range escalate {
		select {
		case jobs <- ev:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// ScriptEnv returns the environment variables that describe ev to the event
// script.
func ScriptEnv(ev store.Event) []string {
	fields := ev.Fields
	if fields == nil {
		fields = map[string]string{}
	}
	fj, _ := json.Marshal(fields)
	return []string{
		"SMARTPROXY_EVENT_ID=" + ev.ID,
		"SMARTPROXY_EVENT_NAME=" + ev.Name,
		"SMARTPROXY_EVENT_SEVERITY=" + ev.Severity,
		"SMARTPROXY_EVENT_TIME=" + ev.Time.UTC().Format(time.RFC3339Nano),
		"SMARTPROXY_EVENT_MESSAGE=" + ev.Message,
		"SMARTPROXY_EVENT_ODETTE_ID=" + ev.OdetteID,
		"SMARTPROXY_EVENT_REMOTE_ADDR=" + ev.RemoteAddr,
		"SMARTPROXY_EVENT_SESSION_ID=" + strconv.FormatUint(ev.SessionID, 10),
		"SMARTPROXY_EVENT_SOURCE=" + ev.Source,
		"SMARTPROXY_EVENT_CLIENT=" + ev.Client,
		"SMARTPROXY_EVENT_FIELDS=" + string(fj),
		"SMARTPROXY_EVENT_LINE=" + EventLine(ev),
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

// runScript runs the event script for ev, logs the result and records it
// as the event's outcome.
func (e *Escalator) runScript(ctx context.Context, ev store.Event) {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, e.cfg.Script)
	cmd.Env = append(os.Environ(), ScriptEnv(ev)...)
	out := &limitedBuffer{max: 4096}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 2 * time.Second
	killGroup(cmd)
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		return // shutting down: the event stays unprocessed and runs again after the next start
	}
	entry := e.log.WithFields(logrus.Fields{"event_id": ev.ID, "event_name": ev.Name, "script": e.cfg.Script,
		"duration": time.Since(start).Round(time.Millisecond).String()})
	if o := out.String(); o != "" {
		entry = entry.WithField("output", o)
	}
	var (
		outcome string
		ee      *exec.ExitError
	)
	switch {
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		outcome = fmt.Sprintf("script timed out after %s", e.cfg.Timeout)
		entry.WithField("event", "event_script_timeout").Error("event script timed out and was killed")
	case errors.As(err, &ee):
		outcome = fmt.Sprintf("script failed: exit status %d", ee.ExitCode())
		entry.WithFields(logrus.Fields{"event": "event_script_failed", "exit_code": ee.ExitCode()}).Error("event script failed")
	case err != nil:
		outcome = "script failed: " + err.Error()
		entry.WithError(err).WithField("event", "event_script_failed").Error("event script could not run")
	default:
		outcome = "script exit 0"
		entry.WithField("event", "event_script_done").Info("event script ran")
	}
	if err := e.st.SetEventOutcomes(ctx, map[int64]string{ev.Seq: outcome}); err != nil && ctx.Err() == nil {
		e.log.WithError(err).Error("cannot record the event script's outcome")
	}
}
