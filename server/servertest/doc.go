// Package servertest holds test fixtures for the DMZ server: the certificates a test needs
// (PKI) and configurations built from them. It is used by the server's own tests and by the
// end-to-end tests of both daemons.
package servertest
