package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

func crl(id string, n int) *tunnelv1.Crl {
	der := bytes.Repeat([]byte(id[:1]), n)
	sum := sha256.Sum256(der)
	return &tunnelv1.Crl{Id: id, Url: "http://crl.test/" + id, Der: der, Sha256: sum[:]}
}

func TestConfigFrames(t *testing.T) {
	const chunk = 1000
	sec := &tunnelv1.SecurityConfig{
		PartnerListenAddress: ":6619",
		Partners:             []*tunnelv1.Partner{{OdetteId: "A", Enabled: true}},
		LogLevel:             tunnelv1.LogLevel_LOG_LEVEL_DEBUG,
		Crls:                 []*tunnelv1.Crl{crl("small", 10), crl("big", 2500), crl("exact", chunk)},
	}
	before := proto.Clone(sec)
	snap := &Snapshot{Version: 42, Security: sec}
	frames := configFrames(snap, chunk)
	if !proto.Equal(sec, before) {
		t.Fatal("configFrames modified the snapshot's configuration")
	}
	if len(frames) != 1+3 {
		t.Fatalf("configFrames() = %d frames, want a snapshot and 3 chunks", len(frames))
	}
	cs := frames[0].GetConfigSnapshot()
	if cs.GetVersion() != 42 || cs.GetConfig().GetPartnerListenAddress() != ":6619" || len(cs.GetConfig().GetPartners()) != 1 ||
		cs.GetConfig().GetLogLevel() != tunnelv1.LogLevel_LOG_LEVEL_DEBUG {
		t.Errorf("snapshot = %v, want version 42 with every field of the configuration", cs)
	}
	got := cs.GetConfig().GetCrls()
	if len(got) != 3 || !bytes.Equal(got[0].GetDer(), sec.Crls[0].Der) || got[0].GetSize() != 0 ||
		got[1].GetDer() != nil || got[1].GetSize() != 2500 || !bytes.Equal(got[1].GetSha256(), sec.Crls[1].Sha256) ||
		!bytes.Equal(got[2].GetDer(), sec.Crls[2].Der) {
		t.Errorf("snapshot CRLs = %v, want small and exact inline, big announced with size and sha256", got)
	}
	// Reassemble the chunked CRL as the server does.
	var re []byte
	for i, f := range frames[1:] {
		c := f.GetConfigChunk()
		if c.GetVersion() != 42 || c.GetCrlId() != "big" || c.GetOffset() != uint64(len(re)) || len(c.GetData()) > chunk {
			t.Errorf("chunk %d = version %d crl %q offset %d len %d, want version 42, big, offset %d, at most %d bytes",
				i, c.GetVersion(), c.GetCrlId(), c.GetOffset(), len(c.GetData()), len(re), chunk)
		}
		re = append(re, c.GetData()...)
	}
	if !bytes.Equal(re, sec.Crls[1].Der) {
		t.Errorf("reassembled CRL differs from the original (%d bytes, want %d)", len(re), len(sec.Crls[1].Der))
	}
}

func TestConfigFramesInlineBudget(t *testing.T) {
	// Many CRLs just below the chunk size: once the inline budget is used up the rest is chunked.
	var crls []*tunnelv1.Crl
	for i := range 5 {
		crls = append(crls, crl(string(rune('a'+i))+"crl", ChunkSize-1))
	}
	frames := configFrames(&Snapshot{Version: 1, Security: &tunnelv1.SecurityConfig{Crls: crls}}, 0)
	inline := 0
	for _, c := range frames[0].GetConfigSnapshot().GetConfig().GetCrls() {
		inline += len(c.GetDer())
	}
	if inline > inlineBudget {
		t.Errorf("inline CRL bytes = %d, want at most %d", inline, inlineBudget)
	}
	if want := 1 + 5 - inline/(ChunkSize-1); len(frames) != want {
		t.Errorf("configFrames() = %d frames, want %d (snapshot and one chunk per CRL not inline)", len(frames), want)
	}
}

func TestStreamCRL(t *testing.T) {
	der := bytes.Repeat([]byte("crl-bytes-"), 250) // 2500 bytes
	sum := sha256.Sum256(der)
	c := &tunnelv1.Crl{Id: "big", Size: uint64(len(der)), Sha256: sum[:]}
	tests := []struct {
		name    string
		content []byte
		wantErr string
	}{
		{"exact", der, ""},
		{"short", der[:2000], "offset 2000 of 2500"},
		{"other bytes", bytes.Repeat([]byte("x"), len(der)), "SHA-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			var offsets []uint64
			send := func(_ context.Context, f *tunnelv1.Frame) error {
				ch := f.GetConfigChunk()
				if ch.GetVersion() != 9 || ch.GetCrlId() != "big" {
					t.Errorf("chunk %v, want version 9 of CRL big", ch)
				}
				offsets = append(offsets, ch.GetOffset())
				got = append(got, ch.GetData()...) // copied: the buffer is reused
				return nil
			}
			src := func(id string) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tt.content)), nil }
			n, err := streamCRL(context.Background(), send, 9, c, src, 1000)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("streamCRL() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != 3 || !bytes.Equal(got, der) || len(offsets) != 3 || offsets[1] != 1000 || offsets[2] != 2000 {
				t.Errorf("streamCRL() = %d frames at %v with %d bytes, want 3 chunks at 0, 1000, 2000 with the CRL", n, offsets, len(got))
			}
		})
	}
}

func TestStreamedCRLNeedsSource(t *testing.T) {
	snap := &Snapshot{Version: 1, Security: &tunnelv1.SecurityConfig{Crls: []*tunnelv1.Crl{{Id: "x", Size: 10}}}}
	if err := snap.check(); err == nil || !strings.Contains(err.Error(), "CRLSource") {
		t.Errorf("check() = %v, want an error naming the missing CRLSource", err)
	}
	snap.CRLSource = func(string) (io.ReadCloser, error) { return nil, nil }
	if err := snap.check(); err != nil {
		t.Errorf("check() with a source = %v, want nil", err)
	}
	frames := configFrames(snap, 4)
	if len(frames) != 1 || frames[0].GetConfigSnapshot().GetConfig().GetCrls()[0].GetSize() != 10 {
		t.Errorf("configFrames() = %d frames, want only the snapshot announcing the streamed CRL", len(frames))
	}
}
