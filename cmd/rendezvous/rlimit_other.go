//go:build !unix

package main

// raiseFDLimit reports 0 (unknown) where there is no RLIMIT_NOFILE: the
// resource manager then sizes descriptors from -conns-max alone.
func raiseFDLimit() (int, error) { return 0, nil }
