//go:build !linux

package pgconn

import "syscall"

// control sets nothing: TCP_USER_TIMEOUT is Linux's; keep-alive probes
// alone notice a vanished peer elsewhere.
func control(string, string, syscall.RawConn) error { return nil }
