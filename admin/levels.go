package admin

import (
	"fmt"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/logging"
)

// SetLevel carries out a SetLogLevel request on a daemon's levels, for Backend implementations.
// An empty sessionKey changes the process level (level must be a real level); otherwise it
// changes the level of that session's logger, and LOG_LEVEL_UNSPECIFIED makes the session follow
// the process level again. It returns the previous level: for a session that followed the
// process level, LOG_LEVEL_UNSPECIFIED. A session unknown to levels is ErrNotFound; the caller
// checks first that the session exists.
func SetLevel(levels *logging.Levels, sessionKey string, level tunnelv1.LogLevel, by string) (tunnelv1.LogLevel, error) {
	if by == "" {
		by = "admin"
	}
	lv, ok := LevelToLogrus(level)
	if sessionKey == "" {
		if !ok {
			return 0, fmt.Errorf("log level %s is not a level", level)
		}
		prev := LevelFromLogrus(levels.Global())
		levels.SetGlobal(lv, by)
		return prev, nil
	}
	prev := tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED
	if old, own := levels.SessionLevel(sessionKey); own {
		prev = LevelFromLogrus(old)
	}
	var err error
	if ok {
		err = levels.SetSession(sessionKey, lv, by)
	} else {
		err = levels.FollowGlobal(sessionKey, by)
	}
	if err != nil {
		return 0, ErrNotFound
	}
	return prev, nil
}
