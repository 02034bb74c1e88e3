//go:build !unix

package main

import "time"

// processCPU is not measured outside Unix (no getrusage): benchmarks
// report 0 there.
func processCPU() time.Duration { return 0 }

// childrenCPU is not measured outside Unix either.
func childrenCPU() time.Duration { return 0 }
