package revocation

import (
	"bytes"
	"math/big"
	"slices"
)

// index is a sorted, packed set of serial numbers. Each entry in arena is
// one length octet, one reason octet and the canonical serial octets
// (canonicalSerial); offs holds the entry offsets sorted by (length,
// octets), so a lookup is a binary search. Memory per entry is the serial
// length plus 6 bytes, and the whole index is two allocations.
type index struct {
	arena []byte
	offs  []uint32
}

func (ix *index) len() int  { return len(ix.offs) }
func (ix *index) size() int { return cap(ix.arena) + 4*cap(ix.offs) }

// entry returns the serial octets and reason of the entry at off.
func (ix *index) entry(off uint32) ([]byte, Reason) {
	n := uint32(ix.arena[off])
	return ix.arena[off+2 : off+2+n], Reason(ix.arena[off+1])
}

// compareKeys orders serials by length first, then octets. Canonical
// serials of different length are different, so any total order works.
func compareKeys(a, b []byte) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return bytes.Compare(a, b)
}

// sortAndDedup sorts offs by key and drops repeated serial numbers, keeping
// the lowest reason of each. Neither allocates; the arena keeps the bytes of
// dropped duplicates, which Size counts.
func (ix *index) sortAndDedup() {
	slices.SortFunc(ix.offs, func(a, b uint32) int {
		ka, ra := ix.entry(a)
		kb, rb := ix.entry(b)
		if c := compareKeys(ka, kb); c != 0 {
			return c
		}
		return int(ra) - int(rb)
	})
	ix.offs = slices.CompactFunc(ix.offs, func(a, b uint32) bool {
		ka, _ := ix.entry(a)
		kb, _ := ix.entry(b)
		return bytes.Equal(ka, kb)
	})
}

// search looks key up by binary search and also returns the number of
// entries compared, which tests use to prove that lookups never scan.
func (ix *index) search(key []byte) (reason Reason, found bool, probes int) {
	lo, hi := 0, len(ix.offs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		k, r := ix.entry(ix.offs[mid])
		probes++
		switch c := compareKeys(k, key); {
		case c == 0:
			return r, true, probes
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, false, probes
}

// lookupBig looks up a serial number given as a big.Int without allocating.
func (ix *index) lookupBig(serial *big.Int) (Reason, bool) {
	if serial == nil {
		return 0, false
	}
	var buf [maxSerialLen + 1]byte
	n := serial.BitLen()/8 + 1 // room for the sign bit
	if n > len(buf) {
		return 0, false // longer than any indexed serial
	}
	b := serial.FillBytes(buf[:n]) // magnitude, big-endian
	if serial.Sign() < 0 {
		// Two's complement of the magnitude.
		for i := range b {
			b[i] = ^b[i]
		}
		for i := len(b) - 1; i >= 0; i-- {
			b[i]++
			if b[i] != 0 {
				break
			}
		}
	}
	r, ok, _ := ix.search(canonicalSerial(b))
	return r, ok
}
