// Package bufpool is the byte-buffer pool of the tunnel's data path: the multiplexer's copies of
// outgoing exchange buffers and the gRPC transport's message and frame buffers
// (tunnel/transport uses a [Pool] as gRPC's mem.BufferPool).
//
// Buffers come in power-of-two size classes from 512 bytes to 1 MiB, so that a 4 KiB buffer
// does not pin a 128 KiB one; larger buffers are not pooled. A buffer from Get is not zeroed:
// every user overwrites the bytes it asks for. gRPC's own pool zeroes every buffer it hands out,
// and for an OFTP2 buffer of up to 99,999 bytes it zeroes a whole MiB (docs/benchmarks.md).
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minClassShift = 9  // the smallest class holds 512 bytes
	numClasses    = 12 // … and the largest 1 MiB
)

// MaxPooled is the largest capacity the pool keeps.
const MaxPooled = 1 << (minClassShift + numClasses - 1)

// Pool hands out buffers by size class. The zero value is ready to use; it is safe for
// concurrent use. Its method set is that of gRPC's mem.BufferPool.
type Pool struct {
	classes [numClasses]sync.Pool
	holders sync.Pool // spare *[]byte for GetSlice and PutSlice
}

// classOf returns the size class for n bytes, or -1 when n is too large.
func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	c := bits.Len(uint(n-1)) - minClassShift
	if c >= numClasses {
		return -1
	}
	return c
}

// Get returns a buffer of length n whose bytes are not zeroed, from the pool where possible.
func (p *Pool) Get(n int) *[]byte {
	c := classOf(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, _ := p.classes[c].Get().(*[]byte); b != nil {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// Put returns a buffer obtained from Get. Buffers of other capacities are dropped.
func (p *Pool) Put(b *[]byte) {
	c := classOf(cap(*b))
	if c < 0 || cap(*b) != 1<<(c+minClassShift) {
		return
	}
	*b = (*b)[:0]
	p.classes[c].Put(b)
}

// GetSlice is Get for a caller that keeps a plain slice: a buffer of length n, not zeroed.
func (p *Pool) GetSlice(n int) []byte {
	h := p.Get(n)
	b := *h
	*h = nil
	p.holders.Put(h)
	return b
}

// Hold wraps b, a buffer from GetSlice, in a holder for Put: a caller that kept the slice hands
// it on to code that returns buffers with Put.
func (p *Pool) Hold(b []byte) *[]byte {
	h, _ := p.holders.Get().(*[]byte)
	if h == nil {
		h = new([]byte)
	}
	*h = b
	return h
}

// PutSlice returns a buffer obtained from GetSlice (or Get). Buffers of other capacities are
// dropped. The caller must not use b afterwards.
func (p *Pool) PutSlice(b []byte) {
	c := classOf(cap(b))
	if c < 0 || cap(b) != 1<<(c+minClassShift) {
		return
	}
	p.Put(p.Hold(b))
}
