// Package e2e holds the end-to-end tests of the incoming path of the SmartProxy for OFTP2: a
// partner's OFTP2 endpoint calls smartproxy-server over TLS, the session crosses the tunnel to
// smartproxy-client, and the client carries it to an internal OFTP2 responder. The tests run
// both daemons with their real configuration over real sockets on 127.0.0.1 — in-process
// (server.New and client.New, so that the race detector sees both) and once as the built
// binaries in separate processes — and assert what reaches each side: the files byte for byte,
// the end-to-end responses, the ESID reasons, the TLS alerts, the security events in the
// server's log and at the client, and the connections the internal responder accepted.
//
// The package has no code of its own besides its tests; docs/testing.md describes the
// scenarios and how to run them, docs/benchmarks.md the transfer benchmark.
package e2e
