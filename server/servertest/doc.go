// Package servertest holds test fixtures for the DMZ server and for end-to-end tests of both
// daemons: the certificates a test needs (PKI) and configurations built from them; Client, which
// plays smartproxy-client over the real tunnel transport and multiplexer (Hello, configuration
// pushes, recorded frames, incoming sessions relayed to an internal OFTP2 server); Responder, an
// internal OFTP2 server built on oftp2/endpoint that counts its connections; and RawPartner, a
// partner connection driven command by command.
package servertest
