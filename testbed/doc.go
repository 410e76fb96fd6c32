// Package testbed is the multi-host test bed: NAT routers (natrouter), Docker
// compose topologies (compose/) and the end-to-end harness, which builds a
// FROM scratch image from the project's static binaries and runs every
// scenario on real kernels and real NATs:
//
//	go test -tags e2e -v -timeout 30m ./testbed/...
//
// The harness files carry the e2e build tag, so plain `go test ./...` does
// not start containers. It skips when no Docker engine answers.
package testbed
