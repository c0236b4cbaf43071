// Wrapper module: pins istio.io/istio at the master branch snapshot called Istio 1.31.0 in these
// tests (its VERSION file says 1.31); extract.go writes that snapshot's charts out.
module istio-mesh/e2e/charts/istio-1.31

go 1.26.0

require istio.io/istio v0.0.0-20260827124520-eed52ebb66ad
