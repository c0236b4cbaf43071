#!/usr/bin/env bash
# Builds the Helm CLI from Go modules (at the manifest's version; helm/go.mod pins it) into $CACHE/helm-<ver>/bin/helm. The e2e
# takeover test installs a revisionless Istio with it, as `helm install` does on the clusters this
# project adopts. Idempotent: skipped when the binary reports the pinned version.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null  # versions.sh is checked on its own
source "$HERE/versions.sh"
CACHE="${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}"
export CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"

log() { printf '[build-helm] %s\n' "$*" >&2; }

ver="v$(version_of helm)"
bin="$CACHE/helm-$ver/bin/helm"
if [[ -x "$bin" ]] && "$bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$ver"; then
  log "helm $ver: already in $bin"
  exit 0
fi
log "helm $ver: building"
mkdir -p "$(dirname "$bin")"
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$HERE/helm" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$ver" \
  -o "$tmp" helm.sh/helm/v3/cmd/helm)
mv "$tmp" "$bin"
log "helm $ver: $("$bin" version --template '{{.Version}}')"
