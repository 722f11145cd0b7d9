package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"smartproxy/oftp2"
)

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

// TestTransferFormats sends files of every format and of the sizes around
// the 63-octet subrecord limit, with and without buffer compression, and
// checks that the stored files are byte-identical and confirmed by EERP.
func TestTransferFormats(t *testing.T) {
	sizes := []int{0, 1, 63, 64, 65, 4096 + 7, 300_000}
	formats := []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable}
	for _, compress := range []bool{true, false} {
		t.Run(fmt.Sprintf("compression=%t", compress), func(t *testing.T) {
			src := t.TempDir()
			var files []OutgoingFile
			want := map[string]string{} // dataset name → sha256
			for _, f := range formats {
				for _, n := range sizes {
					path, rs, _ := content(t, src, f, n, 1)
					of := OutgoingFile{Path: path, Format: f}
					if f == oftp2.FormatFixed {
						of.RecordSize = rs
					}
					files = append(files, of)
					want[DatasetName(filepath.Base(path))] = sha256File(t, path)
				}
			}
			ic := initiatorConfig(t)
			ic.DisableCompression = !compress
			ic.BufferSize = 1000 // many buffers and CDTs even for small files
			ic.Credit = 3
			rc := responderConfig(t)
			ini, resp := mustNew(t, ic), mustNew(t, rc)
			i, r := pair(t, context.Background(), ini, resp, nil, files...)
			if i.err != nil || r.err != nil {
				t.Fatalf("Run: initiator %v, responder %v", i.err, r.err)
			}
			if err := i.res.Err(); err != nil {
				t.Fatalf("Result.Err() = %v, want every file delivered", err)
			}
			if got, want := len(r.res.Received), len(files); got != want {
				t.Fatalf("received %d files, want %d", got, want)
			}
			for _, rf := range r.res.Received {
				if got := sha256File(t, rf.Path); got != want[rf.DatasetName] || rf.SHA256 != got {
					t.Errorf("%s (%s): sha256 %s, metadata %s, want %s", rf.DatasetName, rf.Format, got, rf.SHA256, want[rf.DatasetName])
				}
				if rf.Partner != initID || rf.Originator != initID || rf.Destination != respID {
					t.Errorf("%s: partner %q originator %q destination %q", rf.DatasetName, rf.Partner, rf.Originator, rf.Destination)
				}
			}
			for _, d := range i.res.Sent {
				if d.Status != StatusDelivered {
					t.Errorf("%s: status %v, want delivered", d.File.Path, d.Status)
				}
			}
			assertNoPartials(t, rc.ReceiveDir)
		})
	}
}

// assertNoPartials checks that a receive directory has no partial files or
// outstanding responses left.
func assertNoPartials(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{partialDirName, responsesDirName} {
		entries, err := os.ReadDir(filepath.Join(dir, stateDirName, sub))
		if err != nil {
			t.Fatalf("receive directory: %v", err)
		}
		if len(entries) != 0 {
			t.Errorf("%s has %d entries left, want none", sub, len(entries))
		}
	}
}

// TestCounts checks the EFID counts the sender puts for each format
// (RFC 5024 §5.3.8) and the metadata the receiver stores.
func TestCounts(t *testing.T) {
	src := t.TempDir()
	tests := []struct {
		format      oftp2.FileFormat
		n           int
		wantRecords bool
	}{
		{oftp2.FormatUnstructured, 5000, false},
		{oftp2.FormatText, 5000, false},
		{oftp2.FormatFixed, 5120, true},
		{oftp2.FormatVariable, 5000, true},
	}
	for _, tc := range tests {
		t.Run(string(rune(tc.format)), func(t *testing.T) {
			path, rs, records := content(t, src, tc.format, tc.n, 2)
			ini, resp := mustNew(t, initiatorConfig(t)), mustNew(t, responderConfig(t))
			i, r := pair(t, context.Background(), ini, resp, nil, OutgoingFile{Path: path, Format: tc.format, RecordSize: rs, Description: "counts test", UserData: "UD1"})
			if i.err != nil || r.err != nil {
				t.Fatalf("Run: initiator %v, responder %v", i.err, r.err)
			}
			d := i.res.Sent[0]
			if d.Units != int64(tc.n) {
				t.Errorf("EFID unit count = %d, want %d", d.Units, tc.n)
			}
			wantRec := int64(0)
			if tc.wantRecords {
				wantRec = records
			}
			if d.Records != wantRec {
				t.Errorf("EFID record count = %d, want %d", d.Records, wantRec)
			}
			rf := r.res.Received[0]
			if rf.Records != wantRec || rf.Units != int64(tc.n) || rf.Format != string(rune(tc.format)) || rf.Description != "counts test" || rf.UserData != "UD1" {
				t.Errorf("ReceivedFile = %+v", rf)
			}
			// The metadata sidecar holds the same.
			side, err := ReadMetadata(rf.Path)
			if err != nil {
				t.Fatalf("ReadMetadata(%s) = %v", rf.Path, err)
			}
			if side.SHA256 != rf.SHA256 || side.Records != rf.Records || side.DatasetName != rf.DatasetName {
				t.Errorf("ReadMetadata(%s) = %+v, want %+v", rf.Path, side, rf)
			}
		})
	}
}

// TestBothDirections: the Initiator sends, then the Responder sends from
// its outbox when it holds the turn, in one session.
func TestBothDirections(t *testing.T) {
	src := t.TempDir()
	up1, _, _ := content(t, src, oftp2.FormatUnstructured, 70_000, 3)
	up2, _, _ := content(t, src, oftp2.FormatText, 5_000, 3)
	down, _, _ := content(t, src, oftp2.FormatVariable, 40_000, 4)
	rc := responderConfig(t)
	var outboxPartner string
	rc.Outbox = func(partner string) ([]OutgoingFile, error) {
		outboxPartner = partner
		return []OutgoingFile{{Path: down, Format: oftp2.FormatVariable}}, nil
	}
	ic := initiatorConfig(t)
	ini, resp := mustNew(t, ic), mustNew(t, rc)
	i, r := pair(t, context.Background(), ini, resp, nil,
		OutgoingFile{Path: up1}, OutgoingFile{Path: up2, Format: oftp2.FormatText})
	if i.err != nil || r.err != nil {
		t.Fatalf("Run: initiator %v, responder %v", i.err, r.err)
	}
	if outboxPartner != initID {
		t.Errorf("Outbox called for %q, want %q", outboxPartner, initID)
	}
	if err := i.res.Err(); err != nil {
		t.Errorf("initiator deliveries: %v", err)
	}
	if err := r.res.Err(); err != nil {
		t.Errorf("responder deliveries: %v", err)
	}
	if len(i.res.Received) != 1 || len(r.res.Received) != 2 {
		t.Fatalf("received: initiator %d (want 1), responder %d (want 2)", len(i.res.Received), len(r.res.Received))
	}
	if got, want := i.res.Received[0].SHA256, sha256File(t, down); got != want {
		t.Errorf("file sent by the responder: sha256 %s, want %s", got, want)
	}
	if r.res.Partner != initID || i.res.Partner != respID {
		t.Errorf("partners: responder saw %q, initiator saw %q", r.res.Partner, i.res.Partner)
	}
}

// TestNothingToSend: a session without files ends with ESID 00 right after
// the turn changed once.
func TestNothingToSend(t *testing.T) {
	ini, resp := mustNew(t, initiatorConfig(t)), mustNew(t, responderConfig(t))
	i, r := pair(t, context.Background(), ini, resp, nil)
	if i.err != nil || r.err != nil {
		t.Fatalf("Run: initiator %v, responder %v, want nil", i.err, r.err)
	}
}

// TestRefusedDestination: a file for another destination is refused with
// SFNA 02 and the session goes on with the next file.
func TestRefusedDestination(t *testing.T) {
	src := t.TempDir()
	a, _, _ := content(t, src, oftp2.FormatUnstructured, 100, 5)
	b, _, _ := content(t, src, oftp2.FormatUnstructured, 200, 5)
	ini, resp := mustNew(t, initiatorConfig(t)), mustNew(t, responderConfig(t))
	i, r := pair(t, context.Background(), ini, resp, nil,
		OutgoingFile{Path: a, Destination: "O0013000000OTHER"}, OutgoingFile{Path: b})
	if i.err != nil || r.err != nil {
		t.Fatalf("Run: initiator %v, responder %v", i.err, r.err)
	}
	var fr *FileRefusedError
	if d := i.res.Sent[0]; d.Status != StatusRefused || !errors.As(d.Err, &fr) || fr.Reason != oftp2.SFNAInvalidDestination {
		t.Errorf("first file: status %v, err %v; want refused with SFNA 02", d.Status, d.Err)
	}
	if d := i.res.Sent[1]; d.Status != StatusDelivered {
		t.Errorf("second file: status %v, err %v; want delivered", d.Status, d.Err)
	}
	if len(r.res.Received) != 1 {
		t.Errorf("responder stored %d files, want 1", len(r.res.Received))
	}
}

// TestNERP: the receiver's Process refuses the stored file; the sender gets
// a NERP with the chosen reason instead of an EERP.
func TestNERP(t *testing.T) {
	src := t.TempDir()
	a, _, _ := content(t, src, oftp2.FormatText, 1000, 6)
	rc := responderConfig(t)
	rc.Process = func(rf ReceivedFile) error {
		return &NERPError{Reason: oftp2.NERPNotDelivered, Text: "no such mailbox"}
	}
	ini, resp := mustNew(t, initiatorConfig(t)), mustNew(t, rc)
	i, r := pair(t, context.Background(), ini, resp, nil, OutgoingFile{Path: a, Format: oftp2.FormatText})
	if i.err != nil || r.err != nil {
		t.Fatalf("Run: initiator %v, responder %v", i.err, r.err)
	}
	var ne *NERPError
	d := i.res.Sent[0]
	if d.Status != StatusNegative || !errors.As(d.Err, &ne) || ne.Reason != oftp2.NERPNotDelivered || ne.Creator != respID || ne.Text != "no such mailbox" {
		t.Errorf("delivery = %v, %v; want NERP 35 from %s", d.Status, d.Err, respID)
	}
	if i.res.Err() == nil {
		t.Error("Result.Err() = nil, want the NERP")
	}
}

// TestPrepareErrors: files that do not match their format are refused
// before the session starts.
func TestPrepareErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	long := make([]byte, 3000)
	for i := range long {
		long[i] = 'x'
	}
	tests := []struct {
		name string
		f    OutgoingFile
	}{
		{"missing", OutgoingFile{Path: filepath.Join(dir, "nope")}},
		{"directory", OutgoingFile{Path: dir}},
		{"F without record size", OutgoingFile{Path: write("f1", make([]byte, 10)), Format: oftp2.FormatFixed}},
		{"F partial record", OutgoingFile{Path: write("f2", make([]byte, 10)), Format: oftp2.FormatFixed, RecordSize: 3}},
		{"T control character", OutgoingFile{Path: write("t1", []byte("abc\x00def\r\n")), Format: oftp2.FormatText}},
		{"T line too long", OutgoingFile{Path: write("t2", long), Format: oftp2.FormatText}},
		{"U with record size", OutgoingFile{Path: write("u1", []byte("x")), RecordSize: 5}},
		{"V truncated header", OutgoingFile{Path: write("v1", []byte{0}), Format: oftp2.FormatVariable}},
		{"V truncated record", OutgoingFile{Path: write("v2", []byte{0, 5, 'a'}), Format: oftp2.FormatVariable}},
		{"V record above record size", OutgoingFile{Path: write("v3", []byte{0, 3, 'a', 'b', 'c'}), Format: oftp2.FormatVariable, RecordSize: 2}},
		{"unknown format", OutgoingFile{Path: write("x1", []byte("x")), Format: 'Z'}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := prepare(tc.f, initID, respID); err == nil {
				t.Errorf("prepare(%+v) = %+v, nil; want an error", tc.f, p.sfid)
			}
		})
	}
}

func TestDatasetName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"invoice_2024.edi", "INVOICE-2024.EDI"},
		{"ABC", "ABC"},
		{"---", "FILE"},
		{"a very long file name that exceeds the limit.txt", "A-VERY-LONG-FILE-NAME-THAT"},
		{"müller.txt", "M-LLER.TXT"},
	}
	for _, tc := range tests {
		got := DatasetName(tc.in)
		if got != tc.want {
			t.Errorf("DatasetName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if err := oftp2.Validate(&oftp2.SFID{DatasetName: got, Stamp: StampOf(testTime), Destination: respID, Originator: initID, Format: 'U'}, nil); err != nil {
			t.Errorf("DatasetName(%q) = %q is not a strict SFIDDSN: %v", tc.in, got, err)
		}
	}
}

// TestFinalNames: a dataset name that is taken gets the date and time
// appended, never replacing the earlier file; characters that are unsafe in
// a file name are replaced.
func TestFinalNames(t *testing.T) {
	src := t.TempDir()
	a, _, _ := content(t, src, oftp2.FormatUnstructured, 10, 20)
	b, _, _ := content(t, src, oftp2.FormatUnstructured, 20, 21)
	c, _, _ := content(t, src, oftp2.FormatUnstructured, 30, 22)
	stamp := StampOf(testTime)
	rc := responderConfig(t)
	ini, resp := mustNew(t, initiatorConfig(t)), mustNew(t, rc)
	i, r := pair(t, context.Background(), ini, resp, nil,
		OutgoingFile{Path: a, DatasetName: "ORDERS", Stamp: stamp},
		OutgoingFile{Path: b, DatasetName: "ORDERS", Stamp: oftp2.Timestamp{Time: stamp.Time, Counter: stamp.Counter + 1}},
		OutgoingFile{Path: c, DatasetName: "../ETC/PASSWD"})
	if i.err != nil || r.err != nil || i.res.Err() != nil {
		t.Fatalf("Run: %v, %v, %v", i.err, r.err, i.res.Err())
	}
	dir := rc.ReceiveDir
	date, tim := stampStrings(oftp2.Timestamp{Time: stamp.Time, Counter: stamp.Counter + 1})
	want := []struct{ name, src string }{
		{"ORDERS", a},
		{"ORDERS." + date + tim, b},
		{"_.._ETC_PASSWD", c},
	}
	for k, w := range want {
		if got := r.res.Received[k].Path; got != filepath.Join(dir, w.name) {
			t.Errorf("file %d stored as %s, want %s", k, got, filepath.Join(dir, w.name))
			continue
		}
		if sha256File(t, filepath.Join(dir, w.name)) != sha256File(t, w.src) {
			t.Errorf("%s has the wrong content", w.name)
		}
	}
}

// TestServe runs a Responder with Serve on a TLS listener, delivers files
// in three concurrent sessions and stops it by cancelling the context.
func TestServe(t *testing.T) {
	p := newTestPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.server)
	if err != nil {
		t.Fatal(err)
	}
	rc := responderConfig(t)
	resp := mustNew(t, rc)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var received []ReceivedFile
	served := make(chan error, 1)
	go func() {
		served <- resp.Serve(ctx, ln, func(r *Result, err error) {
			if err != nil {
				t.Errorf("session: %v", err)
			}
			mu.Lock()
			received = append(received, r.Received...)
			mu.Unlock()
		})
	}()
	src := t.TempDir()
	var wg sync.WaitGroup
	for k := range 3 {
		path, _, _ := content(t, src, oftp2.FormatUnstructured, 50_000+k, uint64(30+k))
		ini := mustNew(t, initiatorConfig(t))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.Dial("tcp", ln.Addr().String(), p.client)
			if err != nil {
				t.Error(err)
				return
			}
			res, err := ini.Run(context.Background(), c, OutgoingFile{Path: path})
			if err != nil || res.Err() != nil {
				t.Errorf("Run = %v, %v", err, res.Err())
			}
		}()
	}
	wg.Wait()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil after cancel", err)
	}
	if len(received) != 3 {
		t.Errorf("received %d files, want 3", len(received))
	}
}
