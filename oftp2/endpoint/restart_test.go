package endpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"smartproxy/oftp2"
)

// watchFinalNames lists dir every few milliseconds until stop is closed
// and records every entry that is not the hidden state directory: a file
// under a final name.
func watchFinalNames(dir string, stop <-chan struct{}, wg *sync.WaitGroup, seen *atomic.Value) {
	defer wg.Done()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != stateDirName {
				seen.CompareAndSwap(nil, e.Name())
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// TestRestart cuts the connection in the middle of a file, checks that no
// file appeared under a final name and that the partial file was kept, then
// runs a second session that resumes the transfer (RFC 5024 §4.3.3) and
// checks the stored file is byte-identical.
func TestRestart(t *testing.T) {
	const size = 2 << 20
	for _, format := range []oftp2.FileFormat{oftp2.FormatUnstructured, oftp2.FormatText, oftp2.FormatFixed, oftp2.FormatVariable} {
		t.Run(string(rune(format)), func(t *testing.T) {
			path, rs, _ := content(t, t.TempDir(), format, size, 7)
			file := OutgoingFile{Path: path, Format: format, RecordSize: rs}
			rc := responderConfig(t)
			ic := initiatorConfig(t)
			ic.DisableCompression = true // so that the cut lands in the middle of the data
			ic.BufferSize = 4096
			ini, resp := mustNew(t, ic), mustNew(t, rc)

			// Session 1: cut after about half of the file.
			var seen atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go watchFinalNames(rc.ReceiveDir, stop, &wg, &seen)
			i, r := pair(t, context.Background(), ini, resp, func(target string) string {
				return newCutter(t, target, size/2).addr()
			}, file)
			close(stop)
			wg.Wait()
			if !errors.Is(i.err, ErrConnectionLost) || !errors.Is(r.err, ErrConnectionLost) {
				t.Fatalf("session 1: initiator %v, responder %v; want both ErrConnectionLost", i.err, r.err)
			}
			if d := i.res.Sent[0]; d.Status != StatusNotSent || !errors.Is(d.Err, ErrNotSent) {
				t.Errorf("session 1 delivery = %v, %v; want not sent", d.Status, d.Err)
			}
			if name := seen.Load(); name != nil {
				t.Fatalf("a file appeared under the final name %q during the broken session", name)
			}
			parts, _ := filepath.Glob(filepath.Join(rc.ReceiveDir, stateDirName, partialDirName, "*.part"))
			if len(parts) != 1 {
				t.Fatalf("partial files after the cut: %v, want one", parts)
			}
			fi, err := os.Stat(parts[0])
			if err != nil || fi.Size() == 0 || fi.Size() >= size {
				t.Fatalf("partial file: %v, %v; want some but not all data", fi, err)
			}

			// Session 2: resume.
			i, r = pair(t, context.Background(), ini, resp, nil, file)
			if i.err != nil || r.err != nil {
				t.Fatalf("session 2: initiator %v, responder %v", i.err, r.err)
			}
			d := i.res.Sent[0]
			if d.Status != StatusDelivered {
				t.Fatalf("session 2 delivery = %v, %v; want delivered", d.Status, d.Err)
			}
			if d.RestartPosition == 0 {
				t.Errorf("session 2 restart position = 0, want a resumed transfer")
			}
			rf := r.res.Received[0]
			if rf.RestartPosition != d.RestartPosition {
				t.Errorf("receiver restart position %d, sender %d", rf.RestartPosition, d.RestartPosition)
			}
			if got, want := sha256File(t, rf.Path), sha256File(t, path); got != want || rf.SHA256 != want {
				t.Errorf("resumed file sha256 %s (metadata %s), want %s", got, rf.SHA256, want)
			}
			assertNoPartials(t, rc.ReceiveDir)
		})
	}
}

// TestRestartNotAgreed: without restart the partial file is discarded and
// the second session starts from the beginning.
func TestRestartNotAgreed(t *testing.T) {
	const size = 1 << 20
	path, _, _ := content(t, t.TempDir(), oftp2.FormatUnstructured, size, 8)
	rc := responderConfig(t)
	rc.DisableRestart = true
	ic := initiatorConfig(t)
	ic.DisableCompression = true
	ini, resp := mustNew(t, ic), mustNew(t, rc)
	i, r := pair(t, context.Background(), ini, resp, func(target string) string {
		return newCutter(t, target, size/2).addr()
	}, OutgoingFile{Path: path})
	if i.err == nil || r.err == nil {
		t.Fatalf("session 1: initiator %v, responder %v; want both to fail", i.err, r.err)
	}
	parts, _ := filepath.Glob(filepath.Join(rc.ReceiveDir, stateDirName, partialDirName, "*"))
	if len(parts) != 0 {
		t.Errorf("partial files without restart: %v, want none", parts)
	}
	i, r = pair(t, context.Background(), ini, resp, nil, OutgoingFile{Path: path})
	if i.err != nil || r.err != nil {
		t.Fatalf("session 2: initiator %v, responder %v", i.err, r.err)
	}
	if d := i.res.Sent[0]; d.Status != StatusDelivered || d.RestartPosition != 0 {
		t.Errorf("session 2 delivery = %v (restart %d), want delivered from 0", d.Status, d.RestartPosition)
	}
	if got, want := r.res.Received[0].SHA256, sha256File(t, path); got != want {
		t.Errorf("sha256 %s, want %s", got, want)
	}
}

// TestRestartChangedFile: a file rewritten after a broken transfer has a
// new modification time and so a new Virtual File stamp (§1.5.2): it is
// sent from the beginning and never mixed with the partial data of the old
// content.
func TestRestartChangedFile(t *testing.T) {
	const size = 1 << 20
	dir := t.TempDir()
	path, _, _ := content(t, dir, oftp2.FormatUnstructured, size, 9)
	if err := os.Chtimes(path, testTime, testTime); err != nil {
		t.Fatal(err)
	}
	rc := responderConfig(t)
	ic := initiatorConfig(t)
	ic.DisableCompression = true
	ini, resp := mustNew(t, ic), mustNew(t, rc)
	i, _ := pair(t, context.Background(), ini, resp, func(target string) string {
		return newCutter(t, target, size/2).addr()
	}, OutgoingFile{Path: path})
	if i.err == nil {
		t.Fatal("session 1 did not break")
	}
	if err := os.WriteFile(path, make([]byte, size/4), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, testTime.Add(time.Second), testTime.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	i, r := pair(t, context.Background(), ini, resp, nil, OutgoingFile{Path: path})
	if i.err != nil || r.err != nil {
		t.Fatalf("session 2: initiator %v, responder %v", i.err, r.err)
	}
	d := i.res.Sent[0]
	if d.Status != StatusDelivered || d.RestartPosition != 0 {
		t.Fatalf("delivery = %v, %v, restart %d; want delivered from 0", d.Status, d.Err, d.RestartPosition)
	}
	if got, want := r.res.Received[0].SHA256, sha256File(t, path); got != want {
		t.Errorf("sha256 %s, want %s", got, want)
	}
}
