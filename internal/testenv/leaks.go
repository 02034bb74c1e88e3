package testenv

import (
	"testing"

	"go.uber.org/goleak"
)

// Main runs a package's tests and fails them when a goroutine outlives them
// (go.uber.org/goleak). Call it from the package's TestMain. It ignores only
// the known long-lived goroutines of libraries, each for its reason.
func Main(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The pool grafttest.DB shares across a test binary stays open
		// until the binary exits, by design; this is database/sql's
		// goroutine that opens its connections.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
