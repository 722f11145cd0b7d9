//go:build unix

package backend

import (
	"os/exec"
	"syscall"
)

// killGroup starts the script in its own process group and makes a
// cancelled or timed-out run kill the whole group, so that children the
// script started do not outlive it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
