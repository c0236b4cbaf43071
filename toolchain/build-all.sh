#!/usr/bin/env bash
# Builds every tool the end-to-end tests need (Pulumi CLI + Python host + Kubernetes provider
# plugin, a Kubernetes control plane with etcd and KWOK, Helm, the Istio charts, istiod and istioctl), from
# Go modules, at the versions of the manifest `versions` (checked first against the go.mod files that repeat
# them), into ${ISTIO_MESH_E2E_CACHE:-~/.cache/istio-mesh-e2e}. Each part skips what is already built,
# so only the first run on a machine pays. istiod and istioctl, the longest single build, run beside the
# others: compiling is not all the time a build takes (downloads, links), so the two overlap usefully even
# on 2 cores.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null  # versions.sh is checked on its own
source "$HERE/versions.sh"
check_versions
printf '[build-all] build-istio.sh (beside the others)\n' >&2
bash "$HERE/build-istio.sh" &
istio=$!
trap 'kill "$istio" 2>/dev/null || true' EXIT  # a failed part stops the istio build too
for part in build-charts.sh build-helm.sh build-pulumi.sh build-kube.sh; do
  printf '[build-all] %s\n' "$part" >&2
  bash "$HERE/$part"
done
wait "$istio" || { printf '[build-all] build-istio.sh failed\n' >&2; exit 1; }
trap - EXIT
printf '[build-all] all e2e tools are in %s\n' "${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}" >&2
