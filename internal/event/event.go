// Package event is the one vocabulary of the SmartProxy's events: one Event type, one catalogue
// of names with their severity, class and meaning (catalogue.go), one table of field types
// (fields.go) and one Emitter that writes an event as a log line and hands it on (the server to
// its tunnel, the client to its backend relay).
//
// An event name is stable: intrusion detection rules, the fail2ban filter
// (deploy/fail2ban/smartproxy.conf) and the backend's event script match on it. The same fact
// has one name in every daemon (a session that starts is session_started in the server and the
// client). docs/security-events.md documents every security event; tests hold the catalogue,
// that document, the fail2ban filter and the names the code logs to each other.
package event

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Event is one event of a daemon.
type Event struct {
	// Name is the catalogued name, the event field of the log line.
	Name string
	// Severity is the event's weight on the tunnel and at the backend; the log level follows
	// from it (Level).
	Severity tunnelv1.Severity
	// Security marks a security event: its log line is written at WARN at least, whatever its
	// Severity, so that fail2ban and IDS rules see it.
	Security bool
	// SessionID is the tunnel session the event belongs to; 0 if none.
	SessionID uint64
	// OdetteID is the Odette ID involved; empty if none.
	OdetteID string
	// RemoteAddr is the remote address involved, "ip:port"; empty if none.
	RemoteAddr string
	// Reason is a short machine-readable reason, the reason field.
	Reason string
	// Message is the human-readable message of the log line.
	Message string
	// Fields are further fields, snake_case keys; each key has one type (fields.go), in which
	// the log line writes it.
	Fields map[string]string
}

// New returns an event of the catalogued name with its catalogued severity and class. An
// uncatalogued name is a programming error that the catalogue tests catch; it is kept (as an
// operational event at INFO) rather than lost.
func New(name, msg string) Event {
	d, _ := Lookup(name)
	return Event{Name: name, Severity: d.Severity, Security: d.Security, Message: msg}
}

// Security returns the catalogued security event name about a peer at remoteAddr.
func Security(name, remoteAddr, odetteID, reason, msg string) Event {
	e := New(name, msg)
	e.Security, e.RemoteAddr, e.OdetteID, e.Reason = true, remoteAddr, odetteID, reason
	return e
}

// With returns e with one more field; an empty value adds nothing.
func (e Event) With(k, v string) Event {
	if v == "" {
		return e
	}
	m := make(map[string]string, len(e.Fields)+1)
	for a, b := range e.Fields {
		m[a] = b
	}
	m[k] = v
	e.Fields = m
	return e
}

// Level is the level of the event's log line: every security event logs at WARN, whatever its
// severity (the fail2ban filter matches level=warning); others by their severity.
func (e Event) Level() logrus.Level {
	if e.Security {
		return logrus.WarnLevel
	}
	switch e.Severity {
	case tunnelv1.Severity_SEVERITY_DEBUG:
		return logrus.DebugLevel
	case tunnelv1.Severity_SEVERITY_INFO, tunnelv1.Severity_SEVERITY_UNSPECIFIED:
		return logrus.InfoLevel
	case tunnelv1.Severity_SEVERITY_WARNING:
		return logrus.WarnLevel
	}
	return logrus.ErrorLevel
}

// Line renders the event as key=value text, the text log-ignore rules are matched against.
func (e Event) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "event=%s", e.Name)
	if e.RemoteAddr != "" {
		fmt.Fprintf(&b, " remote_addr=%s", e.RemoteAddr)
	}
	if e.OdetteID != "" {
		fmt.Fprintf(&b, " odette_id=%q", e.OdetteID)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", e.Reason)
	}
	if e.SessionID != 0 {
		fmt.Fprintf(&b, " session_id=%d", e.SessionID)
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, e.Fields[k])
	}
	fmt.Fprintf(&b, " msg=%q", e.Message)
	return b.String()
}

// LogFields returns the fields of the event's log line, each value in its field's declared
// type (a tunnel_index is a number, never "0"), with remote_ip beside remote_addr.
func (e Event) LogFields() logrus.Fields {
	f := logrus.Fields{"event": e.Name}
	if e.RemoteAddr != "" {
		f["remote_addr"] = e.RemoteAddr
		// The address alone too: easier to match for fail2ban and IDS rules.
		if host, _, err := net.SplitHostPort(e.RemoteAddr); err == nil {
			f["remote_ip"] = host
		}
	}
	if e.OdetteID != "" {
		f["odette_id"] = e.OdetteID
	}
	if e.Reason != "" {
		f["reason"] = e.Reason
	}
	if e.SessionID != 0 {
		f["session_id"] = e.SessionID
	}
	for k, v := range e.Fields {
		f[k] = Value(k, v)
	}
	return f
}

// Proto returns the event as a tunnel Event frame (fields as text, reason among them).
func (e Event) Proto(now time.Time) *tunnelv1.Frame {
	fields := make(map[string]string, len(e.Fields)+1)
	for k, v := range e.Fields {
		fields[k] = v
	}
	if e.Reason != "" {
		fields["reason"] = e.Reason
	}
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_Event{Event: &tunnelv1.Event{
		Time:       timestamppb.New(now),
		Severity:   e.Severity,
		Name:       e.Name,
		SessionId:  e.SessionID,
		OdetteId:   e.OdetteID,
		RemoteAddr: e.RemoteAddr,
		Message:    e.Message,
		Fields:     fields,
	}}}
}

// Emitter writes events as log lines and hands them to its sink. It is the one way the daemons
// raise an event: the server queues the Event frame for a tunnel itself (its sink is nil), the
// client's sink is its backend relay. Emitter is safe for concurrent use if the sink is.
type Emitter struct {
	sink func(Event)
	min  logrus.Level
}

// NewEmitter returns an Emitter that hands sink every event whose line is written at min or a
// more severe level (min WarnLevel: warnings and errors). A nil sink means the log line only.
func NewEmitter(sink func(Event), min logrus.Level) *Emitter { return &Emitter{sink: sink, min: min} }

// Emit writes e as one line on log at e.Level() and hands it on.
func (em *Emitter) Emit(log logrus.FieldLogger, e Event) { em.EmitAt(log, e, e.Level()) }

// EmitAt is Emit with the line's level decided by the caller: a log-ignore rule lowers a matched
// event to INFO, a failure repeated at every retry is logged at DEBUG after the first time.
func (em *Emitter) EmitAt(log logrus.FieldLogger, e Event, level logrus.Level) {
	log.WithFields(e.LogFields()).Log(level, e.Message)
	if em != nil && em.sink != nil && level <= em.min {
		em.sink(e)
	}
}
