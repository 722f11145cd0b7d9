package e2e

import (
	"os"
	"testing"
)

// TestMain fails the package when any test leaves a goroutine behind (both daemons run
// in-process here and must stop completely) and removes the binaries built for the tests that
// run them as processes.
func TestMain(m *testing.M) { os.Exit(bins.Main(m)) }
