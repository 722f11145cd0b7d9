// Package client is the internal half of the SmartProxy for OFTP2: it dials the DMZ server
// (smartproxy-server) over mutual TLS, pushes the security configuration to it, and carries the
// OFTP2 sessions the server admits to the internal OFTP2 server.
//
// # Incoming session
//
// The server has already done TLS with the partner, sent SSRM, read and verified the partner's
// SSID. It then sends SessionOpen with that SSID. The client
//
//  1. checks the partner against the configuration it holds (known, enabled, incoming allowed,
//     the SSID valid and naming that partner, its password where one is configured) — defence
//     in depth, which also catches a partner removed by a version the server has not applied;
//  2. connects to the internal OFTP2 server (TCP, optionally TLS) and reads its SSRM under a
//     deadline, without forwarding it (the partner already has the server's SSRM);
//  3. writes the partner's SSID to the internal server and answers SessionOpened;
//  4. bridges (package bridge): internal server → tunnel and tunnel → internal server, one
//     OFTP2 command per tunnel SessionData. The first command from the internal server is its
//     SSID answer.
//
// When the server aborts the session with an ESID reason (protocol violation, shutdown), the
// client writes an ESID with that reason to the internal server before closing, so the internal
// server logs why its session ended. A tunnel lost ends every session the same way. An internal
// server that closes without ESID is a lost connection: the session is aborted, and the
// partner receives an ESID.
//
// # Outgoing session
//
// The client listens on every route's address of the configuration in force (runRoutes:
// listeners opened, moved and closed as the configuration changes, accepted sessions never
// touched). An internal initiator that connects gets SessionOpen{OUTGOING, route} on the least
// busy tunnel at once; the server dials the partner and answers. A refusal becomes an ESID to
// the initiator (bridge.Refuse); an accepted session runs on the bridge from the partner's SSRM
// on.
//
// # Configuration
//
// A Snapshot is one configuration version; package configfile builds it from the local file.
// On every tunnel stream the client sends Hello, waits for Welcome, and pushes the snapshot when
// the server holds an older version (large CRLs in ConfigChunk frames); SetConfig pushes a new
// version to every stream. ConfigApplied answers are logged, each error with its field.
//
// # Goroutines
//
// Run owns everything: the transport's stream loops, one multiplexer per stream, the route
// listeners with their accept loops, and per session the bridge's two goroutines. Run returns
// after all of them.
package client
