//go:build !race

package mesh

// raceEnabled tells tests whether the race detector is on: it makes
// sync.Pool drop items at random, so allocation counts differ.
const raceEnabled = false
