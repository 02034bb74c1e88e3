package main

import (
	"testing"

	"github.com/graftdev/graft/internal/testenv"
)

// TestMain fails the example's tests if a goroutine outlives them.
func TestMain(m *testing.M) { testenv.Main(m) }
