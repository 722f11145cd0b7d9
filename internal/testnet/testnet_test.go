package testnet

import (
	"net"
	"strconv"
	"testing"
)

func TestReserveAddr(t *testing.T) {
	high := ephemeralLow()
	seen := make(map[string]bool)
	for range 20 {
		addr := ReserveAddr(t)
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(port)
		if host != "127.0.0.1" || n < lowest || n >= high {
			t.Errorf("ReserveAddr = %s, want 127.0.0.1 with a port in [%d, %d)", addr, lowest, high)
		}
		// The port is free: a daemon can bind it.
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("bind the reserved %s: %v", addr, err)
		}
		ln.Close()
		seen[addr] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 reservations gave %d distinct addresses", len(seen))
	}
}
