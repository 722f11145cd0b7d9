package revocation

// index is a sorted, packed set of serial numbers.
type index struct {
	arena []byte   // entries: [len][reason][serial octets…]
	offs  []uint32 // offsets of entries in arena, sorted by (len, octets)
}

func (ix *index) len() int  { return len(ix.offs) }
func (ix *index) size() int { return cap(ix.arena) + 4*cap(ix.offs) }
