//go:build race

package interceptors

// raceEnabled: sync.Pool drops some of what it is given under the race
// detector, so allocation counts are not pinned there.
const raceEnabled = true
