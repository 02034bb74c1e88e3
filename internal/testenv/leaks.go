package testenv

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/graftdev/graft/grafttest"
)

// Main runs a package's tests and fails them when a goroutine outlives them
// (go.uber.org/goleak). Call it from the package's TestMain. The pools the
// tests shared (grafttest.DB) are closed first, and so is what the package
// keeps for its test binary on purpose (closers, called in order), so that
// what remains is what a test or the code under test left running.
func Main(m *testing.M, closers ...func() error) {
	code := m.Run()
	for _, c := range append(closers, grafttest.CloseDB) {
		if err := c(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: close what the tests shared: %v\n", err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
