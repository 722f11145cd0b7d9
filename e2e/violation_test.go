package e2e

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
	"smartproxy/server/servertest"
)

// Negotiated parameters of the misbehaving partner's sessions.
const (
	violationBuffer = 4096
	violationCredit = 2
)

// dataBuffer returns a DATA exchange buffer of n octets (command octet included) made of
// well-formed uncompressed subrecords, the last one ending a record.
func dataBuffer(n int) []byte {
	b := make([]byte, 1, n)
	b[0] = byte(oftp2.CodeDATA)
	for len(b) < n {
		c := min(n-len(b)-1, int(oftp2.SubrecordCountMask))
		h := byte(c)
		if len(b)+1+c == n {
			h |= oftp2.SubrecordEndOfRecord
		}
		b = append(b, h)
		for i := 0; i < c; i++ {
			b = append(b, byte('A'+i%26))
		}
	}
	return b
}

// TestMidSessionViolations drives a partner at the codec level so that it can break RFC 5024
// in the middle of a file transfer. Each violation must end that session with the validator's
// ESID reason on both sides — the partner receives the ESID from the server, the internal
// responder from the client — with a protocol_violation event in the server's log and at the
// client, and no file under a final name; meanwhile a healthy session of another partner,
// paused in the middle of its file while the violation happens, completes byte-identical.
func TestMidSessionViolations(t *testing.T) {
	fx := newFixture(t)
	// The client reaches the responder through a forwarder that a case can pause, so that no
	// answer of the responder (a CDT) can reach the proxy while the violation is judged.
	var insideFwd *forwarder
	sys := startSystem(t, fx, systemOptions{internalVia: func(target string) string { insideFwd = startForwarder(t, target); return insideFwd.Addr() }})
	addr := sys.partnerAddr(t)
	dir := t.TempDir()

	tests := []struct {
		name    string
		act     func(t *testing.T, rp *servertest.RawPartner) // after SFID/SFPA, in the data phase
		esid    oftp2.ESIDReason
		command string // the command the event names
		// holdInside pauses the inside forwarder from the act until the partner has its ESID.
		holdInside bool
	}{
		{name: "out-of-order command", act: func(t *testing.T, rp *servertest.RawPartner) {
			// A second SFID while a file is open (RFC 5024 §9.3: only DATA, CDT or EFID).
			writeCommand(t, rp, violationSFID("AGAIN"))
		}, esid: oftp2.ESIDProtocolViolation, command: "SFID"},
		{name: "DATA beyond credit", act: func(t *testing.T, rp *servertest.RawPartner) {
			// credit + 1 buffers in one go, without waiting for the CDT (§4.4.1).
			var all []byte
			for i := 0; i <= violationCredit; i++ {
				all = appendSTB(all, dataBuffer(1000))
			}
			if err := rp.WriteRaw(all); err != nil {
				t.Fatal(err)
			}
			// Held inside: the responder cannot grant the next credit (CDT) before the proxy
			// has judged the buffer beyond it, whatever the scheduling.
		}, esid: oftp2.ESIDProtocolViolation, command: "DATA", holdInside: true},
		{name: "DATA larger than the negotiated buffer", act: func(t *testing.T, rp *servertest.RawPartner) {
			if err := rp.Write(dataBuffer(violationBuffer + 1)); err != nil {
				t.Fatal(err)
			}
		}, esid: oftp2.ESIDBufferSizeError, command: "DATA"},
		{name: "subrecord overruns the buffer", act: func(t *testing.T, rp *servertest.RawPartner) {
			b := dataBuffer(100)
			b = append(b, oftp2.SubrecordEndOfRecord|40, 'x', 'y') // announces 40 octets, carries 2
			if err := rp.Write(b); err != nil {
				t.Fatal(err)
			}
		}, esid: oftp2.ESIDBufferSizeError, command: "DATA"},
		{name: "compressed subrecord without compression", act: func(t *testing.T, rp *servertest.RawPartner) {
			b := []byte{byte(oftp2.CodeDATA), oftp2.SubrecordEndOfRecord | oftp2.SubrecordCompressed | 10, 'x'}
			if err := rp.Write(b); err != nil {
				t.Fatal(err)
			}
		}, esid: oftp2.ESIDInvalidData, command: "DATA"},
		{name: "EFID counts do not match", act: func(t *testing.T, rp *servertest.RawPartner) {
			if err := rp.Write(dataBuffer(1001)); err != nil { // 1,000 octets of user data
				t.Fatal(err)
			}
			writeCommand(t, rp, &oftp2.EFID{UnitCount: 2000})
		}, esid: oftp2.ESIDInvalidData, command: "EFID"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The healthy session: 2 MiB in 1 KiB buffers, held after 256 KiB until the
			// violation has been dealt with.
			healthy := makeFile(t, dir, fmt.Sprintf("healthy-%d.dat", i), oftp2.FormatUnstructured, 2*mib, uint64(i))
			type outcome struct {
				res *endpoint.Result
				err error
			}
			healthyDone := make(chan outcome, 1)
			gates := make(chan *gatedConn, 1)
			cfg := partnerConfig(healthyID, "")
			cfg.BufferSize, cfg.Credit = 1024, 8
			healthyLeaf := fx.partner(t, healthyID) // may fail the test: not in the goroutine
			go func() {
				res, err := runPartner(t, fx, addr, healthyLeaf, cfg, func(c net.Conn) net.Conn {
					g := newGatedConn(c, 256<<10)
					gates <- g
					return g
				}, healthy)
				healthyDone <- outcome{res, err}
			}()
			var gate *gatedConn
			select {
			case gate = <-gates:
			case o := <-healthyDone:
				t.Fatalf("the healthy session failed to start: %v", o.err)
			}
			var releaseOnce sync.Once
			release := func() { releaseOnce.Do(func() { close(gate.Release) }) }
			t.Cleanup(func() { release(); <-healthyDone })
			select {
			case <-gate.Reached:
			case o := <-healthyDone:
				healthyDone <- o
				t.Fatalf("the healthy session ended before it was paused: %v", o.err)
			case <-time.After(waitTimeout):
				t.Fatal("the healthy session did not reach its pause")
			}

			resultsBefore := len(sys.responder.Results())
			rp, answer := rawPartner(t, fx, addr, fx.partner(t, partnerID), partnerID, partnerPassword, violationBuffer, violationCredit)
			if answer.BufferSize != violationBuffer || answer.Credit != violationCredit {
				t.Fatalf("the responder answered buffer %d, credit %d; want %d, %d", answer.BufferSize, answer.Credit, violationBuffer, violationCredit)
			}
			local := rp.Conn.LocalAddr().String()
			writeCommand(t, rp, violationSFID(fmt.Sprintf("VIOLATION%d", i)))
			if cmd := readCommand(t, rp); cmd.Code() != oftp2.CodeSFPA {
				t.Fatalf("answer to the SFID: %s, want SFPA", cmd.Code())
			}
			if tc.holdInside {
				insideFwd.Pause()
			}
			tc.act(t, rp)

			esid, err := rp.ReadESID(20 * time.Second)
			insideFwd.Resume()
			if err != nil {
				t.Fatalf("partner: %v", err)
			}
			if esid.Reason != tc.esid {
				t.Errorf("partner's ESID reason = %s, want %s", esid.Reason, tc.esid)
			}
			sys.securityEvent(t, "protocol_violation", local, map[string]string{
				"side": "partner", "command": tc.command, "esid_reason": fmt.Sprintf("%02d", uint8(tc.esid)),
			})

			// The responder's session of the violating partner ended by the proxy's ESID.
			var inside *servertest.ResponderResult
			for _, r := range sys.responderResults(t, resultsBefore+1)[resultsBefore:] {
				if r.Result.Partner == partnerID {
					inside = &r
				}
			}
			if inside == nil {
				t.Fatalf("the responder's session of %s did not end", partnerID)
			}
			var se *endpoint.SessionError
			if !errors.As(inside.Err, &se) || !se.Remote || se.Reason != tc.esid {
				t.Errorf("the responder's session ended with %v, want an ESID %s from its peer", inside.Err, tc.esid)
			}
			if n := len(inside.Result.Received); n != 0 {
				t.Errorf("the responder stored %d files of the violating session, want 0", n)
			}

			release()
			var o outcome
			select {
			case o = <-healthyDone:
				healthyDone <- o // for the cleanup
			case <-time.After(2 * time.Minute):
				t.Fatal("the healthy session did not end")
			}
			if o.err != nil {
				t.Fatalf("the healthy session: %v", o.err)
			}
			var rr *servertest.ResponderResult
			for _, r := range sys.responderResults(t, resultsBefore+2)[resultsBefore:] {
				if r.Result.Partner == healthyID {
					rr = &r
				}
			}
			if rr == nil {
				t.Fatal("the responder has no result of the healthy session")
			}
			checkDelivered(t, o.res, *rr, []testFile{healthy})
		})
	}
	if got, want := len(sys.finalFiles(t)), len(tests); got != want {
		t.Errorf("%d files under final names, want %d (the healthy ones)", got, want)
	}
}

// violationSFID is the SFID of the misbehaving partner's file: U, 4 blocks, restart offered.
func violationSFID(name string) *oftp2.SFID {
	return &oftp2.SFID{
		DatasetName: name, Stamp: oftp2.Timestamp{Time: time.Now().Truncate(time.Second), Counter: 1},
		Destination: companyID, Originator: partnerID, Format: oftp2.FormatUnstructured,
		FileSize: 4, OriginalFileSize: 4,
	}
}

// appendSTB appends buf with its stream transmission header (RFC 5024 §2.4) to dst.
func appendSTB(dst, buf []byte) []byte {
	n := len(buf) + 4
	return append(append(dst, 0x10, byte(n>>16), byte(n>>8), byte(n)), buf...)
}

// startBrokenInternal runs an internal OFTP2 server driven at the codec level for one session:
// SSRM, the partner's SSID, its own SSID, then misbehave; after that it reads until the first
// ESID, which it hands over on the returned channel (closed without one when the connection
// ends). It returns the server's address.
func startBrokenInternal(t *testing.T, misbehave func(net.Conn, *oftp2.Writer)) (string, <-chan *oftp2.ESID) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	insideESID := make(chan *oftp2.ESID, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(insideESID)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(waitTimeout))
		r, w := oftp2.NewReader(conn, 0), oftp2.NewWriter(conn)
		w.WriteCommand(&oftp2.SSRM{})
		if _, err := r.ReadBuffer(); err != nil { // the partner's SSID
			return
		}
		w.WriteCommand(&oftp2.SSID{Level: 5, ID: companyID, Password: companyPassword, BufferSize: 4096, Mode: oftp2.ModeReceiver, Restart: true, Credit: 8})
		misbehave(conn, w)
		for {
			b, err := r.ReadBuffer()
			if err != nil {
				return
			}
			if cmd, err := oftp2.Parse(b, nil); err == nil {
				if e, ok := cmd.(*oftp2.ESID); ok {
					insideESID <- e
					return
				}
			}
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), insideESID
}

// TestInsideViolation has the internal OFTP2 server break the protocol: after the SSID
// exchange it sends a CDT although no file is open. The server's validator must end the
// session with ESID 02 to the partner (an endpoint sending a file, which sees a remote ESID)
// and to the internal server (through the client), with a protocol_violation event
// (side=inside) in the server's log and at the client.
func TestInsideViolation(t *testing.T) {
	fx := newFixture(t)
	internal, insideESID := startBrokenInternal(t, func(_ net.Conn, w *oftp2.Writer) { w.WriteCommand(&oftp2.CDT{}) })
	sys := startSystem(t, fx, systemOptions{internalVia: func(string) string { return internal }})

	f := makeFile(t, t.TempDir(), "to-a-broken-server.dat", oftp2.FormatUnstructured, 64<<10, 5)
	var local string
	_, err := runPartner(t, fx, sys.partnerAddr(t), fx.partner(t, partnerID), partnerConfig(partnerID, partnerPassword), func(c net.Conn) net.Conn {
		local = c.LocalAddr().String()
		return c
	}, f)
	var se *endpoint.SessionError
	if !errors.As(err, &se) || !se.Remote || se.Reason != oftp2.ESIDProtocolViolation {
		t.Errorf("partner session ended with %v, want ESID 02 from the server", err)
	}
	select {
	case e := <-insideESID:
		if e == nil || e.Reason != oftp2.ESIDProtocolViolation {
			t.Errorf("the internal server got ESID %v, want 02", e)
		}
	case <-time.After(waitTimeout):
		t.Error("the internal server got no ESID")
	}
	sys.securityEvent(t, "protocol_violation", local, map[string]string{"side": "inside", "command": "CDT", "esid_reason": "02"})
}
