package logging

import (
	"fmt"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"
)

// Levels owns the global level of a daemon's logger and the levels of individual sessions. A
// session's logger shares the global logger's output, formatter and hooks; by default it follows
// the global level, and an operator can raise or lower one session alone (to debug one partner
// without flooding the log). Every change is logged on the global logger. Levels is safe for
// concurrent use.
type Levels struct {
	base *logrus.Logger

	mu       sync.Mutex
	sessions map[string]*sessionLogger
}

type sessionLogger struct {
	log      *logrus.Logger
	override bool // level set for this session alone; global changes leave it alone
}

// NewLevels returns a Levels over base, the daemon's logger.
func NewLevels(base *logrus.Logger) *Levels {
	return &Levels{base: base, sessions: make(map[string]*sessionLogger)}
}

// Global returns the current global level.
func (l *Levels) Global() logrus.Level { return l.base.GetLevel() }

// SetGlobal sets the global level and the level of every session without its own, and logs the
// change.
func (l *Levels) SetGlobal(level logrus.Level, by string) {
	l.mu.Lock()
	old := l.base.GetLevel()
	l.base.SetLevel(level)
	for _, s := range l.sessions {
		if !s.override {
			s.log.SetLevel(level)
		}
	}
	l.mu.Unlock()
	l.always().WithFields(logrus.Fields{"event": "log_level_changed", "old_level": old.String(), "new_level": level.String(), "changed_by": by}).
		Warn("log level changed")
}

// always returns a logger that writes to the base logger's output with its formatter and hooks
// whatever the level: a change of level is logged even when the new level (error) would hide the
// line, so that the log always says why it became quieter.
func (l *Levels) always() *logrus.Logger {
	return &logrus.Logger{Out: l.base.Out, Formatter: l.base.Formatter, Hooks: l.base.Hooks, Level: logrus.TraceLevel,
		ExitFunc: l.base.ExitFunc, ReportCaller: l.base.ReportCaller}
}

// Step makes the global level more (delta > 0) or less (delta < 0) verbose by |delta| steps,
// within error … trace, as SIGUSR1 and SIGUSR2 do. It returns the new level.
func (l *Levels) Step(delta int, by string) logrus.Level {
	next := int(l.base.GetLevel()) + delta
	if next < int(logrus.ErrorLevel) {
		next = int(logrus.ErrorLevel)
	}
	if next > int(logrus.TraceLevel) {
		next = int(logrus.TraceLevel)
	}
	l.SetGlobal(logrus.Level(next), by)
	return logrus.Level(next)
}

// Session returns the logger for session id, creating it at the global level on first use.
// Callers add their fields with WithFields. Release must be called when the session ends.
func (l *Levels) Session(id string) *logrus.Logger {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		return s.log
	}
	lg := &logrus.Logger{
		Out:          l.base.Out,
		Formatter:    l.base.Formatter,
		Hooks:        l.base.Hooks,
		Level:        l.base.GetLevel(),
		ExitFunc:     l.base.ExitFunc,
		ReportCaller: l.base.ReportCaller,
	}
	l.sessions[id] = &sessionLogger{log: lg}
	return lg
}

// SetSession sets the level of one live session and logs the change. It fails if no such session
// exists.
func (l *Levels) SetSession(id string, level logrus.Level, by string) error {
	l.mu.Lock()
	s, ok := l.sessions[id]
	var old logrus.Level
	if ok {
		old = s.log.GetLevel()
		s.log.SetLevel(level)
		s.override = true
	}
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("no session %q", id)
	}
	l.always().WithFields(logrus.Fields{"event": "log_level_changed", "session_id": id, "old_level": old.String(), "new_level": level.String(), "changed_by": by}).
		Warn("session log level changed")
	return nil
}

// SessionLevel reports session id's own level, if an operator set one (override true); a session
// that follows the global level, or is unknown, reports override false.
func (l *Levels) SessionLevel(id string) (level logrus.Level, override bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sessions[id]
	if !ok || !s.override {
		return 0, false
	}
	return s.log.GetLevel(), true
}

// FollowGlobal drops session id's own level: from now on it follows the global level again. The
// change is logged. It fails if no such session exists.
func (l *Levels) FollowGlobal(id, by string) error {
	l.mu.Lock()
	s, ok := l.sessions[id]
	var old logrus.Level
	global := l.base.GetLevel()
	if ok {
		old = s.log.GetLevel()
		s.log.SetLevel(global)
		s.override = false
	}
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("no session %q", id)
	}
	l.always().WithFields(logrus.Fields{"event": "log_level_changed", "session_id": id, "old_level": old.String(), "new_level": global.String(), "changed_by": by}).
		Warn("session log level follows the global level again")
	return nil
}

// Release forgets session id's logger.
func (l *Levels) Release(id string) {
	l.mu.Lock()
	delete(l.sessions, id)
	l.mu.Unlock()
}

// SessionIDs returns the ids of sessions with a logger, sorted.
func (l *Levels) SessionIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.sessions))
	for id := range l.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
