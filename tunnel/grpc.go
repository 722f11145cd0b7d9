package tunnel

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// gRPC settings that the tunnel's throughput depends on, measured in
// docs/benchmarks.md. A Connect message carries one OFTP2 exchange buffer of
// up to 99,999 bytes. gRPC's default codec and buffer pool take such a
// message's buffers from a 1 MiB pool tier and zero the whole MiB on every
// use, for encoding and again for decoding; that zeroing cost a fifth of the
// CPU of a bulk transfer. The options below use a pool with power-of-two
// tiers up to 1 MiB that hands out buffers without zeroing them (every user
// overwrites the bytes it asks for: encoding, frame reads, message
// assembly), a codec that encodes and decodes with that pool, and socket
// buffers of 256 KiB, which cut the number of write system calls.
//
// They leave gRPC's flow-control windows alone (BDP estimation stays on);
// see docs/benchmarks.md for the comparison with fixed windows.
const socketBufferSize = 256 << 10

// ServerOptions returns the gRPC server options recommended for a tunnel
// server: the pooled codec, its buffer pool, and the socket buffer sizes.
// Each call returns options sharing one pool.
func ServerOptions() []grpc.ServerOption {
	p := new(bufPool)
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{pool: p}),
		experimental.BufferPool(p),
		grpc.WriteBufferSize(socketBufferSize),
		grpc.ReadBufferSize(socketBufferSize),
	}
}

// DialOptions returns the gRPC dial options recommended for a tunnel
// client, matching ServerOptions.
func DialOptions() []grpc.DialOption {
	p := new(bufPool)
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{pool: p})),
		experimental.WithBufferPool(p),
		grpc.WithWriteBufferSize(socketBufferSize),
		grpc.WithReadBufferSize(socketBufferSize),
	}
}

// Get implements mem.BufferPool: a buffer of the given length whose bytes
// are not zeroed.
func (bp *bufPool) Get(length int) *[]byte { return bp.get(length) }

// Put implements mem.BufferPool.
func (bp *bufPool) Put(b *[]byte) { bp.put(b) }

// codec is gRPC's protobuf codec with the tunnel's buffer pool. It keeps the
// name "proto", so it is wire-compatible with peers using the default.
type codec struct {
	pool *bufPool
}

var _ mem.BufferPool = (*bufPool)(nil)

// Marshal encodes v into one pooled buffer.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("tunnel: codec: cannot marshal %T: not a protobuf message", v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := proto.MarshalOptions{UseCachedSize: true}.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.get(size)
	// UseCachedSize is safe: Size has just been computed on the same,
	// unchanging message.
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal decodes data into v.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("tunnel: codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// messageOf returns v as a protobuf message (also for messages of the older
// API), or nil.
func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV2:
		return v
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	}
	return nil
}

// Name returns "proto".
func (codec) Name() string { return "proto" }
