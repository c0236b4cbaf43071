#!/usr/bin/env bash
# Adds the wrapper module of a new Istio minor for build-charts.sh: charts/istio-<MAJOR.MINOR>/ with a go.mod
# pinning istio.io/istio at REF's snapshot, its go.sum, and extract.go and tools.go linked in (tools.go keeps
# the dependencies of istiod and istioctl, which build-istio.sh builds from the newest minor's module).
# Where the Go module proxy refuses one of the snapshot's pseudo-versions, `go mod tidy` stops naming it:
# require a version the proxy serves in the new go.mod (as charts/istio-1.30 would need) and tidy again.
# Usage: toolchain/charts/add-minor.sh MAJOR.MINOR REF   (REF: a branch such as release-1.32, or a commit)
# Then one line in toolchain/versions per version name of that minor, e.g.
#   istio  1.32.0  charts/istio-1.32/go.mod:istio.io/istio
# The Go module proxy serves Istio's branches as pseudo-versions only (Istio tags have no `v`), so a
# module per minor is what lets several snapshots be pinned side by side.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
minor="${1:?usage: add-minor.sh MAJOR.MINOR REF}"
ref="${2:?usage: add-minor.sh MAJOR.MINOR REF}"
[[ "$minor" =~ ^[0-9]+\.[0-9]+$ ]] || { echo "MAJOR.MINOR expected, got '$minor'" >&2; exit 2; }
dir="$here/istio-$minor"
[[ ! -e "$dir" ]] || { echo "$dir exists already" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
# Built beside its final place (extract.go is linked relatively) and moved in only when complete.
tmp="$(mktemp -d "$here/.istio-$minor.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
ln -s ../extract.go extract.go
ln -s ../tools.go tools.go
go mod init "istio-mesh/e2e/charts/istio-$minor" 2>/dev/null
go get "istio.io/istio@$ref"
go mod tidy
pin="$(go list -m -f '{{.Version}}' istio.io/istio)"
{
  printf '// Wrapper module: pins istio.io/istio at the %s snapshot (%s), the charts of Istio %s;\n' "$ref" "$pin" "$minor"
  printf '// extract.go writes them out. Made by add-minor.sh.\n'
  cat go.mod
} >go.mod.new
mv go.mod.new go.mod
cd "$here"
chmod 755 "$tmp"
mv "$tmp" "$dir"
trap - EXIT
echo "added $dir (istio.io/istio@$pin); now add its version line(s) to toolchain/versions" >&2
