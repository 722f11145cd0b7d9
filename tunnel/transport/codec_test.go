package transport

import (
	"bytes"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel/bufpool"
)

func dataFrame(id uint64, b []byte) *tunnelv1.Frame {
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionData{SessionData: &tunnelv1.SessionData{SessionId: id, Buffer: b}}}
}

// split cuts b into a BufferSlice of pieces of at most n bytes, as gRPC
// hands over a message read from several HTTP/2 frames.
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return s
}

// TestCodecSessionDataFastPath: SessionData messages are encoded byte for
// byte as proto.Marshal encodes them, and decoded from any split of the
// bytes into the frame already in the message.
func TestCodecSessionDataFastPath(t *testing.T) {
	c := codec{pool: new(bufpool.Pool)}
	for _, tt := range []struct {
		name string
		id   uint64
		size int
	}{
		{"largest", 1<<40 + 3, 99999},
		{"one byte", 7, 1},
		{"id zero", 0, 300},
		{"4 KiB", 2, 4096},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, tt.size)
			for i := range buf {
				buf[i] = byte(i*7 + 1)
			}
			for _, msg := range []proto.Message{
				&tunnelv1.ConnectRequest{Frame: dataFrame(tt.id, buf)},
				&tunnelv1.ConnectResponse{Frame: dataFrame(tt.id, buf)},
			} {
				want, err := proto.Marshal(msg)
				if err != nil {
					t.Fatal(err)
				}
				data, err := c.Marshal(msg)
				if err != nil {
					t.Fatalf("Marshal() = %v", err)
				}
				if got := data.Materialize(); !bytes.Equal(got, want) {
					t.Fatalf("Marshal() = %d bytes differing from proto.Marshal's %d", len(got), len(want))
				}
				data.Free()
				for _, piece := range []int{1, 3, 16, 16384, len(want)} {
					got := msg.ProtoReflect().New().Interface()
					reused := dataFrame(99, nil)
					switch g := got.(type) {
					case *tunnelv1.ConnectRequest:
						g.Frame = reused
					case *tunnelv1.ConnectResponse:
						g.Frame = reused
					}
					if err := c.Unmarshal(split(want, piece), got); err != nil {
						t.Fatalf("Unmarshal(pieces of %d) = %v", piece, err)
					}
					if diff := cmp.Diff(msg, got, protocmp.Transform()); diff != "" {
						t.Errorf("Unmarshal(pieces of %d) (-want +got):\n%s", piece, diff)
					}
					if f := got.(interface{ GetFrame() *tunnelv1.Frame }).GetFrame(); f != reused {
						t.Errorf("Unmarshal(pieces of %d) replaced the SessionData frame in the message, want it reused", piece)
					}
				}
			}
		})
	}
}

// TestCodecSendOwned: a SessionData message sent with Stream.SendOwned is
// encoded as proto.Marshal encodes it, and a pooled exchange buffer is handed
// to gRPC as it is (the payload is the caller's buffer, not a copy).
func TestCodecSendOwned(t *testing.T) {
	c := codec{pool: new(bufpool.Pool)}
	var pool bufpool.Pool
	for _, tt := range []struct {
		name   string
		id     uint64
		size   int
		copied bool // too small for gRPC to pool: encoded as one copy
	}{
		{"largest", 1<<40 + 3, 99999, false},
		{"default buffer", 9, 65535, false},
		{"4 KiB", 2, 4096, false},
		{"id zero", 0, 2000, false},
		{"small", 5, 300, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if mem.IsBelowBufferPoolingThreshold(headerBufCap) {
				t.Fatalf("headerBufCap %d is below gRPC's pooling threshold", headerBufCap)
			}
			buf := pool.Get(tt.size)
			for i := range *buf {
				(*buf)[i] = byte(i*5 + 3)
			}
			payload := &(*buf)[0]
			for _, env := range []envelope{new(tunnelv1.ConnectRequest), new(tunnelv1.ConnectResponse)} {
				f := dataFrame(tt.id, *buf)
				switch m := env.(type) {
				case *tunnelv1.ConnectRequest:
					m.Frame = f
				case *tunnelv1.ConnectResponse:
					m.Frame = f
				}
				want, err := proto.Marshal(env)
				if err != nil {
					t.Fatal(err)
				}
				own := &owned{envelope: env, buf: buf, pool: &pool}
				data, err := c.Marshal(own)
				if err != nil {
					t.Fatalf("Marshal(owned) = %v", err)
				}
				if own.buf != nil {
					t.Errorf("Marshal(owned) left the buffer in the message, want it taken over")
				}
				if got := data.Materialize(); !bytes.Equal(got, want) {
					t.Fatalf("Marshal(owned) = %d bytes differing from proto.Marshal's %d", len(got), len(want))
				}
				aliased := len(data) == 2 && &data[1].ReadOnlyData()[0] == payload
				if aliased == tt.copied {
					t.Errorf("Marshal(owned) of %d bytes: payload is the caller's buffer = %v, want %v", tt.size, aliased, !tt.copied)
				}
				// The owned message is sent once: the second envelope takes a buffer of its own.
				data.Free()
				buf = pool.Get(tt.size)
				for i := range *buf {
					(*buf)[i] = byte(i*5 + 3)
				}
				payload = &(*buf)[0]
			}
		})
	}
}

// TestCodecSessionDataOtherLayouts: messages that are not in proto.Marshal's
// layout (an unknown field, fields in another order, a truncated buffer)
// take the general path or fail, never decode wrongly.
func TestCodecSessionDataOtherLayouts(t *testing.T) {
	c := codec{pool: new(bufpool.Pool)}
	// SessionData{buffer: "abc", session_id: 5}: fields in reverse order.
	data := protowire.AppendTag(nil, fieldSessionDataBuffer, protowire.BytesType)
	data = protowire.AppendBytes(data, []byte("abc"))
	data = protowire.AppendTag(data, fieldSessionDataID, protowire.VarintType)
	data = protowire.AppendVarint(data, 5)
	frame := protowire.AppendTag(nil, fieldFrameSessionData, protowire.BytesType)
	frame = protowire.AppendBytes(frame, data)
	msg := protowire.AppendTag(nil, fieldConnectFrame, protowire.BytesType)
	msg = protowire.AppendBytes(msg, frame)
	got := new(tunnelv1.ConnectRequest)
	if err := c.Unmarshal(split(msg, 2), got); err != nil {
		t.Fatalf("Unmarshal(reverse order) = %v", err)
	}
	if d := got.GetFrame().GetSessionData(); d.GetSessionId() != 5 || string(d.GetBuffer()) != "abc" {
		t.Errorf("Unmarshal(reverse order) = %v, want session 5, buffer abc", got)
	}
	// An unknown field after the frame.
	unknown := protowire.AppendTag(slices.Clone(msg), 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 1)
	got = new(tunnelv1.ConnectRequest)
	if err := c.Unmarshal(split(unknown, 5), got); err != nil {
		t.Fatalf("Unmarshal(unknown field) = %v", err)
	}
	if d := got.GetFrame().GetSessionData(); d.GetSessionId() != 5 || string(d.GetBuffer()) != "abc" {
		t.Errorf("Unmarshal(unknown field) = %v, want session 5, buffer abc", got)
	}
	// Truncated: the lengths promise more than there is.
	full, err := proto.Marshal(&tunnelv1.ConnectRequest{Frame: dataFrame(3, make([]byte, 1000))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(split(full[:len(full)-10], 100), new(tunnelv1.ConnectRequest)); err == nil {
		t.Error("Unmarshal(truncated SessionData) = nil error, want an error")
	}
}

// BenchmarkCodecSessionData: encoding and decoding one 65,535-byte exchange
// buffer, as gRPC hands it over (16 KiB pieces). Steady state allocates the
// decoded buffer only (the caller owns it).
func BenchmarkCodecSessionData(b *testing.B) {
	c := codec{pool: new(bufpool.Pool)}
	msg := &tunnelv1.ConnectRequest{Frame: dataFrame(11, make([]byte, 65535))}
	wire, err := proto.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	in := split(wire, 16384)
	got := &tunnelv1.ConnectRequest{Frame: dataFrame(0, nil)}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		data, err := c.Marshal(msg)
		if err != nil {
			b.Fatal(err)
		}
		data.Free()
		if err := c.Unmarshal(in, got); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	c := codec{pool: new(bufpool.Pool)}
	tests := []struct {
		name string
		msg  *tunnelv1.ConnectRequest
	}{
		{"small", &tunnelv1.ConnectRequest{Frame: &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionWindow{SessionWindow: &tunnelv1.SessionWindow{SessionId: 7, Credit: 65536}}}}},
		{"largest buffer", &tunnelv1.ConnectRequest{Frame: dataFrame(9, bytes.Repeat([]byte{0xA5}, 99999))}},
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
