package graftsync_test

import (
	"testing"

	"github.com/graftdev/graft/internal/testenv"
)

// TestMain fails the package's tests if a goroutine outlives them. The
// legacy database's pool, shared by the test binary, is closed first.
func TestMain(m *testing.M) {
	testenv.Main(m, func() error {
		if legacyPool == nil {
			return nil
		}
		return legacyPool.Close()
	})
}
