#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by the e2e tests, from Go modules only
# (no prebuilt binaries can be downloaded on these machines):
#   $CACHE/kubernetes-<ver>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $CACHE/etcd-<ver>/bin/etcd
#   $CACHE/kwok-<ver>/bin/kwok and $CACHE/kwok-<ver>/stages/*.yaml (KWOK refuses to start without stages)
# CACHE defaults to ~/.cache/istio-mesh-e2e (override with ISTIO_MESH_E2E_CACHE).
# Idempotent: a component whose binaries exist is skipped. Binaries are built to a temp
# directory and moved into place only when the whole build succeeded.
# The versions are the manifest's (`versions`); the wrapper modules' go.mod files next to this script
# (kube/, etcd/, kwok/) must pin the same ones, which is checked here. To move a version, change it in
# the manifest and `go get` it in the module (kube/ also needs its staging replaces moved to the
# matching v0.x), then `go mod tidy`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}"
# shellcheck source=/dev/null  # versions.sh is checked on its own
source "$HERE/versions.sh"
KUBE_VERSION="$(version_of kubernetes)"
ETCD_VERSION="$(version_of etcd)"
KWOK_VERSION="$(version_of kwok)"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Never let a dependency trigger a toolchain download.
export GOTOOLCHAIN=local

log() { printf '[build-kube] %s\n' "$*" >&2; }

# Temp dirs to remove however the script ends (a failed build leaves nothing half-made).
TMPS=()
cleanup() { if ((${#TMPS[@]})); then rm -rf "${TMPS[@]}"; fi; }
trap cleanup EXIT

# build_into DEST_BIN_DIR MODULE_DIR LDFLAGS PKG... : one `go build` for all PKGs (shared
# packages compile once), output into a temp dir beside DEST, then moved into place.
build_into() {
  local dest="$1" moddir="$2" ldflags="$3"
  shift 3
  local parent tmp
  parent="$(dirname "$dest")"
  mkdir -p "$parent"
  tmp="$(mktemp -d "$parent/.build.XXXXXX")"
  TMPS+=("$tmp")
  log "go build in $moddir: $*"
  (cd "$moddir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "$@")
  mkdir -p "$dest"
  local f
  for f in "$tmp"/*; do
    mv -f "$f" "$dest/$(basename "$f")"
  done
  rm -rf "$tmp"
}

build_kube() {
  local dest="$CACHE/kubernetes-$KUBE_VERSION/bin"
  if [[ -x "$dest/kube-apiserver" && -x "$dest/kube-controller-manager" && -x "$dest/kube-scheduler" && -x "$dest/kubectl" ]]; then
    log "kubernetes $KUBE_VERSION: already built in $dest"
    return
  fi
  local minor="${KUBE_VERSION#*.}"
  minor="${minor%%.*}"
  local major="${KUBE_VERSION%%.*}"
  local date
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="" pkg
  # Without these the binaries report v0.0.0 and clients (and the apiserver's own
  # compatibility-version logic) misbehave.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  log "kubernetes $KUBE_VERSION: building (about 15-25 min cold on 2 cores)"
  build_into "$dest" "$HERE/kube" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
  local dest="$CACHE/etcd-$ETCD_VERSION/bin"
  if [[ -x "$dest/etcd" ]]; then
    log "etcd $ETCD_VERSION: already built in $dest"
    return
  fi
  log "etcd $ETCD_VERSION: building"
  local tmpdest
  tmpdest="$(mktemp -d "$CACHE/.etcd.XXXXXX")"
  TMPS+=("$tmpdest")
  build_into "$tmpdest" "$HERE/etcd" "-X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" go.etcd.io/etcd/server/v3
  # The main package is the module root (import path .../server/v3): whatever go names the
  # single binary, it becomes `etcd`.
  local built=("$tmpdest"/*)
  [[ ${#built[@]} -eq 1 ]] || { echo "expected one etcd binary, got: ${built[*]}" >&2; exit 1; }
  mkdir -p "$dest"
  mv -f "${built[0]}" "$dest/etcd"
  rm -rf "$tmpdest"
}

build_kwok() {
  local root="$CACHE/kwok-$KWOK_VERSION"
  local dest="$root/bin"
  if [[ ! -x "$dest/kwok" ]]; then
    log "kwok $KWOK_VERSION: building"
    # consts.Version already says the release; KubeVersion only matters to kwokctl.
    build_into "$dest" "$HERE/kwok" "" sigs.k8s.io/kwok/cmd/kwok
  else
    log "kwok $KWOK_VERSION: already built in $dest"
  fi
  if [[ ! -f "$root/stages/.complete" ]]; then
    # The stage definitions kwokctl installs by default (node initialize/heartbeat, pod
    # ready/complete/delete), shipped in the module zip.
    local src
    src="$(cd "$HERE/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
    [[ -n "$src" && -d "$src/kustomize/stage" ]] || { (cd "$HERE/kwok" && go mod download sigs.k8s.io/kwok); src="$(cd "$HERE/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"; }
    local tmp
    mkdir -p "$root"
    tmp="$(mktemp -d "$root/.stages.XXXXXX")"
    TMPS+=("$tmp")
    cp "$src/kustomize/stage/node/fast/node-initialize.yaml" "$tmp/"
    cp "$src/kustomize/stage/node/heartbeat/node-heartbeat.yaml" "$tmp/"
    cp "$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" "$tmp/"
    cp "$src/kustomize/stage/pod/fast/pod-ready.yaml" "$src/kustomize/stage/pod/fast/pod-complete.yaml" \
      "$src/kustomize/stage/pod/fast/pod-delete.yaml" "$tmp/"
    chmod u+w "$tmp"/*.yaml
    touch "$tmp/.complete"
    rm -rf "$root/stages"
    mv "$tmp" "$root/stages"
    log "kwok stages copied to $root/stages"
  fi
}

mkdir -p "$CACHE"
for what in "${@:-kube etcd kwok}"; do
  for w in $what; do
    case "$w" in
      kube) build_kube ;;
      etcd) build_etcd ;;
      kwok) build_kwok ;;
      *) echo "unknown component $w (expected kube, etcd, kwok)" >&2; exit 2 ;;
    esac
  done
done
log "done: $CACHE"
