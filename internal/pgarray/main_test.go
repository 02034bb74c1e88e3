package pgarray_test

import (
	"testing"

	"github.com/graftdev/graft/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
