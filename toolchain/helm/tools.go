//go:build tools

// Package tools pins the Helm CLI (helm.sh/helm/v3/cmd/helm) so build-helm.sh can build it offline:
// the e2e tests install a revisionless Istio with Helm itself, as the clusters this project takes over were.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
