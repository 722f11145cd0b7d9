//go:build race

package bufpool

// raceEnabled: the race detector is on; sync.Pool then drops items at random by design, so
// allocation counts say nothing.
const raceEnabled = true
