package cpustat_test

import (
	"testing"

	"github.com/graftdev/graft/internal/testenv"
)

// TestMain fails the package's tests if a goroutine outlives them.
func TestMain(m *testing.M) { testenv.Main(m) }
