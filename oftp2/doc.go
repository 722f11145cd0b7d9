// Package oftp2 implements the wire protocol of OFTP2, the ODETTE File
// Transfer Protocol 2 (RFC 5024): a codec for every command, the Stream
// Transmission Buffer framing used over TCP, the subrecord format of DATA
// buffers, and a session validator that checks a whole session from both
// ends, as a protocol-aware proxy sees it. It does no network I/O of its own
// and imports nothing but the standard library.
//
// # Protocol flow
//
// A session between an Initiator (the side that connected) and a Responder,
// with secure authentication, one file each way and a normal end (RFC 5024
// §4, §9; "spk" marks the Speaker, who alone may start files):
//
//	Initiator                                   Responder
//	    |<------------------ SSRM -------------------|  ready message (§5.3.1)
//	    |------------------- SSID ------------------>|  ID, password, buffer size,
//	    |<------------------ SSID -------------------|  mode, credit, flags (§5.3.2)
//	    |                                            |
//	    |------------------- SECD ------------------>|  only if both SSIDAUTH = Y
//	    |<------------------ AUCH -------------------|  (§4.2.4): challenge
//	    |------------------- AURP ------------------>|  and response, then the
//	    |<------------------ SECD -------------------|  same the other way
//	    |------------------- AUCH ------------------>|
//	    |<------------------ AURP -------------------|
//	spk |                                            |
//	    |------------------- SFID ------------------>|  start file (§5.3.3)
//	    |<------------------ SFPA -------------------|  accepted, restart position
//	    |------------------- DATA ------------------>|  credit - 1 per buffer
//	    |------------------- DATA ------------------>|  ... until the credit is 0
//	    |<------------------ CDT --------------------|  credit reset (§5.3.7)
//	    |------------------- DATA ------------------>|
//	    |------------------- EFID ------------------>|  record and unit counts
//	    |<------------------ EFPA(Y) ----------------|  accepted, "I want to speak"
//	    |------------------- CD -------------------->|  the turn changes
//	    |                                            | spk
//	    |<------------------ EERP -------------------|  receipt for an earlier file
//	    |------------------- RTR ------------------->|  ready to receive
//	    |<------------------ SFID -------------------|  ... a file the other way
//	    |                    ...                     |
//	    |<------------------ CD ---------------------|  nothing more to send
//	spk |                                            |
//	    |------------------- ESID(00) -------------->|  normal end: only right after
//	    |                                            |  an unsolicited CD (§3.4.1)
//
// SFNA refuses a file and EFNA a completed transfer; NERP is the negative
// receipt; ESID with a non-zero reason aborts the session at any time from
// either side.
//
// # Codec
//
// Each command is a struct (SSRM, SSID, SFID, SFPA, SFNA, Data, CDT, EFID,
// EFPA, EFNA, ESID, CD, EERP, NERP, RTR, SECD, AUCH, AURP) with typed fields,
// a Decode method and an Append method that encodes into a caller's buffer
// without allocating beyond growing it. Parse decodes any exchange buffer;
// its first octet selects the command. Every field is checked as RFC 5024
// §5.3 and Appendix B require (lengths, space padding, digits, calendar
// dates, enumerated values, UTF-8, carriage returns); the character set of
// X(n) fields is strict by default and lenient on request (ParseOptions).
// Errors are *ProtocolError values carrying the ESID reason that fits.
//
//	r := oftp2.NewReader(conn, 0)         // Stream Transmission Buffers in
//	w := oftp2.NewWriter(conn)            // and out
//	buf, err := r.ReadBuffer()            // one exchange buffer, reused
//	cmd, err := oftp2.Parse(buf, nil)     // strict RFC rules
//	switch c := cmd.(type) {
//	case *oftp2.SSID:
//		...
//	}
//	err = w.WriteCommand(&oftp2.SFPA{AnswerCount: 0})
//
// File data travels in DATA buffers as subrecords (§7). A Packer cuts a
// file or its records into DATA buffers of the negotiated size, with
// optional buffer compression; an Unpacker expands them again; a
// SubrecordIterator and ScanSubrecords walk a payload without allocating.
//
// # Validator
//
// A Validator follows one session through its states (§9) as seen from
// between the endpoints. Validator.Check takes the side that sent a buffer
// and the raw exchange buffer, decodes and checks it, and advances the
// session: SSRM and SSID order, level 5, mode and capability negotiation
// (ESID 10), secure authentication agreement (ESID 12) and order, the
// Speaker and Listener roles, credit (DATA beyond credit, CDT only when it
// is used up), the negotiated buffer size (ESID 07), buffer compression and
// restart negotiation, the EFID counts against the data seen, EERP/NERP and
// RTR, change of direction and when a normal ESID is allowed. The first
// violation is returned as a *ProtocolError and the Validator stays dead.
// DATA and CDT buffers are checked without allocating.
//
// A proxy between a partner and an internal server uses it like this:
//
//	v := oftp2.NewValidator(oftp2.ValidatorConfig{MaxBufferSize: 16384, MaxCredit: 64})
//	v.Check(oftp2.Responder, ssrm)          // the SSRM the proxy sends itself
//	oftp2.LimitSSID(initSSID, 16384, 64)    // lower SSIDSDEB/SSIDCRED in place
//	v.Check(oftp2.Initiator, initSSID)      // check what is forwarded
//	fwd, _ := v.SSID(oftp2.Initiator)
//	oftp2.LimitSSID(respSSID, fwd.BufferSize, fwd.Credit) // both ends agree
//	v.Check(oftp2.Responder, respSSID)
//	for each buffer from either side:
//		if _, err := v.Check(side, buf); err != nil {
//			send err.(*oftp2.ProtocolError).ESID() to both sides and close
//		}
//		forward buf
//
// Every buffer must pass Check before it is forwarded; otherwise the
// credit and turn checks can misjudge crossing commands.
package oftp2
