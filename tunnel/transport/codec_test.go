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

func dataFrame(id uint64, b []byte, more ...[]byte) *tunnelv1.Frame {
	return &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionData{SessionData: &tunnelv1.SessionData{SessionId: id, Buffer: b, MoreBuffers: more}}}
}

// filled returns n bytes of a pattern that depends on seed.
func filled(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
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
		more []int // sizes of more_buffers
	}{
		{"largest", 1<<40 + 3, 99999, nil},
		{"one byte", 7, 1, nil},
		{"id zero", 0, 300, nil},
		{"4 KiB", 2, 4096, nil},
		{"batch of three", 12, 99999, []int{99999, 17}},
		{"batch of small ones", 4, 1, []int{1, 2, 300, 128}},
		{"batch, id zero", 0, 5000, []int{65535}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := filled(tt.size, 1)
			var more [][]byte
			for i, n := range tt.more {
				more = append(more, filled(n, i+2))
			}
			for _, msg := range []proto.Message{
				&tunnelv1.ConnectRequest{Frame: dataFrame(tt.id, buf, more...)},
				&tunnelv1.ConnectResponse{Frame: dataFrame(tt.id, buf, more...)},
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
					// A frame reused from a batch of four: the decoded message
					// must not keep its buffers.
					reused := dataFrame(99, nil, []byte("a"), []byte("b"), []byte("c"))
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
// encoded as proto.Marshal encodes it, and pooled exchange buffers are
// handed to gRPC as they are (the payload is the caller's buffers, not
// copies), one or a batch.
func TestCodecSendOwned(t *testing.T) {
	c := codec{pool: new(bufpool.Pool)}
	var pool bufpool.Pool
	for _, tt := range []struct {
		name   string
		id     uint64
		sizes  []int
		copied bool // one buffer too small for gRPC to pool: encoded as one copy
	}{
		{"largest", 1<<40 + 3, []int{99999}, false},
		{"default buffer", 9, []int{65535}, false},
		{"4 KiB", 2, []int{4096}, false},
		{"id zero", 0, []int{2000}, false},
		{"small", 5, []int{300}, true},
		{"batch", 8, []int{99999, 99999, 4096}, false},
		{"batch with a small buffer", 3, []int{300, 70000}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if mem.IsBelowBufferPoolingThreshold(headerBufCap) {
				t.Fatalf("headerBufCap %d is below gRPC's pooling threshold", headerBufCap)
			}
			for _, env := range []envelope{new(tunnelv1.ConnectRequest), new(tunnelv1.ConnectResponse)} {
				// The owned message is sent once: each envelope takes buffers of its own.
				var bufs []*[]byte
				var slices [][]byte
				for i, n := range tt.sizes {
					b := pool.Get(n)
					copy(*b, filled(n, i+3))
					bufs = append(bufs, b)
					slices = append(slices, *b)
				}
				f := dataFrame(tt.id, slices[0], slices[1:]...)
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
				own := &owned{envelope: env, bufs: bufs, pool: &pool}
				data, err := c.Marshal(own)
				if err != nil {
					t.Fatalf("Marshal(owned) = %v", err)
				}
				if own.bufs != nil {
					t.Errorf("Marshal(owned) left the buffers in the message, want them taken over")
				}
				if got := data.Materialize(); !bytes.Equal(got, want) {
					t.Fatalf("Marshal(owned) = %d bytes differing from proto.Marshal's %d", len(got), len(want))
				}
				aliased := 0
				for _, p := range data {
					for _, b := range slices {
						if &p.ReadOnlyData()[0] == &b[0] {
							aliased++
						}
					}
				}
				want1 := len(tt.sizes)
				if tt.copied {
					want1 = 0
				}
				if aliased != want1 {
					t.Errorf("Marshal(owned) of %v bytes: %d payloads are the caller's buffers, want %d", tt.sizes, aliased, want1)
				}
				data.Free()
			}
		})
	}
	// A batch whose frame does not list every buffer is refused, not sent short.
	env := &tunnelv1.ConnectRequest{Frame: dataFrame(1, make([]byte, 10))}
	if _, err := c.Marshal(&owned{envelope: env, bufs: []*[]byte{pool.Get(10), pool.Get(10)}, pool: &pool}); err == nil {
		t.Error("Marshal(owned) with two buffers for a frame of one = nil error, want an error")
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
	// A batch followed by another field: the general path keeps every buffer.
	batch := protowire.AppendTag(nil, fieldSessionDataID, protowire.VarintType)
	batch = protowire.AppendVarint(batch, 6)
	batch = protowire.AppendBytes(protowire.AppendTag(batch, fieldSessionDataBuffer, protowire.BytesType), []byte("one"))
	batch = protowire.AppendBytes(protowire.AppendTag(batch, fieldSessionDataMore, protowire.BytesType), []byte("two"))
	batch = protowire.AppendVarint(protowire.AppendTag(batch, 98, protowire.VarintType), 1)
	batch = protowire.AppendBytes(protowire.AppendTag(batch, fieldSessionDataMore, protowire.BytesType), []byte("three"))
	frame = protowire.AppendBytes(protowire.AppendTag(nil, fieldFrameSessionData, protowire.BytesType), batch)
	msg = protowire.AppendBytes(protowire.AppendTag(nil, fieldConnectFrame, protowire.BytesType), frame)
	got = new(tunnelv1.ConnectRequest)
	if err := c.Unmarshal(split(msg, 3), got); err != nil {
		t.Fatalf("Unmarshal(batch with another field) = %v", err)
	}
	if d := got.GetFrame().GetSessionData(); d.GetSessionId() != 6 || string(d.GetBuffer()) != "one" ||
		len(d.GetMoreBuffers()) != 2 || string(d.GetMoreBuffers()[0]) != "two" || string(d.GetMoreBuffers()[1]) != "three" {
		t.Errorf("Unmarshal(batch with another field) = %v, want session 6, buffers one, two, three", got)
	}
	// Truncated: the lengths promise more than there is.
	full, err := proto.Marshal(&tunnelv1.ConnectRequest{Frame: dataFrame(3, make([]byte, 1000))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(split(full[:len(full)-10], 100), new(tunnelv1.ConnectRequest)); err == nil {
		t.Error("Unmarshal(truncated SessionData) = nil error, want an error")
	}
	full, err = proto.Marshal(&tunnelv1.ConnectRequest{Frame: dataFrame(3, make([]byte, 1000), make([]byte, 500))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(split(full[:len(full)-10], 100), new(tunnelv1.ConnectRequest)); err == nil {
		t.Error("Unmarshal(truncated batch) = nil error, want an error")
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
