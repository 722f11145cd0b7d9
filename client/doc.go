// Package client is the internal half of the SmartProxy for OFTP2: it dials the DMZ server
// (smartproxy-server) over mutual TLS, pushes the security configuration to it, and carries the
// OFTP2 sessions the server admits to the internal OFTP2 server.
//
// # Incoming session
//
// The server has already done TLS with the partner, sent SSRM, read and verified the partner's
// SSID. It then sends SessionOpen with that SSID. The client
//
//  1. checks the partner against its own configuration (known, enabled, incoming allowed,
//     SSID password where one is configured) — defence in depth, and the only place passwords
//     are checked, since they never leave the internal network;
//  2. connects to the internal OFTP2 server (TCP, optionally TLS) and reads its SSRM under a
//     deadline, without forwarding it (the partner already has the server's SSRM);
//  3. writes the partner's SSID to the internal server and answers SessionOpened;
//  4. relays: internal server → tunnel and tunnel → internal server, one OFTP2 command per
//     tunnel SessionData. The first command from the internal server is its SSID answer.
//
// When the server aborts the session with an ESID reason (protocol violation, shutdown), the
// client writes an ESID with that reason to the internal server before closing, so the internal
// server logs why its session ended. A tunnel lost ends every session the same way.
package client
