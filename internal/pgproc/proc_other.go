//go:build !unix

package pgproc

import "os/exec"

// detach does nothing outside Unix.
func detach(*exec.Cmd) {}

// alive cannot tell outside Unix, so no server is ever reaped there.
func alive(int) bool { return true }
