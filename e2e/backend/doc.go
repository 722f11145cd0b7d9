// Package backend holds the end-to-end tests of the backend synchronisation (issue 5): the
// reference backend smartproxy-api with its admin CLI, smartproxy-client following it with -U,
// and smartproxy-server enforcing what arrives, as separate processes built from this tree on
// loopback. It has no code of its own outside the tests.
package backend
