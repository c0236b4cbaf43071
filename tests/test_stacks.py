"""The shipped project and stack files: every key declared, both stacks load, validate and build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.simulation import simulate
from mesh.program import OBJECT_KEYS, STRING_KEYS, spec_from_config
from mesh.spec import DEFAULT_HUB, PROJECT, load_spec

ROOT = Path(__file__).resolve().parent.parent


def stack_config(stack: str) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    prefix = f"{PROJECT}:"
    assert all(key.startswith(prefix) for key in raw), "every key is under the project namespace"
    return {key.removeprefix(prefix): value for key, value in raw.items()}


def test_pulumi_yaml_declares_exactly_the_keys_the_program_reads() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    declared = {key: item for key, item in project["config"].items() if ":" not in key}  # the others are values
    assert set(declared) == {*OBJECT_KEYS, *STRING_KEYS}
    assert all(item["type"] in {"object", "string"} and item["description"] for item in declared.values())


def test_pulumi_yaml_defaults_agree_with_the_spec() -> None:
    """Pulumi requires declared keys without a default; only `revisions` must be set by every stack."""
    declared = {key: item for key, item in yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"].items()
                if ":" not in key}
    assert [key for key, item in declared.items() if "default" not in item] == ["revisions"]
    defaults = {key: item["default"] for key, item in declared.items() if "default" in item}
    assert defaults["hub"] == DEFAULT_HUB
    with_defaults = load_spec({**defaults, "revisions": {"r": {"version": "1.30.0"}}})
    assert with_defaults == load_spec({"revisions": {"r": {"version": "1.30.0"}}})


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_shipped_stacks_validate_and_mean_what_they_say(stack: str) -> None:
    raw = stack_config(stack)
    spec = spec_from_config(raw)
    assert spec == load_spec(raw), "validation passes the spec on unchanged"
    assert {n: r.version for n, r in spec.revisions.items()} == {n: r["version"] for n, r in raw["revisions"].items()}
    assert spec.tags == raw["tags"]
    assert {ns: b.revision for ns, b in spec.namespaces.items()} == {
        ns: b if isinstance(b, str) else b["revision"] for ns, b in raw["namespaces"].items()
    }
    assert {name: g.namespace for name, g in spec.gateways.items()} == {
        name: g["namespace"] for name, g in raw["gateways"].items()
    }


def test_prod_is_steady_state_and_dev_is_mid_upgrade() -> None:
    prod, dev = spec_from_config(stack_config("prod")), spec_from_config(stack_config("dev"))
    assert len(prod.revisions) == 1
    assert len(dev.revisions) == 2 and "canary" in dev.tags
    bound_to = {dev.resolve(b.revision) for b in dev.namespaces.values()}
    assert bound_to == set(dev.revisions), "dev's namespaces are split between its two revisions"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_shipped_stacks_build(stack: str) -> None:
    records = simulate(stack_config(stack))
    revisions = {r.name for r in records.values() if r.type == "istio-mesh:index:IstioRevision"}
    assert revisions == set(stack_config(stack)["revisions"])


def effective_config(stack: str) -> dict[str, Any]:
    """What the engine hands the providers: the project's values for every stack (namespaced keys in Pulumi.yaml
    carry a `value`), overridden by the stack file's."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    values = {key: item["value"] for key, item in project.items() if ":" in key}
    return {**values, **yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_stack_updates_configmaps_in_place(stack: str) -> None:
    """Without `kubernetes:enableConfigMapMutable` the Kubernetes provider replaces a changed ConfigMap (delete,
    then create): an in-place upgrade would delete `istio-sidecar-injector-<rev>` and `istio-<rev>` under the
    istiod serving them. Set once for the project, so no stack (and no user) has to remember it."""
    assert str(effective_config(stack).get("kubernetes:enableConfigMapMutable")).lower() == "true"
