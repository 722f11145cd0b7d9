package transport

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/tunnel/bufpool"
)

// gRPC settings that the tunnel's throughput depends on, measured in
// docs/benchmarks.md. A Connect message carries one OFTP2 exchange buffer of
// up to 99,999 bytes. gRPC's default codec and buffer pool take such a
// message's buffers from a 1 MiB pool tier and zero the whole MiB on every
// use, for encoding and again for decoding; that zeroing cost a fifth of the
// CPU of a bulk transfer. The options below use a pool with power-of-two
// tiers up to 1 MiB that hands out buffers without zeroing them (every user
// overwrites the bytes it asks for: encoding, frame reads, message
// assembly), a codec that encodes and decodes with that pool, and a write
// buffer of 256 KiB, which fills TLS records and cuts the number of write
// system calls. They turn gRPC's read buffer off: the TLS connection below
// already holds a decrypted record, and a buffer on top of it copied every
// received byte once more (13 % of smartproxy-client's CPU in a bulk
// transfer, docs/benchmarks.md); the HTTP/2 framer now reads each frame
// straight out of the record.
//
// The flow-control windows are set by NewServer and NewClient
// (DefaultFlowWindow), not here.
const writeBufferSize = 256 << 10

// ServerOptions returns the gRPC server options of a tunnel server: the
// tunnel's codec, its buffer pool, and the read and write buffer sizes. Each call
// returns options sharing one pool. NewServer uses them.
func ServerOptions() []grpc.ServerOption {
	p := new(bufpool.Pool)
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{pool: p}),
		experimental.BufferPool(p),
		grpc.WriteBufferSize(writeBufferSize),
		grpc.ReadBufferSize(0),
	}
}

// DialOptions returns the gRPC dial options of a tunnel client, matching
// ServerOptions. NewClient uses them.
func DialOptions() []grpc.DialOption {
	p := new(bufpool.Pool)
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{pool: p})),
		experimental.WithBufferPool(p),
		grpc.WithWriteBufferSize(writeBufferSize),
		grpc.WithReadBufferSize(0),
	}
}

// codec is gRPC's protobuf codec with the tunnel's buffer pool and a fast
// path for the one message that matters for throughput: a Connect message
// (ConnectRequest or ConnectResponse, which share their wire format) whose
// frame is SessionData. It keeps the name "proto" and produces and accepts
// the same bytes, so it is wire-compatible with peers using the default.
type codec struct {
	pool *bufpool.Pool
}

var _ mem.BufferPool = (*bufpool.Pool)(nil)

// Field numbers of the fast path (proto/smartproxy/tunnel/v1/tunnel.proto).
const (
	fieldConnectFrame      = 1 // ConnectRequest.frame, ConnectResponse.frame
	fieldFrameSessionData  = 8 // Frame.session_data
	fieldSessionDataID     = 1 // SessionData.session_id
	fieldSessionDataBuffer = 2 // SessionData.buffer
	fieldSessionDataMore   = 3 // SessionData.more_buffers
)

// Marshal encodes v into one pooled buffer; a SessionData message sent with
// Stream.SendOwned into a small header buffer followed by the exchange buffer
// itself, which gRPC returns to its pool once written.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if o, ok := v.(*owned); ok {
		bufs := o.bufs
		o.bufs = nil
		d := sessionDataOf(o.envelope)
		if d == nil || len(bufs) == 0 || len(bufs) != 1+len(d.MoreBuffers) {
			return nil, errors.New("transport: codec: SendOwned without a SessionData frame and its buffers")
		}
		return c.marshalOwned(d.SessionId, bufs, o.pool), nil
	}
	if d := sessionDataOf(v); d != nil {
		return c.marshalData(d), nil
	}
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("transport: codec: cannot marshal %T: not a protobuf message", v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := proto.MarshalOptions{UseCachedSize: true}.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	// UseCachedSize is safe: Size has just been computed on the same,
	// unchanging message.
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// sessionDataOf returns the SessionData of a Connect message, or nil.
func sessionDataOf(v any) *tunnelv1.SessionData {
	var f *tunnelv1.Frame
	switch v := v.(type) {
	case *tunnelv1.ConnectRequest:
		f = v.GetFrame()
	case *tunnelv1.ConnectResponse:
		f = v.GetFrame()
	}
	if k, ok := f.GetKind().(*tunnelv1.Frame_SessionData); ok && k.SessionData != nil {
		return k.SessionData
	}
	return nil
}

// marshalData encodes a Connect message carrying d, byte for byte as
// proto.Marshal does (fields in number order, zero values left out), without
// going through reflection.
func (c codec) marshalData(d *tunnelv1.SessionData) mem.BufferSlice {
	more := 0
	for _, b := range d.MoreBuffers {
		more += protowire.SizeTag(fieldSessionDataMore) + protowire.SizeBytes(len(b))
	}
	total := dataHeaderLen(d.SessionId, len(d.Buffer), more) + len(d.Buffer) + more
	buf := c.pool.Get(total)
	b := appendDataHeader((*buf)[:0], d.SessionId, len(d.Buffer), more)
	b = append(b, d.Buffer...)
	for _, m := range d.MoreBuffers {
		b = protowire.AppendBytes(protowire.AppendTag(b, fieldSessionDataMore, protowire.BytesType), m)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}
}

// headerBufCap is the capacity of the buffer marshalOwned puts a header of a
// few bytes in. gRPC wraps a buffer of at most 1 KiB (its pooling threshold)
// in a new value instead of a pooled one, an allocation per message; a
// 2 KiB buffer from the pool costs none.
const headerBufCap = 2 << 10

// marshalOwned encodes a Connect message carrying SessionData with session
// id and the exchange buffers bufs (buffer, then more_buffers), taken from
// pool: the header and the tag and length before each further buffer go
// into small buffers of their own, and the exchange buffers follow as they
// are, so the payload is not copied here (gRPC copies it once, into its
// write buffer). gRPC frees all of them when the message has been written;
// the exchange buffers then go back to pool. A single buffer small enough
// that gRPC would not pool it is copied instead.
func (c codec) marshalOwned(id uint64, bufs []*[]byte, pool *bufpool.Pool) mem.BufferSlice {
	if len(bufs) == 1 && mem.IsBelowBufferPoolingThreshold(cap(*bufs[0])) {
		out := c.marshalData(&tunnelv1.SessionData{SessionId: id, Buffer: *bufs[0]})
		pool.Put(bufs[0])
		return out
	}
	more := 0
	for _, b := range bufs[1:] {
		more += protowire.SizeTag(fieldSessionDataMore) + protowire.SizeBytes(len(*b))
	}
	hdr := c.pool.Get(headerBufCap)
	*hdr = appendDataHeader((*hdr)[:0], id, len(*bufs[0]), more)
	out := make(mem.BufferSlice, 0, 2*len(bufs))
	out = append(out, mem.NewBuffer(hdr, c.pool), mem.NewBuffer(bufs[0], pool))
	for _, b := range bufs[1:] {
		tag := c.pool.Get(headerBufCap)
		*tag = protowire.AppendVarint(protowire.AppendTag((*tag)[:0], fieldSessionDataMore, protowire.BytesType), uint64(len(*b)))
		out = append(out, mem.NewBuffer(tag, c.pool), mem.NewBuffer(b, pool))
	}
	return out
}

// dataHeaderLen is the length of the bytes that precede an exchange buffer
// of n bytes in a Connect message carrying SessionData with session id,
// followed by more bytes of further buffers (their tags and lengths
// included).
func dataHeaderLen(id uint64, n, more int) int {
	dataLen := dataFieldsLen(id, n) + more
	frameLen := protowire.SizeTag(fieldFrameSessionData) + protowire.SizeBytes(dataLen)
	return protowire.SizeTag(fieldConnectFrame) + protowire.SizeBytes(frameLen) - n - more
}

// dataFieldsLen is the length of the encoded SessionData fields id and
// buffer.
func dataFieldsLen(id uint64, n int) int {
	l := 0
	if id != 0 {
		l += protowire.SizeTag(fieldSessionDataID) + protowire.SizeVarint(id)
	}
	if n > 0 {
		l += protowire.SizeTag(fieldSessionDataBuffer) + protowire.SizeBytes(n)
	}
	return l
}

// appendDataHeader appends the bytes that precede an exchange buffer of n
// bytes in a Connect message carrying SessionData with session id, followed
// by more bytes of further buffers, as proto.Marshal lays them out.
func appendDataHeader(b []byte, id uint64, n, more int) []byte {
	dataLen := dataFieldsLen(id, n) + more
	frameLen := protowire.SizeTag(fieldFrameSessionData) + protowire.SizeBytes(dataLen)
	b = protowire.AppendTag(b, fieldConnectFrame, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(frameLen))
	b = protowire.AppendTag(b, fieldFrameSessionData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(dataLen))
	if id != 0 {
		b = protowire.AppendTag(b, fieldSessionDataID, protowire.VarintType)
		b = protowire.AppendVarint(b, id)
	}
	if n > 0 {
		b = protowire.AppendTag(b, fieldSessionDataBuffer, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
	}
	return b
}

// Unmarshal decodes data into v. A Connect message that carries SessionData
// is decoded straight from gRPC's buffers: the exchange buffer is copied
// once, into memory the caller owns (from the Stream's pool when v is one of
// its pooled messages), and the frame already in v is reused when it is a
// SessionData frame (see Stream.Recv).
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if ok, err := c.unmarshalData(data, v); ok || err != nil {
		return err
	}
	m := messageOf(v)
	switch v := v.(type) {
	case pooledRequest:
		m = v.ConnectRequest
	case pooledResponse:
		m = v.ConnectResponse
	}
	if m == nil {
		return fmt.Errorf("transport: codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// maxDataHeader is the most bytes that precede the exchange buffer in a
// Connect message carrying SessionData: three tags of one byte, three
// length varints and the session id varint.
const maxDataHeader = 3 + 3*binaryMaxVarintLen32 + 1 + binaryMaxVarintLen64

const (
	binaryMaxVarintLen32 = 5
	binaryMaxVarintLen64 = 10
)

var errShortData = errors.New("transport: codec: SessionData shorter than its header says")

// unmarshalData decodes data into v if v is a Connect message and data is,
// in proto.Marshal's layout, a Connect message whose frame is SessionData.
// ok is false, with a nil error, when the message takes the general path.
func (c codec) unmarshalData(data mem.BufferSlice, v any) (ok bool, err error) {
	var frame **tunnelv1.Frame
	var pool *bufpool.Pool // where the exchange buffer comes from; nil: allocated
	switch v := v.(type) {
	case *tunnelv1.ConnectRequest:
		frame = &v.Frame
	case *tunnelv1.ConnectResponse:
		frame = &v.Frame
	case pooledRequest:
		frame, pool = &v.Frame, v.pool
	case pooledResponse:
		frame, pool = &v.Frame, v.pool
	default:
		return false, nil
	}
	total := data.Len()
	var head [maxDataHeader]byte
	h := head[:copyAt(head[:min(total, len(head))], data, 0)]
	if len(h) == 0 {
		return false, nil
	}
	// Connect.frame: a length that runs to the end of the message.
	n, frameLen, ok := expectBytes(h, fieldConnectFrame)
	if !ok || n+frameLen != total {
		return false, nil
	}
	h = h[n:]
	// Frame.session_data: the only field of the frame.
	n, dataLen, ok := expectBytes(h, fieldFrameSessionData)
	if !ok || n+dataLen != frameLen {
		return false, nil
	}
	h = h[n:]
	var id uint64
	if num, typ, n := protowire.ConsumeTag(h); n > 0 && num == fieldSessionDataID && typ == protowire.VarintType {
		var m int
		if id, m = protowire.ConsumeVarint(h[n:]); m < 0 {
			return false, nil
		}
		h, dataLen = h[n+m:], dataLen-(n+m)
	}
	n, bufLen, ok := expectBytes(h, fieldSessionDataBuffer)
	if !ok || n+bufLen > dataLen || bufLen == 0 {
		return false, nil
	}
	// The exchange buffer starts right after the header parsed above (so
	// within head); the fields after it, up to the end of the message, are
	// more_buffers.
	start := total - dataLen + n
	b, err := takeAt(data, start, bufLen, pool)
	if err != nil {
		return true, err
	}
	f := *frame
	k, _ := f.GetKind().(*tunnelv1.Frame_SessionData)
	if k == nil || k.SessionData == nil {
		k = &tunnelv1.Frame_SessionData{SessionData: new(tunnelv1.SessionData)}
		f = &tunnelv1.Frame{Kind: k}
		*frame = f
	}
	d := k.SessionData
	d.SessionId = id
	d.Buffer = b
	clear(d.MoreBuffers)
	d.MoreBuffers = d.MoreBuffers[:0]
	for off := start + bufLen; off < total; {
		var tag [1 + binaryMaxVarintLen32]byte
		t := tag[:copyAt(tag[:min(total-off, len(tag))], data, off)]
		n, l, ok := expectBytes(t, fieldSessionDataMore)
		if !ok || l == 0 || off+n+l > total {
			// Not this codec's layout: give the buffers back and take the
			// general path.
			putData(d, pool)
			return false, nil
		}
		m, err := takeAt(data, off+n, l, pool)
		if err != nil {
			putData(d, pool)
			return true, err
		}
		d.MoreBuffers = append(d.MoreBuffers, m)
		off += n + l
	}
	return true, nil
}

// takeAt returns n bytes of data from offset off, copied into a slice from
// pool (allocated when pool is nil).
func takeAt(data mem.BufferSlice, off, n int, pool *bufpool.Pool) ([]byte, error) {
	var b []byte
	if pool != nil {
		b = pool.GetSlice(n)
	} else {
		b = make([]byte, n)
	}
	if copyAt(b, data, off) != n {
		if pool != nil {
			pool.PutSlice(b)
		}
		return nil, errShortData
	}
	return b, nil
}

// putData returns the buffers of d to pool and clears them.
func putData(d *tunnelv1.SessionData, pool *bufpool.Pool) {
	if pool != nil {
		pool.PutSlice(d.Buffer)
		for _, b := range d.MoreBuffers {
			pool.PutSlice(b)
		}
	}
	d.Buffer = nil
	clear(d.MoreBuffers)
	d.MoreBuffers = d.MoreBuffers[:0]
}

// copyAt copies data's bytes from offset off into dst and returns how many it
// copied: len(dst), or fewer at the end of data.
func copyAt(dst []byte, data mem.BufferSlice, off int) int {
	n := 0
	for _, b := range data {
		d := b.ReadOnlyData()
		if off >= len(d) {
			off -= len(d)
			continue
		}
		n += copy(dst[n:], d[off:])
		off = 0
		if n == len(dst) {
			break
		}
	}
	return n
}

// expectBytes consumes the tag of a length-delimited field num and its
// length: n is the bytes consumed, l the length that follows.
func expectBytes(b []byte, num protowire.Number) (n, l int, ok bool) {
	got, typ, n := protowire.ConsumeTag(b)
	if n <= 0 || got != num || typ != protowire.BytesType {
		return 0, 0, false
	}
	v, m := protowire.ConsumeVarint(b[n:])
	if m <= 0 || v > 1<<31 {
		return 0, 0, false
	}
	return n + m, int(v), true
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
