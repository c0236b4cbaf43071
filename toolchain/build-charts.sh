#!/usr/bin/env bash
# Writes Istio's Helm charts (base, istiod, gateway, cni) for every Istio version the e2e tests
# use into $CACHE/istio-<ver>/charts/{base,istiod,gateway,cni}, offline, from the Go module
# istio.io/istio: a tiny Go program (charts/extract.go) imports package
# istio.io/istio/manifests (the embed.FS istioctl installs from) at the snapshot pinned by
# charts/istio-<minor>/go.mod and writes the charts out, byte for byte.
# The versions are the `istio` lines of the manifest `versions`, each naming the wrapper module of
# its minor: the Go module proxy only has branch snapshots (pseudo-versions), not release tags
# (each go.mod's comment says which branch).
# Upstream's Chart.yaml says version 1.0.0 (release-builder stamps releases); the mirror stamps each
# chart's `version` and `appVersion` with the version name, as a real release is, so the labels the
# charts render (helm.sh/chart, app.kubernetes.io/version) change between versions as they do in the field.
# One snapshot may serve several version names (1.30.0 and 1.30.1: an in-place patch upgrade).
# CACHE defaults to ~/.cache/istio-mesh-e2e (override with ISTIO_MESH_E2E_CACHE).
# Idempotent: a version whose charts are complete is skipped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null  # versions.sh is checked on its own
source "$HERE/versions.sh"
CACHE="${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}"
# "<version> <wrapper module dir>" lines, checked against the go.mod files
VERSIONS="$(istio_versions)"
STAMP_FORMAT=3  # 3: adds cni (istio-cni); bump when what the mirror writes changes: older mirrors are rebuilt

export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-charts] %s\n' "$*" >&2; }

TMPS=()
cleanup() { if ((${#TMPS[@]})); then rm -rf "${TMPS[@]}"; fi; }
trap cleanup EXIT

mkdir -p "$CACHE"
while read -r ver moddir; do
  dest="$CACHE/istio-$ver/charts"
  if [[ "$(cat "$dest/.complete" 2>/dev/null)" == "$STAMP_FORMAT" ]]; then
    log "istio $ver: charts already in $dest"
    continue
  fi
  moddir="$HERE/$moddir"
  pin="$(cd "$moddir" && go list -m -f '{{.Version}}' istio.io/istio)"
  log "istio $ver: extracting charts from istio.io/istio@$pin"
  mkdir -p "$CACHE/istio-$ver"
  tmp="$(mktemp -d "$CACHE/istio-$ver/.charts.XXXXXX")"
  TMPS+=("$tmp")
  (cd "$moddir" && go build -trimpath -ldflags "-s -w" -o "$tmp/extract" .)
  "$tmp/extract" "$tmp/charts"
  for chart in base istiod gateway cni; do
    [[ -f "$tmp/charts/$chart/Chart.yaml" ]] || { echo "chart $chart missing after extract" >&2; exit 1; }
    sed -i -E "s/^version: .*/version: $ver/; s/^appVersion: .*/appVersion: $ver/" "$tmp/charts/$chart/Chart.yaml"
    grep -qx "version: $ver" "$tmp/charts/$chart/Chart.yaml" || { echo "chart $chart: version not stamped" >&2; exit 1; }
  done
  echo "istio.io/istio@$pin" > "$tmp/charts/SOURCE"
  echo "$STAMP_FORMAT" > "$tmp/charts/.complete"
  rm -rf "$dest"
  mv "$tmp/charts" "$dest"
  rm -rf "$tmp"
  log "istio $ver: charts in $dest"
done <<<"$VERSIONS"
log "done: $CACHE"
