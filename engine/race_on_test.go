//go:build race

package engine_test

// raceEnabled: sync.Pool drops some of what it is given under the race
// detector, so allocation counts are not pinned there.
const raceEnabled = true
