//go:build !unix

package backend

import "os/exec"

// killGroup leaves the default: a cancelled run kills the script's process.
func killGroup(cmd *exec.Cmd) {}
