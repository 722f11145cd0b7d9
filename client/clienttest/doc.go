// Package clienttest holds test helpers for smartproxy-client: certificate and configuration
// files, and a harness that plays the DMZ server's side of the tunnel against a real
// client.Client, for the client's tests and the cross-daemon end-to-end tests.
package clienttest
