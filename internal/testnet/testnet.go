// Package testnet gives tests loopback addresses for daemons that must keep one address across a
// restart (a partner listener that closes and opens again, a tunnel port a new server binds).
//
// The usual trick — listen on port 0, note the port, close, hand the port to the daemon — races:
// the kernel gives the freed port to the next socket that binds port 0 or connects out, in this
// process or another one. ReserveAddr picks its ports below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), which the kernel never hands out on its own, so only a program
// that names the same port explicitly can take it. Where a daemon can report the address it
// bound, bind port 0 instead and read the address back; that needs no reservation at all.
package testnet

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// lowest is the first port ReserveAddr considers: above the ports of well-known services.
const lowest = 10000

// ReserveAddr returns "127.0.0.1:port" for a port below the ephemeral range that was free when
// it was checked (bound and closed again). It fails tb if none is found in 100 attempts.
func ReserveAddr(tb testing.TB) string {
	tb.Helper()
	high := ephemeralLow()
	for range 100 {
		port := lowest + rand.IntN(high-lowest)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			tb.Fatalf("reserve a loopback port: %v", err)
		}
		ln.Close()
		return addr
	}
	tb.Fatal("no free loopback port below the ephemeral range in 100 attempts")
	return ""
}

// ephemeralLow returns the first port of the kernel's ephemeral range (32768, Linux's default,
// when it cannot be read).
func ephemeralLow() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fallback
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= lowest+1000 {
		return fallback
	}
	return n
}
