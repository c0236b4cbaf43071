// Wrapper module: pins istio.io/istio at the release-1.30 branch snapshot called Istio 1.30.0 in these
// tests (its VERSION file says 1.30); extract.go writes that snapshot's charts out.
module istio-mesh/e2e/charts/istio-1.30

go 1.26.0

require istio.io/istio v0.0.0-20260826214018-9739e10eb9d7
