//go:build !unix

package pgproc

import "os/exec"

// apply does nothing: outside Unix, os.Geteuid is never 0 (it returns -1),
// so no credential is ever set.
func (c *credential) apply(*exec.Cmd) {}
