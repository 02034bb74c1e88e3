//go:build unix

package cpustat

import (
	"syscall"
	"time"
)

// Process is the CPU time (user and system) this process has used.
func Process() time.Duration { return rusage(syscall.RUSAGE_SELF) }

// Children is the CPU time of this process's children that have exited
// and been waited for.
func Children() time.Duration { return rusage(syscall.RUSAGE_CHILDREN) }

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
