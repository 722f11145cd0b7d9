package e2e

import (
	"fmt"
	"testing"

	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

const mib = 1 << 20

// TestTransferFormats sends files of 0 B, 1 MiB and 50 MiB in each Virtual File format from a partner endpoint through server, tunnel and client to the internal
// responder, one session per format: every file must be stored byte-identical and confirmed
// to the partner by the responder's EERP.
func TestTransferFormats(t *testing.T) {
	fx := newFixture(t)
	sys := startSystem(t, fx, systemOptions{})
	addr := sys.partnerAddr(t)
	leaf := fx.partner(t, partnerID)
	dir := t.TempDir()

	formats := []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable}
	sessions := 0
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			var files []testFile
			for i, size := range []int64{0, mib, 50 * mib} {
				files = append(files, makeFile(t, dir, fmt.Sprintf("%c-%d.dat", byte(f), size), f, size, uint64(i)))
			}
			res, err := sendAs(t, fx, addr, leaf, partnerID, partnerPassword, nil, files...)
			if err != nil {
				t.Fatalf("partner session: %v", err)
			}
			sessions++
			rr := sys.responderResults(t, sessions)[sessions-1]
			checkDelivered(t, res, rr, files)
			if rr.Result.Partner != partnerID {
				t.Errorf("the responder's session partner = %q, want %q", rr.Result.Partner, partnerID)
			}
		})
	}
	if got := sys.responder.Conns(); got != sessions {
		t.Errorf("the responder accepted %d connections, want %d (one per session)", got, sessions)
	}
}

// TestBothDirections sends files both ways in one incoming session: the partner's files to
// the responder, then — after the partner hands over the speaker role (CD) — the responder's
// outbox files for that partner back through client, tunnel and server to the partner. Every
// file must arrive byte-identical with its EERP, in both directions.
func TestBothDirections(t *testing.T) {
	fx := newFixture(t)
	dir := t.TempDir()
	var back []testFile
	for i, f := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable} {
		back = append(back, makeFile(t, dir, fmt.Sprintf("back-%c.dat", byte(f)), f, 3*mib, uint64(10+i)))
	}
	sys := startSystem(t, fx, systemOptions{responder: func(c *endpoint.Config) {
		c.Outbox = func(partner string) ([]endpoint.OutgoingFile, error) {
			if partner != partnerID {
				return nil, nil
			}
			out := make([]endpoint.OutgoingFile, len(back))
			for i, f := range back {
				out[i] = f.out
			}
			return out, nil
		}
	}})
	there := []testFile{
		makeFile(t, dir, "there-u.dat", oftp2.FormatUnstructured, 2*mib, 1),
		makeFile(t, dir, "there-t.edi", oftp2.FormatText, mib, 2),
	}
	partnerInbox := t.TempDir()
	res, err := sendAs(t, fx, sys.partnerAddr(t), fx.partner(t, partnerID), partnerID, partnerPassword, func(c *endpoint.Config) {
		c.Mode, c.ReceiveDir = oftp2.ModeBoth, partnerInbox
	}, there...)
	if err != nil {
		t.Fatalf("partner session: %v", err)
	}
	rr := sys.responderResults(t, 1)[0]
	checkDelivered(t, res, rr, there)
	if got, want := len(rr.Result.Sent), len(back); got != want {
		t.Fatalf("the responder offered %d files, want %d", got, want)
	}
	for i, d := range rr.Result.Sent {
		if d.Status != endpoint.StatusDelivered {
			t.Errorf("responder's file %s: status %q (%v), want delivered: no EERP from the partner", back[i].out.Path, d.Status, d.Err)
		}
	}
	if got, want := len(res.Received), len(back); got != want {
		t.Fatalf("the partner received %d files, want %d", got, want)
	}
	for i, rf := range res.Received {
		if got := fileSHA256(t, rf.Path); got != back[i].sha {
			t.Errorf("the partner stored %s with sha256 %s, want %s", rf.Path, got, back[i].sha)
		}
		if rf.Format != string(rune(back[i].out.Format)) {
			t.Errorf("the partner stored %s as format %s, want %c", rf.Path, rf.Format, byte(back[i].out.Format))
		}
	}
}

// TestConcurrentSessions runs 40 partner sessions at once through one tunnel, each with its
// own 512 KiB file and a small credit window (many CDTs crossing the tunnel): every file must
// arrive byte-identical with its EERP — the multiplexer keeps the sessions apart and none
// starves.
func TestConcurrentSessions(t *testing.T) {
	const sessions = 40
	fx := newFixture(t)
	sys := startSystem(t, fx, systemOptions{})
	addr := sys.partnerAddr(t)
	leaf := fx.partner(t, partnerID)
	dir := t.TempDir()
	files := make([]testFile, sessions)
	for i := range files {
		files[i] = makeFile(t, dir, fmt.Sprintf("c%02d.dat", i), oftp2.FormatUnstructured, 512<<10, uint64(100+i))
	}
	errs := make(chan error, sessions)
	for i := range files {
		go func() {
			res, err := sendAs(t, fx, addr, leaf, partnerID, partnerPassword, func(c *endpoint.Config) { c.BufferSize, c.Credit = 2048, 4 }, files[i])
			if err == nil {
				err = res.Err()
			}
			if err != nil {
				err = fmt.Errorf("session %d: %w", i, err)
			}
			errs <- err
		}()
	}
	for range files {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	want := make(map[string]bool, sessions)
	for _, f := range files {
		want[f.sha] = true
	}
	for _, rr := range sys.responderResults(t, sessions) {
		if rr.Err != nil {
			t.Errorf("responder session: %v", rr.Err)
		}
		for _, rf := range rr.Result.Received {
			sum := fileSHA256(t, rf.Path)
			if !want[sum] {
				t.Errorf("stored %s has sha256 %s: not one of the files sent, or stored twice", rf.Path, sum)
			}
			delete(want, sum)
		}
	}
	if len(want) != 0 {
		t.Errorf("%d of %d files did not arrive", len(want), sessions)
	}
}
