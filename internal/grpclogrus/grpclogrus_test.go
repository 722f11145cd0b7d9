package grpclogrus

import (
	"context"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc/codes"
)

func TestLogger(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	l := Logger(log)
	tests := []struct {
		lvl  logging.Level
		want logrus.Level
	}{
		{logging.LevelDebug, logrus.DebugLevel},
		{logging.LevelInfo, logrus.InfoLevel},
		{logging.LevelWarn, logrus.WarnLevel},
		{logging.LevelError, logrus.ErrorLevel},
	}
	for _, tt := range tests {
		hook.Reset()
		l.Log(context.Background(), tt.lvl, "finished call", "grpc.method", "Connect", "grpc.code", "OK", "dangling")
		e := hook.LastEntry()
		if e == nil {
			t.Fatalf("Log(%v) wrote nothing", tt.lvl)
		}
		if e.Level != tt.want {
			t.Errorf("Log(%v) level = %v, want %v", tt.lvl, e.Level, tt.want)
		}
		if e.Data["grpc_method"] != "Connect" || e.Data["grpc_code"] != "OK" || e.Data["extra"] != "dangling" {
			t.Errorf("Log(%v) fields = %v, want grpc_method, grpc_code and extra", tt.lvl, e.Data)
		}
		if e.Message != "finished call" {
			t.Errorf("Log(%v) message = %q", tt.lvl, e.Message)
		}
	}
	if got := ServerCodeToLevel(codes.OK); got != logging.LevelDebug {
		t.Errorf("ServerCodeToLevel(OK) = %v, want debug", got)
	}
	if got := ServerCodeToLevel(codes.Internal); got != logging.LevelError {
		t.Errorf("ServerCodeToLevel(Internal) = %v, want error", got)
	}
}
