//go:build unix

package pgproc

import (
	"os/exec"
	"syscall"
)

// apply makes cmd run as c.
func (c *credential) apply(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(c.uid), Gid: uint32(c.gid)}}
}
