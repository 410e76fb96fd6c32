package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel stop cmd if the benchmark dies without
// cleaning up (SIGKILL, crash), so no daemon is left behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// fileLimit is the soft limit on open files (Go raises it to the hard
// limit at start-up); 0 if unknown.
func fileLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}
