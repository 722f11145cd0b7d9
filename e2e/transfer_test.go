package e2e

import (
	"fmt"
	"testing"

	"smartproxy/oftp2"
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
