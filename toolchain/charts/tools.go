//go:build tools

// The istiod (pilot-discovery) and istioctl commands of this snapshot, built by toolchain/build-istio.sh
// in one `go build` so they share compiled packages. Listed here so `go mod tidy` keeps their
// dependencies in go.sum; the build tag keeps them out of extract's build.
package main

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
