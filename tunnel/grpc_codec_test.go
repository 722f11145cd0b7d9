package tunnel

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/testing/protocmp"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

func TestCodecRoundTrip(t *testing.T) {
	c := codec{pool: new(bufPool)}
	tests := []struct {
		name string
		msg  *tunnelv1.ConnectRequest
	}{
		{"small", &tunnelv1.ConnectRequest{Frame: &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionWindow{SessionWindow: &tunnelv1.SessionWindow{SessionId: 7, Credit: 65536}}}}},
		{"largest buffer", &tunnelv1.ConnectRequest{Frame: dataFrame(9, bytes.Repeat([]byte{0xA5}, DefaultMaxBufferSize))}},
		{"empty", &tunnelv1.ConnectRequest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Run twice so that the second pass reuses (unzeroed) pool buffers.
			for range 2 {
				data, err := c.Marshal(tt.msg)
				if err != nil {
					t.Fatalf("Marshal() = %v", err)
				}
				got := new(tunnelv1.ConnectRequest)
				if err := c.Unmarshal(data, got); err != nil {
					t.Fatalf("Unmarshal() = %v", err)
				}
				data.Free()
				if diff := cmp.Diff(tt.msg, got, protocmp.Transform()); diff != "" {
					t.Errorf("round trip (-want +got):\n%s", diff)
				}
			}
		})
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("Marshal(string) = nil error, want an error")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x00})}, new(int)); err == nil {
		t.Error("Unmarshal into *int = nil error, want an error")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 0x01})}, new(tunnelv1.ConnectRequest)); err == nil {
		t.Error("Unmarshal(truncated) = nil error, want an error")
	}
	if c.Name() != "proto" {
		t.Errorf("Name() = %q, want proto", c.Name())
	}
}
