//go:build !plan9

package engine

import (
	"errors"
	"syscall"
)

// isConnErrno reports a connection reset, refused or broken at the socket.
func isConnErrno(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}
