package tunnel

import (
	"math/bits"
	"sync"
)

// Buffer pool for outbound SessionData copies, by power-of-two size class so
// that a 4 KiB buffer does not pin a 128 KiB one. Classes run from 512 bytes
// (class 0) to 1 MiB (class 11); larger buffers are not pooled.
const (
	minClassShift = 9
	numClasses    = 12
)

// bufPool hands out buffers by size class. The zero value is ready to use;
// it is safe for concurrent use.
type bufPool struct {
	classes [numClasses]sync.Pool
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

// get returns a buffer of length n, from the pool where possible.
func (bp *bufPool) get(n int) *[]byte {
	c := classOf(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if p, _ := bp.classes[c].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// put returns a buffer obtained from get to its pool.
func (bp *bufPool) put(p *[]byte) {
	c := classOf(cap(*p))
	if c < 0 || cap(*p) != 1<<(c+minClassShift) {
		return
	}
	*p = (*p)[:0]
	bp.classes[c].Put(p)
}
