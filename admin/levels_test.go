package admin

import (
	"errors"
	"io"
	"testing"

	"github.com/sirupsen/logrus"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/logging"
)

func TestSetLevel(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.InfoLevel)
	lv := logging.NewLevels(log)
	s := lv.Session("7")

	prev, err := SetLevel(lv, "", tunnelv1.LogLevel_LOG_LEVEL_WARN, "")
	if err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_INFO || log.GetLevel() != logrus.WarnLevel {
		t.Errorf("SetLevel(process, WARN) = %v, %v; level %v, want INFO, nil, warning", prev, err, log.GetLevel())
	}
	if _, err := SetLevel(lv, "", tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED, ""); err == nil {
		t.Error("SetLevel(process, UNSPECIFIED) = nil error, want error")
	}
	prev, err = SetLevel(lv, "7", tunnelv1.LogLevel_LOG_LEVEL_TRACE, "")
	if err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED || s.GetLevel() != logrus.TraceLevel {
		t.Errorf("SetLevel(session, TRACE) = %v, %v; level %v, want UNSPECIFIED, nil, trace", prev, err, s.GetLevel())
	}
	prev, err = SetLevel(lv, "7", tunnelv1.LogLevel_LOG_LEVEL_UNSPECIFIED, "")
	if err != nil || prev != tunnelv1.LogLevel_LOG_LEVEL_TRACE || s.GetLevel() != logrus.WarnLevel {
		t.Errorf("SetLevel(session, UNSPECIFIED) = %v, %v; level %v, want TRACE, nil, warning", prev, err, s.GetLevel())
	}
	if _, err := SetLevel(lv, "8", tunnelv1.LogLevel_LOG_LEVEL_INFO, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetLevel(unknown session) = %v, want ErrNotFound", err)
	}
}
