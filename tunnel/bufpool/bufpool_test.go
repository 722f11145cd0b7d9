package bufpool

import "testing"

func TestPool(t *testing.T) {
	tests := []struct {
		n, class, cap int
	}{
		{1, 0, 512},
		{512, 0, 512},
		{513, 1, 1024},
		{4096, 3, 4096},
		{99999, 8, 131072},
		{1 << 20, 11, 1 << 20},
		{1<<20 + 1, -1, 1<<20 + 1},
	}
	var bp Pool
	for _, tt := range tests {
		if got := classOf(tt.n); got != tt.class {
			t.Errorf("classOf(%d) = %d, want %d", tt.n, got, tt.class)
		}
		p := bp.Get(tt.n)
		if len(*p) != tt.n || cap(*p) != tt.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tt.n, len(*p), cap(*p), tt.n, tt.cap)
		}
		bp.Put(p)
	}
	if MaxPooled != 1<<20 {
		t.Errorf("MaxPooled = %d, want 1 MiB", MaxPooled)
	}
}

// TestPoolReuse: a buffer put back is handed out again for the same class, without allocating.
func TestPoolReuse(t *testing.T) {
	var bp Pool
	allocs := testing.AllocsPerRun(100, func() {
		b := bp.Get(65535)
		(*b)[0] = 1
		bp.Put(b)
	})
	// sync.Pool may drop an item when the goroutine migrates; on average nothing is allocated.
	if allocs > 0.5 && !raceEnabled { // with -race, sync.Pool drops puts at random
		t.Errorf("Get/Put of a 64 KiB buffer allocates %.1f times per run, want 0", allocs)
	}
}

// TestPoolSlices: GetSlice and PutSlice reuse buffers without allocating, and
// a slice of a foreign capacity is dropped, not pooled.
func TestPoolSlices(t *testing.T) {
	var bp Pool
	allocs := testing.AllocsPerRun(100, func() {
		b := bp.GetSlice(99999)
		if len(b) != 99999 || cap(b) != 131072 {
			t.Fatalf("GetSlice(99999): len %d cap %d, want 99999, 131072", len(b), cap(b))
		}
		b[0] = 1
		bp.PutSlice(b)
	})
	if allocs > 0.5 && !raceEnabled { // with -race, sync.Pool drops puts at random
		t.Errorf("GetSlice/PutSlice allocates %.1f times per run, want 0", allocs)
	}
	bp.PutSlice(make([]byte, 1000)) // capacity 1000 is no class: dropped
	if b := bp.GetSlice(1000); cap(b) != 1024 {
		t.Errorf("GetSlice(1000) after PutSlice of a 1000-byte slice: cap %d, want 1024 (a pooled class)", cap(b))
	}
}
