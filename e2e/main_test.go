package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when any test leaves a goroutine behind: both daemons run
// in-process here and must stop completely.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
