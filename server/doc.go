// Package server is smartproxy-server, the DMZ half of the SmartProxy for OFTP2.
//
// The server holds no configuration of its own. smartproxy-client dials its tunnel port with
// mutual TLS (package tunnel/transport) and runs one multiplexed stream (package tunnel); the
// server answers Hello with Welcome and receives the whole security configuration in
// ConfigSnapshot frames (large CRLs in ConfigChunk frames). CompilePolicy validates a complete
// snapshot into an immutable Policy; the newest valid version is swapped in atomically and
// answered with ConfigApplied, a refused one with the path of every bad field.
//
// The partner listener is open exactly while a policy is in force and at least one tunnel is
// connected. Each partner connection goes through admission before anything goes inside:
//
//	admitPartner: accept ─► limits (sessions full?, per-source rate) ─► pre-admission pool
//	(per-source and per-prefix caps; when full, the longest-silent connection is evicted) ─►
//	TLS 1.2/1.3 within the TLS deadline with the company certificate, client certificate chain
//	+ validity + CRLs of the policy ─► SSRM (sent by the server) ─► the partner's SSID within
//	the SSID deadline: syntax, level 5, known and enabled partner, password, certificate bound
//	to the Odette ID, source network, direction, license ─► out of the pool into a session slot
//	openInside: SessionOpen{INCOMING} on the least busy tunnel ─► SessionOpened from the client
//	bridgePartner: package bridge, validator on both directions
//
// A refusal after SSRM answers the partner with the fitting ESID; every refusal is one
// security event (a log line with a stable event name, and an Event frame to the client),
// summarised per source past a threshold (refusals.go) so that a flood cannot drown the log.
//
// An outgoing session starts with a SessionOpen from the client (the internal OFTP2 server
// called a route's listener):
//
//	serveOutgoing: route known ─► partner enabled, not incoming-only ─► limits, license ─►
//	dialPartner: TCP from outgoing_source_ip, TLS as client, the partner's server certificate
//	checked and bound to the route's Odette ID ─► SessionOpened ─► bridgePartner with the
//	partner as Responder: its SSRM goes inside, the internal SSID goes out, its SSID answer
//	must carry the route's Odette ID
//
// Every session, both directions, runs on the one session bridge (package bridge): every
// exchange buffer passes the session's oftp2.Validator before it is forwarded, a violation ends
// the session with ESID to both sides, and a side that vanishes without ESID is an abnormal end
// with an ESID to the other side. The server never answers on an endpoint's behalf.
//
// docs/operations.md describes the behaviour for operators, docs/security-events.md lists the
// events. Package servertest holds a client harness and fixtures for tests of this package
// and of both daemons together.
package server
