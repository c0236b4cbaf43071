#!/usr/bin/env bash
# Builds Istio's own binaries, pilot-discovery (istiod) and istioctl, from the istio.io/istio snapshot of
# the newest Istio minor in the manifest `versions` (the wrapper module charts/istio-<minor>/, the very
# snapshot that minor's charts come from), in one `go build` so both share compiled packages, stamped
# with the newest version name on that minor (`istioctl version` says it, not `unknown`), into
# $CACHE/istio-<version>/bin/. The harness runs one istiod process per installed revision with it; the
# newest binary serves older revisions too (their injection template and values come from their own
# chart's ConfigMaps): a build per minor would add another istio build to a fresh machine's CI run
# (this one took 27 min wall, about 13 min CPU, on 2 busy cores).
# Idempotent: skipped when both binaries report the version.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null  # versions.sh is checked on its own
source "$HERE/versions.sh"
CACHE="${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}"
export CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"

log() { printf '[build-istio] %s\n' "$*" >&2; }

# The newest version name and its wrapper module ("<version> <module dir>", sorted by version).
read -r ver moddir < <(istio_versions | sort -V | tail -n1)
bin="$CACHE/istio-$ver/bin"
# Each says its version on the last line of `version --short` ("1.31.0", "client version: 1.31.0").
stamped() { [[ -x "$bin/$1" ]] && "$bin/$1" version --short "${@:2}" 2>/dev/null | tail -n1 | grep -qE "(^| )$ver\$"; }
if stamped pilot-discovery && stamped istioctl --remote=false; then
  log "istio $ver: pilot-discovery and istioctl already in $bin"
  exit 0
fi
pin="$(cd "$HERE/$moddir" && go list -m -f '{{.Version}}' istio.io/istio)"
log "istio $ver: building pilot-discovery and istioctl from istio.io/istio@$pin"
pkg=istio.io/istio/pkg/version
ldflags="-s -w -X $pkg.buildVersion=$ver -X $pkg.buildGitRevision=$pin -X $pkg.buildStatus=Clean"
ldflags+=" -X $pkg.buildTag=$ver -X $pkg.buildHub=docker.io/istio -X $pkg.buildOS=$(go env GOOS) -X $pkg.buildArch=$(go env GOARCH)"
mkdir -p "$bin"
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$HERE/$moddir" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  istio.io/istio/pilot/cmd/pilot-discovery istio.io/istio/istioctl/cmd/istioctl)
mv "$tmp/pilot-discovery" "$tmp/istioctl" "$bin/"
log "istio $ver: $("$bin/istioctl" version --remote=false --short 2>/dev/null || true) in $bin"
