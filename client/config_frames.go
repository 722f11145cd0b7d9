package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"google.golang.org/protobuf/reflect/protoreflect"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// Limits of a configuration push.
const (
	// ChunkSize is the largest ConfigChunk payload, and the largest CRL sent inline.
	ChunkSize = 1 << 20
	// inlineBudget bounds the CRL bytes inline in one ConfigSnapshot, so that the snapshot
	// message stays well below the tunnel's message size limit however many CRLs there are.
	inlineBudget = 2 << 20
)

// configFrames returns the frames that carry snap to the server: one ConfigSnapshot, followed by
// ConfigChunk frames for every CRL held in memory that does not travel inline (larger than
// chunkSize, or beyond the inline budget), in order of CRL and offset. Streamed CRLs are
// announced in the ConfigSnapshot only; their chunks are read when they are sent (streamCRL).
// snap is not modified; the frames share its byte slices.
func configFrames(snap *Snapshot, chunkSize int) []*tunnelv1.Frame {
	if chunkSize <= 0 {
		chunkSize = ChunkSize
	}
	sec := snap.Security
	var chunked []*tunnelv1.Crl
	crls := make([]*tunnelv1.Crl, 0, len(sec.GetCrls()))
	inline := 0
	for _, c := range sec.GetCrls() {
		n := len(c.GetDer())
		if streamed(c) {
			// Announced as it is; pushConfig streams its chunks from the snapshot's CRLSource.
			crls = append(crls, c)
			continue
		}
		if n <= chunkSize && inline+n <= inlineBudget {
			inline += n
			crls = append(crls, c)
			continue
		}
		crls = append(crls, &tunnelv1.Crl{Id: c.GetId(), Url: c.GetUrl(), Size: uint64(n), Sha256: c.GetSha256()})
		chunked = append(chunked, c)
	}
	out := shallowWithCRLs(sec, crls)
	frames := []*tunnelv1.Frame{{Kind: &tunnelv1.Frame_ConfigSnapshot{ConfigSnapshot: &tunnelv1.ConfigSnapshot{Version: snap.Version, Config: out, Origin: snap.Origin}}}}
	for _, c := range chunked {
		der := c.GetDer()
		for off := 0; off < len(der); off += chunkSize {
			end := min(off+chunkSize, len(der))
			frames = append(frames, &tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigChunk{ConfigChunk: &tunnelv1.ConfigChunk{
				Version: snap.Version, CrlId: c.GetId(), Offset: uint64(off), Data: der[off:end]}}})
		}
	}
	return frames
}

// shallowWithCRLs returns a new SecurityConfig that shares every field of sec except crls. It
// copies through protobuf reflection, so fields added to the message later are carried too.
func shallowWithCRLs(sec *tunnelv1.SecurityConfig, crls []*tunnelv1.Crl) *tunnelv1.SecurityConfig {
	out := &tunnelv1.SecurityConfig{}
	dst := out.ProtoReflect()
	sec.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "crls" {
			dst.Set(fd, v)
		}
		return true
	})
	out.Crls = crls
	return out
}

// streamCRL sends the ConfigChunk frames of a streamed CRL, reading it from src in pieces of
// chunkSize with one buffer: SendControl returns once the frame is handed to the stream, so the
// buffer can take the next piece. The CRL's bytes are counted and hashed on the way: a source
// that does not deliver exactly the announced size and SHA-256 is an error here (the server
// would refuse the configuration too, with a less clear reason). It returns the frames sent.
func streamCRL(ctx context.Context, send func(context.Context, *tunnelv1.Frame) error, version uint64, c *tunnelv1.Crl,
	src func(string) (io.ReadCloser, error), chunkSize int) (frames int, err error) {
	r, err := src(c.GetId())
	if err != nil {
		return 0, fmt.Errorf("CRL %s: %w", c.GetId(), err)
	}
	defer r.Close()
	buf := make([]byte, min(uint64(chunkSize), c.GetSize()))
	h := sha256.New()
	var off uint64
	for off < c.GetSize() {
		n, err := io.ReadFull(r, buf[:min(uint64(len(buf)), c.GetSize()-off)])
		if err != nil {
			return frames, fmt.Errorf("CRL %s at offset %d of %d: %w", c.GetId(), off, c.GetSize(), err)
		}
		h.Write(buf[:n])
		f := &tunnelv1.Frame{Kind: &tunnelv1.Frame_ConfigChunk{ConfigChunk: &tunnelv1.ConfigChunk{
			Version: version, CrlId: c.GetId(), Offset: off, Data: buf[:n]}}}
		if err := send(ctx, f); err != nil {
			return frames, err
		}
		frames++
		off += uint64(n)
	}
	if sum := h.Sum(nil); len(c.GetSha256()) > 0 && !bytes.Equal(sum, c.GetSha256()) {
		return frames, fmt.Errorf("CRL %s: the source's bytes do not match the announced SHA-256", c.GetId())
	}
	return frames, nil
}
