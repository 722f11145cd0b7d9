// Package spool keeps events on disk until the backend has accepted them: at-least-once
// delivery that survives a restart of smartproxy-client and an unreachable backend.
//
// # Layout
//
// A Spool owns one directory (mode 0700). Events are appended to segment files
// (seg-<16 hex digits>.log, mode 0600), each record
//
//	length   uint32, big-endian: the payload's length
//	checksum uint32, big-endian: CRC-32C of the payload
//	payload  the event as JSON (api/apiv1.Event)
//
// and every Append ends with fsync, so an event Append returned for is on disk. The file
// "head" (written atomically: temporary file, fsync, rename, directory fsync) records the
// segment and offset of the oldest event not yet accepted. Ack moves it forward once the backend
// has accepted a batch; segments wholly before it are deleted. A crash between the backend's
// answer and the head update sends the batch again, which the backend recognises by the
// events' ids: each event gets a unique id (128 random bits, hexadecimal) when it enters the
// spool.
//
// # Faults
//
// Open scans every segment from the head. A torn or corrupt record at the end of the newest
// segment (a crash in the middle of a write) is cut off; a corrupt record in an older segment
// ends that segment. Both are logged with the number of bytes lost — never silently — and
// appends always go to a new segment after Open.
//
// # Bounds
//
// The spool holds at most Config.MaxEvents events and Config.MaxBytes bytes of records. When an
// Append would exceed either bound, the oldest events are dropped, counted (Dropped) and
// logged.
//
// A Spool is safe for concurrent use. Send is the sender loop: it batches the oldest events,
// posts them, acknowledges what was accepted and retries with full-jitter backoff.
package spool
