// Package backendsync connects smartproxy-client to the backend API (api/apiv1): it keeps the
// configuration of the DMZ server in step with the backend and passes on what the server
// reports.
//
// # Configuration
//
// The Syncer long-polls GET /v1/config with the ETag it holds. When the document changes it
// downloads the CRLs whose content it does not have yet — one at a time, streamed into a file
// of the state directory and checked against the document's size and SHA-256, never all in
// memory at once — builds the client.Snapshot with configspec.Build (the same builder the local
// configuration file uses), saves the document as the last good configuration and hands the
// snapshot to the client, which pushes it to every tunnel. The server's ConfigApplied answer is
// reported with POST /v1/config-status, as is a document the builder refuses (with every
// problem), which leaves the configuration in force unchanged.
//
// Snapshot versions follow the document's revision, so that several clients of one backend push
// the same version for the same document; should a revision not be higher than the version in
// force (a backend whose database was recreated), the next version is used instead and a
// warning logged.
//
// # State directory
//
//	state.json        the last good document with its ETag and version (mode 0600, atomic)
//	crls/<sha256>.der the CRL bodies it names, by content (mode 0600, atomic)
//	spool/            the event spool (package spool)
//
// The directory has mode 0700: the document holds the company's private key. A restarted client
// configures the server from it while the backend is unreachable, logs that it runs on the
// cached configuration, and keeps polling with backoff.
//
// # Relay
//
// The Syncer is the client's client.Observer: server events go into the on-disk spool, and so
// do the client's own events of WARNING or worse, which the client and the Syncer emit through
// their event.Emitter straight to ClientEvent (log lines are never scraped for events); CRL
// distribution points the server reports go to POST /v1/crl-urls, the server's license state to
// PUT /v1/license-status. GET /v1/license is polled with its ETag and a new license is handed
// to the client, which pushes it to the servers. Observer methods never block: they queue, and
// Run's goroutines do the I/O.
package backendsync
