// Package grpclogrus adapts logrus to the logging interceptors of go-grpc-middleware, for every
// gRPC server of this project (the tunnel server and the admin services).
package grpclogrus

import (
	"context"
	"fmt"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
)

// Logger adapts a logrus logger to the go-grpc-middleware logging
// interceptors. Field keys are made snake_case ("grpc.method" becomes
// "grpc_method"); levels map to the logrus level of the same name.
func Logger(l logrus.FieldLogger) logging.Logger {
	return logging.LoggerFunc(func(_ context.Context, lvl logging.Level, msg string, fields ...any) {
		f := make(logrus.Fields, len(fields)/2)
		for i := 0; i+1 < len(fields); i += 2 {
			key, ok := fields[i].(string)
			if !ok {
				key = fmt.Sprint(fields[i])
			}
			f[strings.ReplaceAll(key, ".", "_")] = fields[i+1]
		}
		if len(fields)%2 == 1 {
			f["extra"] = fields[len(fields)-1]
		}
		e := l.WithFields(f)
		switch {
		case lvl >= logging.LevelError:
			e.Error(msg)
		case lvl >= logging.LevelWarn:
			e.Warn(msg)
		case lvl >= logging.LevelInfo:
			e.Info(msg)
		default:
			e.Debug(msg)
		}
	})
}

// ServerCodeToLevel maps the status of a finished RPC to a log level: calls
// that succeeded or were cancelled by the peer (a tunnel stream ending, a
// health watch going away) are DEBUG, so that routine traffic does not fill
// the log; everything else follows the middleware's server defaults.
func ServerCodeToLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.Canceled:
		return logging.LevelDebug
	}
	return logging.DefaultServerCodeToLevel(code)
}

// LoggingOptions are the logging interceptor options used on every server of
// this project: one line per finished call, levels by ServerCodeToLevel.
func LoggingOptions() []logging.Option {
	return []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(ServerCodeToLevel),
	}
}
