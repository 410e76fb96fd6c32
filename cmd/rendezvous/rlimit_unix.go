//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// raiseFDLimit raises the soft limit on open files to the hard limit (each
// TCP client holds one descriptor) and returns the resulting soft limit.
func raiseFDLimit() (int, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("get open file limit: %w", err)
	}
	if l.Cur < l.Max {
		want := l
		want.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			l = want
		} else if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("get open file limit: %w", err)
		}
	}
	if uint64(l.Cur) > 1<<30 { // RLIM_INFINITY
		return 1 << 30, nil
	}
	return int(l.Cur), nil
}
