// Package server is the DMZ half of the SmartProxy for OFTP2: it accepts tunnels from
// smartproxy-client, receives the whole security configuration over them, and runs the
// partner listener that admits OFTP2 partners and relays verified sessions inside.
package server
