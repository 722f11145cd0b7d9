// Package store keeps the state of the reference backend smartproxy-api in one
// SQLite database file: proxy clients and their tokens, the proxy settings,
// partners, trusted CAs, CRL URLs and CRLs, outgoing routes, log-ignore rules,
// licenses, and what proxy clients report (events, CRL URLs, license and
// configuration status).
//
// The database runs in WAL mode with a busy timeout and foreign keys on. A
// Store holds one writer connection and a small pool of read-only
// connections; every change runs in one write transaction that begins
// IMMEDIATE, so several processes (the API server and admin commands) can work
// on the same file at once. Every change to what a proxy client's
// configuration contains bumps a revision counter in the same transaction
// (SQL triggers), so a Store notices changes made by another process by
// polling that counter (see Store.PollRevision and Store.WaitRevision).
//
// The schema is created and upgraded by embedded, numbered SQL migrations,
// each applied in a transaction and recorded in the schema_version table. Open
// refuses a database written by a newer binary (*SchemaError).
//
// Every SQL statement is parameterised; input is validated in Go before it is
// written, and a failed validation stores nothing (*ValidationError).
package store
