#!/usr/bin/env bash
# Build a real Pulumi engine for the offline e2e tests from Go modules:
#   - the pulumi CLI (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi, at the manifest's `pulumi` version)
#   - a Python language host (pulumi/langhost, see its main.go for why it is not the upstream one)
#     plus the SDK's pulumi-language-python-exec and pulumi-resource-pulumi-python scripts
#   - the Kubernetes provider plugin pulumi-resource-kubernetes (the manifest's `pulumi-kubernetes`)
# Versions come from the manifest `versions` (checked against pulumi/*/go.mod). They are what the Go
# module proxy here serves, not necessarily the PyPI SDKs' versions: the comments in pulumi/*/go.mod
# say which and why. Each binary reports its real version.
#
# Output (the last lines on stdout, everything else goes to stderr):
#   PULUMI_BIN_DIR=<cache>/pulumi-<cli version>/bin
#   PULUMI_KUBERNETES_BIN_DIR=<cache>/pulumi-kubernetes-<provider version>/bin
# Put both first on PATH. Cache: ${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}.
#
# Idempotent: a binary is rebuilt only when it is missing, does not report the expected version, or
# its wrapper module (go.mod, go.sum, *.go) or build flags changed. Binaries are built under a
# temporary name and moved into place, so an interrupted build never leaves a binary that looks done.
# Uses the ordinary Go module and build caches, so rebuilds are fast.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null  # versions.sh is checked on its own
source "$here/versions.sh"
modules="$here/pulumi"
cache="${ISTIO_MESH_E2E_CACHE:-$HOME/.cache/istio-mesh-e2e}"

# The Python SDK release whose exec/dynamic-provider scripts are installed beside the language host:
# the pulumi version requirements.txt pins (the manifest checks they agree).
python_sdk_version="$(version_of pulumi-python-sdk)"
cli_version="v$(version_of pulumi)"
k8s_version="$(version_of pulumi-kubernetes)"

log() { printf '[build-pulumi] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

go_bin="${GO:-}"
if [[ -z "$go_bin" ]]; then
  go_bin="$(command -v go || true)"
  [[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
fi
[[ -x "$go_bin" ]] || die "no Go toolchain found (set GO=/path/to/go)"
command -v python3 >/dev/null || die "python3 is needed to stamp the provider schema"

export CGO_ENABLED=0
# Builds must use the committed go.sum: never edit go.mod/go.sum behind the caller's back.
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

# Temporary files and directories, removed however the script ends.
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

# mod_dir MODULE_DIR MODULE_PATH: where that dependency's source is in the module cache (downloads it).
mod_dir() {
  (cd "$1" && "$go_bin" mod download "$2" >&2 && "$go_bin" list -m -f '{{.Dir}}' "$2")
}

# fingerprint MODULE_DIR EXTRA...: identifies what a binary was built from.
fingerprint() {
  local dir="$1"; shift
  {
    printf '%s\n' "$@"
    (cd "$dir" && cat go.mod go.sum ./*.go)
  } | sha256sum | cut -d' ' -f1
}

# up_to_date BINARY STAMP FINGERPRINT VERSION_CMD EXPECTED: the binary exists, was built from the
# same inputs and reports the expected version.
up_to_date() {
  local bin="$1" stamp="$2" fp="$3" version_cmd="$4" expected="$5" got
  [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$fp" ]] || return 1
  got="$($version_cmd "$bin" 2>/dev/null || true)"
  if [[ "$got" != "$expected" ]]; then
    log "$(basename "$bin") reports '${got}', expected '${expected}': rebuilding"
    return 1
  fi
}

# go_build MODULE_DIR OUTPUT LDFLAGS PACKAGE: build to a temporary name beside OUTPUT, then move it in.
go_build() {
  local dir="$1" out="$2" ldflags="$3" pkg="$4" tmp start
  tmp="$(dirname "$out")/.$(basename "$out").tmp.$$"
  cleanup+=("$tmp")
  start=$SECONDS
  log "go build $pkg -> $out (cold builds take minutes)"
  (cd "$dir" && "$go_bin" build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp" "$pkg")
  mv -f "$tmp" "$out"
  log "built $(basename "$out") in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

# How each binary reports its stamped version.
pulumi_version() { "$1" version; }
langhost_version() { "$1" -version; }
plugin_version() { "$1" -version; }

# --- Pulumi CLI and Python language host --------------------------------------------------------
cli_mod="$modules/cli"
pulumi_dir="$cache/pulumi-${cli_version#v}"
mkdir -p "$pulumi_dir/bin" "$pulumi_dir/stamps"

cli_ldflags="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$cli_version"
cli_fp="$(fingerprint "$cli_mod" "$cli_ldflags")"
if up_to_date "$pulumi_dir/bin/pulumi" "$pulumi_dir/stamps/pulumi" "$cli_fp" pulumi_version "$cli_version"; then
  log "pulumi $cli_version already built"
else
  log "building the pulumi CLI $cli_version"
  go_build "$cli_mod" "$pulumi_dir/bin/pulumi" "$cli_ldflags" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  echo "$cli_fp" >"$pulumi_dir/stamps/pulumi"
fi

langhost_mod="$modules/langhost"
langhost_version="${cli_version#v}+istio-mesh"
langhost_ldflags="-s -w -X main.version=$langhost_version"
langhost_fp="$(fingerprint "$langhost_mod" "$langhost_ldflags")"
if up_to_date "$pulumi_dir/bin/pulumi-language-python" "$pulumi_dir/stamps/pulumi-language-python" \
  "$langhost_fp" langhost_version "$langhost_version"; then
  log "pulumi-language-python $langhost_version already built"
else
  log "building the Python language host $langhost_version"
  go_build "$langhost_mod" "$pulumi_dir/bin/pulumi-language-python" "$langhost_ldflags" .
  echo "$langhost_fp" >"$pulumi_dir/stamps/pulumi-language-python"
fi

# The exec script (runs the program) and the dynamic-provider launcher come from the Python SDK's
# release in the sdk/v3 module zip; the CLI looks for them beside itself and on PATH.
scripts_ok=true
for script in pulumi-language-python-exec pulumi-resource-pulumi-python; do
  [[ -x "$pulumi_dir/bin/$script" && "$(cat "$pulumi_dir/stamps/$script" 2>/dev/null)" == "$python_sdk_version" ]] \
    || scripts_ok=false
done
if $scripts_ok; then
  log "Python SDK $python_sdk_version scripts already installed"
else
  log "installing the Python SDK $python_sdk_version scripts from the sdk/v3 module"
  scratch="$(mktemp -d)"
  cleanup+=("$scratch")
  # Outside any module: a plain, checksum-verified download of that exact sdk/v3 release.
  sdk_dir="$(cd "$scratch" && GOFLAGS='' "$go_bin" mod download -json "github.com/pulumi/pulumi/sdk/v3@v$python_sdk_version" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])')"
  for pair in cmd/pulumi-language-python-exec dist/pulumi-resource-pulumi-python; do
    script="$(basename "$pair")"
    cleanup+=("$pulumi_dir/bin/.$script.tmp.$$")
    install -m 0755 "$sdk_dir/python/$pair" "$pulumi_dir/bin/.$script.tmp.$$"
    mv -f "$pulumi_dir/bin/.$script.tmp.$$" "$pulumi_dir/bin/$script"
    echo "$python_sdk_version" >"$pulumi_dir/stamps/$script"
  done
fi

# --- Kubernetes provider plugin -----------------------------------------------------------------
k8s_mod="$modules/kubernetes"
k8s_module=github.com/pulumi/pulumi-kubernetes/provider/v4
k8s_dir="$cache/pulumi-kubernetes-$k8s_version"
mkdir -p "$k8s_dir/bin" "$k8s_dir/stamps"

k8s_ldflags="-s -w -X $k8s_module/pkg/version.Version=$k8s_version"
k8s_fp="$(fingerprint "$k8s_mod" "$k8s_ldflags")"
if up_to_date "$k8s_dir/bin/pulumi-resource-kubernetes" "$k8s_dir/stamps/pulumi-resource-kubernetes" \
  "$k8s_fp" plugin_version "$k8s_version"; then
  log "pulumi-resource-kubernetes $k8s_version already built"
else
  log "building the Kubernetes provider $k8s_version"
  # A scratch copy of the wrapper module gets the generated embeds, so the repo stays clean.
  k8s_scratch="$(mktemp -d "$cache/.build-kubernetes.XXXXXX")"
  cleanup+=("$k8s_scratch")
  cp "$k8s_mod"/go.mod "$k8s_mod"/go.sum "$k8s_mod"/*.go "$k8s_scratch/"
  provider_src="$(mod_dir "$k8s_mod" "$k8s_module")/cmd/pulumi-resource-kubernetes"
  # Same as upstream's generate.go: schema.json with the version stamped, mappings compacted.
  python3 - "$provider_src" "$k8s_scratch" "$k8s_version" <<'PY'
import json
import sys

src, dst, version = sys.argv[1:4]
with open(f"{src}/schema.json", encoding="utf-8") as f:
    schema = json.load(f)
schema["version"] = version
with open(f"{dst}/schema-embed.json", "w", encoding="utf-8") as f:
    json.dump(schema, f, separators=(",", ":"))
with open(f"{src}/terraform-mapping.json", encoding="utf-8") as f:
    mapping = json.load(f)
with open(f"{dst}/terraform-mapping-embed.json", "w", encoding="utf-8") as f:
    json.dump(mapping, f, separators=(",", ":"))
PY
  go_build "$k8s_scratch" "$k8s_dir/bin/pulumi-resource-kubernetes" "$k8s_ldflags" .
  echo "$k8s_fp" >"$k8s_dir/stamps/pulumi-resource-kubernetes"
fi

log "done: put $pulumi_dir/bin and $k8s_dir/bin first on PATH"
echo "PULUMI_BIN_DIR=$pulumi_dir/bin"
echo "PULUMI_KUBERNETES_BIN_DIR=$k8s_dir/bin"
