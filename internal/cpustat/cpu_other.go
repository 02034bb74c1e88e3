//go:build !unix

package cpustat

import "time"

// Process is not measured outside Unix (no getrusage): 0.
func Process() time.Duration { return 0 }

// Children is not measured outside Unix either: 0.
func Children() time.Duration { return 0 }
