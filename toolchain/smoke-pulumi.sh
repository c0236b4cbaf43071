#!/usr/bin/env bash
# Smoke check of the engine that build-pulumi.sh builds, fully offline, no cluster:
#   1. CLI: `pulumi up` of a Python program with a dynamic resource (its provider class in a module
#      next to __main__.py, so the provider process must import it) and a kubernetes.Provider with
#      render_yaml_to_directory + a ConfigMap (the real provider plugin runs and writes YAML);
#      then a config change (update), `preview --expect-no-changes`, and `destroy`.
#   2. Automation API: LocalWorkspace preview + up + outputs + destroy of the same program.
# Usage: smoke-pulumi.sh [VENV]   (VENV defaults to <repo>/.venv; it needs pulumi, pulumi-kubernetes, pip)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="$(cd "${1:-$repo/.venv}" && pwd)"

log() { printf '[smoke-pulumi] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

# Build (or reuse) the binaries; the script's last stdout lines name the bin dirs.
build_out="$(bash "$here/build-pulumi.sh")"
pulumi_bin="$(sed -n 's/^PULUMI_BIN_DIR=//p' <<<"$build_out")"
k8s_bin="$(sed -n 's/^PULUMI_KUBERNETES_BIN_DIR=//p' <<<"$build_out")"
[[ -d "$pulumi_bin" && -d "$k8s_bin" ]] || fail "build-pulumi.sh did not report its bin dirs"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home" "$work/state" "$work/prog" "$work/rendered"

# Everything a harness must set for offline runs: local state, no update check, no plugin downloads,
# and the built binaries first on PATH (the CLI finds pulumi-resource-kubernetes there).
export PATH="$pulumi_bin:$k8s_bin:$PATH"
export PULUMI_HOME="$work/home"
export PULUMI_BACKEND_URL="file://$work/state"
export PULUMI_CONFIG_PASSPHRASE=x
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
unset KUBECONFIG

log "pulumi: $(command -v pulumi) $(pulumi version)"

cat >"$work/prog/Pulumi.yaml" <<EOF
name: smoke
runtime:
  name: python
  options:
    virtualenv: $venv
EOF

cat >"$work/prog/echo_provider.py" <<'EOF'
"""Dynamic provider of the smoke program: lives in a module so it is pickled by reference."""
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult


class EchoProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_="echo", outs={"value": props["value"], "op": "created"})

    def diff(self, id_, olds, news):
        return DiffResult(changes=olds.get("value") != news.get("value"), replaces=[], delete_before_replace=False)

    def update(self, id_, olds, news):
        return UpdateResult(outs={"value": news["value"], "op": "updated"})
EOF

cat >"$work/prog/__main__.py" <<'EOF'
import pulumi
import pulumi_kubernetes as k8s
from pulumi.dynamic import Resource

from echo_provider import EchoProvider


class Echo(Resource):
    value: pulumi.Output[str]
    op: pulumi.Output[str]

    def __init__(self, name: str, value: str) -> None:
        super().__init__(EchoProvider(), name, {"value": value, "op": None})


config = pulumi.Config()
value = config.get("value") or "one"
echo = Echo("echo", value)

# No cluster: the provider renders manifests to a directory instead of applying them.
provider = k8s.Provider("render", render_yaml_to_directory=config.require("renderDir"))
cm = k8s.core.v1.ConfigMap(
    "smoke",
    metadata={"name": "smoke", "namespace": "default"},
    data={"value": value},
    opts=pulumi.ResourceOptions(provider=provider),
)

pulumi.export("value", echo.value)
pulumi.export("op", echo.op)
pulumi.export("configmap", cm.metadata["name"])
EOF

cd "$work/prog"
log "CLI: stack init + up"
pulumi stack init dev --non-interactive >&2
pulumi config set renderDir "$work/rendered" >&2
pulumi up --yes --non-interactive --skip-preview >&2
[[ "$(pulumi stack output op)" == created ]] || fail "dynamic resource was not created"
rendered="$(grep -rl 'name: smoke' "$work/rendered" || true)"
[[ -n "$rendered" ]] || fail "the kubernetes provider rendered no ConfigMap into $work/rendered"
grep -q 'value: one' "$rendered" || fail "rendered ConfigMap lacks the data"
log "kubernetes provider rendered $(basename "$rendered")"

log "CLI: config change -> update, then preview --expect-no-changes"
pulumi config set value two >&2
pulumi up --yes --non-interactive --skip-preview >&2
[[ "$(pulumi stack output op)" == updated ]] || fail "dynamic resource was not updated"
grep -q 'value: two' "$rendered" || fail "rendered ConfigMap was not updated"
pulumi preview --expect-no-changes --non-interactive >&2
pulumi plugin ls >&2
pulumi about 2>/dev/null | sed -n '/^Plugins/,/^$/p' >&2
pulumi destroy --yes --non-interactive --skip-preview >&2
pulumi stack rm --yes dev >&2

log "Automation API: LocalWorkspace preview + up + destroy"
"$venv/bin/python" - "$work/prog" "$work/rendered" <<'EOF'
import sys

from pulumi import automation as auto

work_dir, render_dir = sys.argv[1:3]
stack = auto.create_or_select_stack(stack_name="auto", work_dir=work_dir)
stack.set_config("renderDir", auto.ConfigValue(render_dir))
stack.set_config("value", auto.ConfigValue("three"))

events = []
preview = stack.preview(on_event=events.append)
assert preview.change_summary.get("create") == 4, preview.change_summary  # stack, echo, provider, configmap
assert any(e.resource_pre_event for e in events), "no per-resource preview events"

up = stack.up()
assert up.summary.result == "succeeded", up.summary
assert up.outputs["value"].value == "three", up.outputs
assert up.outputs["op"].value == "created", up.outputs

again = stack.preview()
assert set(again.change_summary) == {"same"}, again.change_summary

stack.destroy()
stack.workspace.remove_stack("auto")
print("automation API: preview/up/preview/destroy ok", file=sys.stderr)
EOF

log "PASS"
