# shellcheck shell=bash
# Sourced by the build scripts: the pinned versions, read from the manifest `versions` beside this
# file, each checked against the other files that must pin it too (go.mod, requirements.txt).
#   version_of NAME   prints NAME's version; exits naming the file and both versions on a disagreement
#   istio_versions    prints "<version> <wrapper module dir>" for every Istio line, checked the same way
#   check_versions    checks every line of the manifest
# Callers assign with VAR="$(version_of NAME)" (not `local VAR=...`), so a failed check stops set -e.
TOOLCHAIN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSIONS_FILE="$TOOLCHAIN_DIR/versions"

# _pin_in FILE MODULE: the version FILE (relative to toolchain/) pins for MODULE: a go.mod require
# line, or a requirements.txt `==` pin. Empty when it pins none.
_pin_in() {
  local file="$TOOLCHAIN_DIR/$1" module="${2//./\\.}"
  [[ -f "$file" ]] || return 0
  case "$file" in
    *go.mod) sed -n -E "s#^[[:space:]]*(require[[:space:]]+)?${module}[[:space:]]+v([^[:space:]]+).*#\\2#p" "$file" | head -n1 ;;
    *) sed -n -E "s#^${module}==([^[:space:];]+).*#\\1#p" "$file" | head -n1 ;;
  esac
}

# _check NAME VERSION [FILE:MODULE...]: every FILE pins MODULE at VERSION. An Istio version is served
# by a branch snapshot, so its line must name the wrapper module of its minor, which must pin istio.io/istio.
_check() {
  local name="$1" version="$2" spec file module got
  shift 2
  for spec in "$@"; do
    file="${spec%%:*}"
    module="${spec#*:}"
    got="$(_pin_in "$file" "$module")"
    if [[ "$name" == istio ]]; then
      [[ "$file" == "charts/istio-${version%.*}/go.mod" && -n "$got" ]] && continue
      printf 'toolchain/versions: istio %s names %s; it needs charts/istio-%s/go.mod pinning istio.io/istio (charts/add-minor.sh makes it)\n' \
        "$version" "$file" "${version%.*}" >&2
      exit 1
    fi
    [[ "$got" == "$version" ]] && continue
    printf 'toolchain/versions pins %s %s, but toolchain/%s pins %s at %s: make them agree\n' \
      "$name" "$version" "$file" "$module" "${got:-no version}" >&2
    exit 1
  done
}

# _lines NAME: the manifest's lines for NAME (comments and blank lines skipped).
_lines() { awk -v n="$1" '$1 == n' "$VERSIONS_FILE"; }

version_of() {
  local line
  line="$(_lines "$1" | head -n1)"
  [[ -n "$line" ]] || { printf 'toolchain/versions has no line for %s\n' "$1" >&2; exit 1; }
  # shellcheck disable=SC2086  # a manifest line is whitespace-separated words
  _check $line
  awk '{ print $2 }' <<<"$line"
}

istio_versions() {
  local line
  while read -r line; do
    # shellcheck disable=SC2086
    _check $line
    awk '{ split($3, spec, ":"); sub("/go.mod$", "", spec[1]); print $2, spec[1] }' <<<"$line"
  done < <(_lines istio)
}

check_versions() {
  local line
  while read -r line; do
    # shellcheck disable=SC2086
    _check $line
  done < <(grep -Ev '^[[:space:]]*(#|$)' "$VERSIONS_FILE")
}
