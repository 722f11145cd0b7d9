package revocation

import (
	"math/big"
	"math/bits"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"smartproxy/internal/pki"
)

// TestLookupDoesNotScan proves that a lookup compares at most
// floor(log2 n)+1 entries (binary search) for a 100,000-entry CRL, for every
// listed serial and for as many absent ones.
func TestLookupDoesNotScan(t *testing.T) {
	const n = 100_000
	ca := newCA(t, "Big CA", pki.ECDSAP256)
	crl, err := Parse(largeCRL(t, ca, n, 1), ca.Cert, time.Now())
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if got := crl.Len(); got != n {
		t.Fatalf("Len() = %d, want %d", got, n)
	}
	limit := bits.Len(uint(n)) // floor(log2 n) + 1
	check := func(name string, key []byte, wantFound bool) {
		_, found, probes := crl.idx.search(key)
		if found != wantFound {
			t.Fatalf("%s: search(%x) found = %t, want %t", name, key, found, wantFound)
		}
		if probes > limit {
			t.Fatalf("%s: search(%x) probes = %d, want <= %d", name, key, probes, limit)
		}
	}
	g := newSerialGen(1)
	var buf [16]byte
	for range n {
		check("listed", g.next(&buf), true)
	}
	g = newSerialGen(2) // different serials
	for range n {
		check("absent", g.next(&buf), false)
	}
	check("short", []byte{1}, false)
	check("long", make([]byte, 40), false)
}

// TestLookupAllocs checks that lookups do not allocate.
func TestLookupAllocs(t *testing.T) {
	ca := newCA(t, "Alloc CA", pki.ECDSAP256)
	crl, err := Parse(largeCRL(t, ca, 1000, 3), ca.Cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var buf [16]byte
	key := newSerialGen(3).next(&buf)
	serial := new(big.Int).SetBytes(key)
	neg := new(big.Int).Neg(serial)
	if !crl.IsRevoked(serial) {
		t.Fatalf("IsRevoked(%v) = false, want true", serial)
	}
	if a := testing.AllocsPerRun(100, func() {
		crl.IsRevoked(serial)
		crl.IsRevoked(neg)
		crl.IsRevokedBytes(key)
	}); a != 0 {
		t.Errorf("allocations per IsRevoked = %v, want 0", a)
	}
}

// TestMemoryParseLarge checks the memory goal: while Parse runs, the heap
// holds at most 3× the CRL's DER size, counting the DER itself. With the
// collector off, every byte Parse allocates stays on the heap, so the
// TotalAlloc delta bounds Parse's share of the peak from above. It uses
// 1,000,000 entries, or 100,000 with -short.
func TestMemoryParseLarge(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	ca := newCA(t, "Huge CA", pki.ECDSAP256)
	der := largeCRL(t, ca, n, 7)
	runtime.GC()

	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	crl, err := Parse(der, ca.Cert, time.Now())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if crl.Len() != n {
		t.Fatalf("Len() = %d, want %d", crl.Len(), n)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	ratio := float64(uint64(len(der))+allocated) / float64(len(der))
	t.Logf("entries=%d der=%d B allocated during Parse=%d B (%d mallocs) index=%d B peak/DER <= %.2f",
		n, len(der), allocated, after.Mallocs-before.Mallocs, crl.Size(), ratio)
	if ratio > 3 {
		t.Errorf("peak heap / DER size = %.2f, want <= 3", ratio)
	}
	// Parse allocates a fixed number of times, not per entry.
	if m := after.Mallocs - before.Mallocs; m > 200 {
		t.Errorf("Parse made %d allocations for %d entries, want a constant number (<= 200)", m, n)
	}
	runtime.KeepAlive(der)
}
