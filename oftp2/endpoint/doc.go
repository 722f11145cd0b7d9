// Package endpoint is a complete OFTP2 peer (RFC 5024): it runs sessions
// over any net.Conn (TLS with client certificates in practice), sends and
// receives Virtual Files in the formats U, T, F and V, answers end-to-end
// responses, and restarts interrupted transfers. It is the counterpart the
// proxy's tests, the demo and the benchmarks talk to, and the engine of the
// oftp2 command.
//
// # Session flow
//
// One call of Endpoint.Run is one session over a connection the caller
// made; Endpoint.Serve runs sessions on every connection a listener accepts. The Responder (called side) sends
// SSRM; the Initiator answers with SSID, the Responder with its own SSID
// (§4.2); both sides take the smaller buffer size and credit, and use
// compression and restart only when both offer them. Secure authentication
// (SECD/AUCH/AURP) is not implemented: a partner that requires it is refused
// with ESID 12.
//
// The Initiator is the first Speaker. The Speaker sends the end-to-end
// responses it owes, then its files, then hands the turn over with CD; a
// Speaker that was just handed the turn and has nothing to do ends the
// session with ESID 00 (§4.6). A receiving Listener answers every stored
// file with EFPA asking for the turn, so that the EERP reaches the sender
// right away:
//
//	Initiator (sender)                 Responder (receiver)
//	                    <- SSRM
//	SSID                ->
//	                    <- SSID
//	SFID                ->
//	                    <- SFPA          (restart position)
//	DATA × credit       ->
//	                    <- CDT
//	DATA ...            ->
//	EFID                ->               counts checked, file synced, renamed
//	                    <- EFPA (CD=Y)
//	CD                  ->
//	                    <- EERP
//	RTR                 ->
//	                    <- CD            (or its own files first)
//	SFID ... / CD       ->               next file, or nothing left
//	                    <- ESID 00       nothing left on either side
//
// # Files
//
// Received files land in Config.ReceiveDir only when complete: data goes to a
// temporary file under ReceiveDir/.oftp2/partial, which is synced and then
// linked to its final name once the EFID counts match; a broken session never
// leaves a file under a final name. With restart agreed the partial file and
// its committed position survive a broken connection, and the next SFID for
// the same Virtual File (originator, dataset name, date and time) is answered
// with that position. The sender holds the whole file, so it offers the
// whole file as restart position (SFIDREST) and the receiver answers with
// what it has (SFPAACNT ≤ SFIDREST). This relies on the rule of §1.5.2 that
// dataset name, date and time identify one content; the default stamp (the
// file's modification time) gives a rewritten file a new identity. The local
// representation of each format is described at OutgoingFile.
//
// # Judging the partner
//
// Unless Config.Lenient is set, every exchange buffer in both directions
// passes an oftp2.Validator, the checks the SmartProxy applies to a
// session it relays: a partner the proxy would refuse (an ESID 00 before
// the EFPA, EFID counts that do not match the data, DATA beyond the credit)
// is refused here with the validator's ESID reason, so that a test against
// this endpoint shows what a session through the proxy would show.
//
// # Errors
//
// Run returns nil after a normal end, a *SessionError for any other ESID
// (sent or received; timeouts are ESID 09, a cancelled context sends ESID
// 05), and an error wrapping ErrConnectionLost when the connection broke.
// Per-file outcomes are in Result.Sent.
package endpoint
