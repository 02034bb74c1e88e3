package interceptors

// RaceEnabled tells the package's external tests that the race detector is
// on: frames are larger and sync.Pool drops items, so sizes are not pinned.
const RaceEnabled = raceEnabled

// IsObserver tells whether ic is All's Tracing, Metrics and Logging in one.
func IsObserver(ic any) bool {
	_, ok := ic.(*observer)
	return ok
}
