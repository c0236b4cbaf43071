"""Gateway canaries: a second Deployment of the gateway chart on another revision behind the gateway's Service.

Values and the chart's rendering of them (with the cached Helm CLI; without it skipped, under CI failed),
validation, review and status lines, and simulated previews of add -> promote -> rollback.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from harness.simulation import Registration, diff, simulate
from harness.toolchain import HELM_VERSION, cache_dir, skip_or_fail_missing
from mesh.charts import canary_values, gateway_selector, gateway_values
from mesh.providers.namespace_labels import NamespaceLabelsProvider
from mesh.review import Deployed, control_plane
from mesh.spec import MeshSpec, load_spec
from mesh.status import status
from mesh.validation import validate
from tests.test_upgrade_walk import CHART, DATA_PLANE, GATEWAY, NAMESPACE_LABELS, entries, k

GATEWAY_KEY = (GATEWAY, "ingress")
MAIN = k(GATEWAY_KEY, (CHART, "ingress"))
CANARY = k(GATEWAY_KEY, (CHART, "ingress-canary"))

TWO_REVISIONS: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
    "tags": {"stable": "1-30-2"},
    "namespaces": {"payments": "stable"},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable", "replicas": 2,
                             "service": {"type": "ClusterIP", "ports": [{"name": "http2", "port": 80}]}}},
}


def with_gateway(config: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    new = copy.deepcopy(dict(config))
    gateway = new["gateways"]["ingress"]
    for key, value in changes.items():
        if value is None:
            gateway.pop(key, None)
        else:
            gateway[key] = value
    return new


WITH_CANARY = with_gateway(TWO_REVISIONS, canary={"revision": "1-31-0", "replicas": 1})
PROMOTED = with_gateway(TWO_REVISIONS, revision="1-31-0")


def spec_of(config: Mapping[str, Any]) -> MeshSpec:
    return load_spec(config)


# --- values -----------------------------------------------------------------------------------------------------


def test_a_canary_is_the_gateways_values_as_a_deployment_only_release_on_its_revision() -> None:
    spec = spec_of(WITH_CANARY)
    gw = spec.gateways["ingress"]
    main, canary = gateway_values(spec, gw), canary_values(spec, "ingress", gw)
    assert canary["name"] == "ingress-canary"
    assert canary["revision"] == "1-31-0" and canary["replicaCount"] == 1
    assert canary["labels"] == {"app": "ingress", "istio": "ingress"}
    assert canary["service"]["type"] == "None"
    assert canary["serviceAccount"] == {"create": False, "name": "ingress"}
    assert canary["rbac"] == {"enabled": False} and canary["podDisruptionBudget"] == {}
    # Everything else is the gateway's own: same autoscaling (off), same ports for its NetworkPolicy.
    assert canary["autoscaling"] == main["autoscaling"] and canary["service"]["ports"] == main["service"]["ports"]
    assert main["revision"] == "stable" and main["replicaCount"] == 2 and "name" not in main


def test_the_canary_follows_a_gateway_renamed_or_relabelled_by_its_values() -> None:
    config = with_gateway(WITH_CANARY, values={
        "name": "istio-edge", "serviceAccount": {"name": "edge-sa"}, "podDisruptionBudget": {"minAvailable": 1},
    })
    spec = spec_of(config)
    gw = spec.gateways["ingress"]
    assert gateway_selector("ingress", gw) == {"app": "istio-edge", "istio": "edge"}
    canary = canary_values(spec, "ingress", gw)
    assert canary["name"] == "istio-edge-canary"
    assert {key: canary["labels"][key] for key in ("app", "istio")} == {"app": "istio-edge", "istio": "edge"}
    assert canary["serviceAccount"] == {"create": False, "name": "edge-sa"}
    assert canary["podDisruptionBudget"] == {}, "a second PDB over the same pods would block every eviction"
    relabelled = spec_of(with_gateway(WITH_CANARY, values={"labels": {"app": "web", "istio": "edge"}}))
    assert gateway_selector("ingress", relabelled.gateways["ingress"]) == {"app": "web", "istio": "edge"}


def _helm() -> str:
    helm = cache_dir() / f"helm-v{HELM_VERSION}" / "bin" / "helm"
    if not helm.exists():
        skip_or_fail_missing(f"no Helm CLI at {helm} (bash toolchain/build-helm.sh)")
    return str(helm)


def _render(release: str, version: str, values: Mapping[str, Any], tmp_path: Any) -> list[dict[str, Any]]:
    chart = cache_dir() / f"istio-{version}" / "charts" / "gateway"
    if not chart.exists():
        skip_or_fail_missing(f"no chart mirror at {chart} (bash toolchain/build-charts.sh)")
    values_file = tmp_path / f"{release}.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    done = subprocess.run([_helm(), "template", release, str(chart), "-n", "istio-ingress", "-f", str(values_file)],
                          capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("values", [{}, {"name": "istio-edge", "podDisruptionBudget": {"minAvailable": 1}},
                                    {"labels": {"app": "web", "istio": "edge"}}])
def test_the_chart_renders_the_canary_as_a_deployment_whose_pods_the_gateways_service_selects(
    values: dict[str, Any], tmp_path: Any,
) -> None:
    spec = spec_of(with_gateway(WITH_CANARY, values=values))
    gw = spec.gateways["ingress"]
    main = _render("ingress", "1.30.1", gateway_values(spec, gw), tmp_path)
    canary = _render("ingress-canary", "1.31.0", canary_values(spec, "ingress", gw), tmp_path)
    assert sorted(o["kind"] for o in canary) == ["Deployment"], "no Service, account, Role or PDB of its own"
    service = next(o for o in main if o["kind"] == "Service")
    main_deployment = next(o for o in main if o["kind"] == "Deployment")
    deployment = canary[0]
    assert deployment["metadata"]["name"] == main_deployment["metadata"]["name"] + "-canary"
    pod = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod.items(), "the gateway's Service selects the canary's pods"
    assert pod["istio.io/rev"] == "1-31-0"
    assert main_deployment["spec"]["template"]["metadata"]["labels"]["istio.io/rev"] == "stable"
    assert deployment["spec"]["replicas"] == 1
    main_sa = main_deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == main_sa
    assert any(o["kind"] == "ServiceAccount" and o["metadata"]["name"] == main_sa for o in main)


# --- validation -------------------------------------------------------------------------------------------------


def errors_of(config: Mapping[str, Any]) -> dict[str, str]:
    return {e.key: e.message for e in validate(spec_of(config))}


def test_a_valid_canary_passes() -> None:
    assert errors_of(WITH_CANARY) == {}


def test_an_unknown_canary_revision_gets_the_closest_name() -> None:
    config = with_gateway(TWO_REVISIONS, canary={"revision": "stabel"})
    message = errors_of(config)["gateways.ingress.canary.revision"]
    assert "neither a tag nor a revision" in message and 'did you mean "stable"?' in message


def test_a_canary_on_the_gateways_own_revision_is_refused_even_through_a_tag() -> None:
    config = with_gateway(TWO_REVISIONS, canary={"revision": "1-30-2"})
    message = errors_of(config)["gateways.ingress.canary.revision"]
    assert "revision 1-30-2, the one the gateway already runs" in message
    assert "set gateways.ingress.revision to it and remove gateways.ingress.canary" in message


def test_canary_replicas_must_be_at_least_one() -> None:
    from mesh.spec import SpecError

    with pytest.raises(SpecError) as raised:
        load_spec(with_gateway(TWO_REVISIONS, canary={"revision": "1-31-0", "replicas": 0}))
    assert [str(e) for e in raised.value.errors] == [
        "istio-mesh:gateways.ingress.canary.replicas: must be at least 1, but is 0"]


def test_a_canary_in_a_bound_namespace_is_refused_because_the_namespace_label_wins() -> None:
    config = with_gateway(WITH_CANARY, namespace="payments")
    errors = errors_of(config)
    assert 'cannot run in payments, which is bound to "stable"' in errors["gateways.ingress.canary"]
    assert "gateways.ingress.revision" not in errors, "the gateway itself follows the binding"


def test_a_canary_whose_deployment_would_be_another_gateways_is_refused() -> None:
    config = copy.deepcopy(WITH_CANARY)
    config["gateways"]["ingress-canary"] = {"namespace": "istio-ingress", "revision": "stable"}
    assert "which is gateway \"ingress-canary\"'s" in errors_of(config)["gateways.ingress.canary"]
    config["gateways"]["ingress-canary"]["namespace"] = "elsewhere"
    assert errors_of(config) == {}


def test_a_canary_name_too_long_for_its_deployment_is_refused() -> None:
    config = copy.deepcopy(WITH_CANARY)
    config["gateways"] = {"g" * 60: config["gateways"]["ingress"]}
    assert "the canary's Deployment name" in errors_of(config)[f"gateways.{'g' * 60}.canary"]


# --- review and status ------------------------------------------------------------------------------------------


def outputs_of(config: Mapping[str, Any]) -> Deployed:
    spec = spec_of(config)
    gateways = {}
    for name, g in spec.gateways.items():
        gateways[name] = {"namespace": g.namespace, "revision": spec.resolve(g.revision),
                          **({"canary": spec.resolve(g.canary.revision)} if g.canary else {})}
    return Deployed(versions={n: r.version for n, r in spec.revisions.items()}, tags=dict(spec.tags),
                    gateways=gateways)


def gateway_lines(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return [line for line in control_plane(outputs_of(before), spec_of(after)) if line.startswith("gateway")]


def test_review_names_a_canary_added_promoted_rolled_back_and_removed() -> None:
    assert gateway_lines(TWO_REVISIONS, WITH_CANARY) == [
        "gateway `ingress` (istio-ingress): canary added on 1-31-0 (`ingress-canary`, 1 of 3 pods behind its Service)"]
    assert gateway_lines(WITH_CANARY, PROMOTED) == [
        "gateway `ingress` (istio-ingress): canary promoted, 1-30-2 -> 1-31-0: the gateway's Deployment rolls to "
        "1-31-0, then `ingress-canary` is deleted; the Service stays"]
    assert gateway_lines(PROMOTED, WITH_CANARY) == [
        "gateway `ingress` (istio-ingress): 1-31-0 -> 1-30-2",
        "gateway `ingress` (istio-ingress): canary added on 1-31-0 (`ingress-canary`, 1 of 3 pods behind its Service)"]
    assert gateway_lines(WITH_CANARY, TWO_REVISIONS) == [
        "gateway `ingress` (istio-ingress): canary on 1-31-0 removed (`ingress-canary` deleted)"]
    assert gateway_lines(WITH_CANARY, WITH_CANARY) == []
    assert gateway_lines(TWO_REVISIONS, TWO_REVISIONS) == []


def test_status_lists_the_canary_under_its_revision_and_keeps_that_revision_from_looking_unused() -> None:
    report = status("dev", outputs_of(WITH_CANARY), [])
    by_name = {r.name: r for r in report.revisions}
    assert by_name["1-31-0"].gateways == ["ingress (canary)"]
    assert by_name["1-30-2"].gateways == ["ingress"]
    assert "gateway `ingress`'s canary" in by_name["1-31-0"].why
    assert "- `1-31-0`: 1.31.0; bound: none; gateways: ingress (canary)" in report.markdown()


# --- simulated previews -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walk() -> dict[str, dict[str, Registration]]:
    return {"steady": simulate(TWO_REVISIONS), "canary": simulate(WITH_CANARY), "promoted": simulate(PROMOTED)}


def _updates(before: Mapping[str, Registration], after: Mapping[str, Registration]) -> set[str]:
    """What the preview shows updated: the simulated diff, less the namespace labels when their provider's own diff
    says no change (a gateway's pin is checked against its namespace's labels, never applied to them)."""
    labels = NamespaceLabelsProvider().diff("namespace-labels", dict(before[NAMESPACE_LABELS].inputs),
                                            dict(after[NAMESPACE_LABELS].inputs))
    return {key for key in diff(before, after).updated if key != NAMESPACE_LABELS or labels.changes}


def _custom_updates(before: Mapping[str, Registration], after: Mapping[str, Registration]) -> set[str]:
    """Updates other than the data-plane rollout's inputs (which follow every gateway's revision)."""
    return {key for key in _updates(before, after) if "Rollout" not in key}


def test_without_a_canary_the_gateway_registers_only_its_own_release(walk: dict[str, dict[str, Registration]]) -> None:
    assert [key for key in walk["steady"] if "canary" in key] == []
    assert walk["steady"][MAIN].inputs["values"]["revision"] == "stable"


def test_adding_a_canary_registers_only_a_second_release_without_a_service(
    walk: dict[str, dict[str, Registration]],
) -> None:
    change = diff(walk["steady"], walk["canary"])
    assert change.added == {CANARY} and change.deleted == set() and _updates(walk["steady"], walk["canary"]) == {
        DATA_PLANE}
    # The MeshRollout gains the canary's Deployment (its pods start on target, so nothing restarts then;
    # the entry moves them when the canary revision's proxy image changes in place).
    before, after = entries(walk["steady"]), entries(walk["canary"])
    assert {key: value for key, value in after.items() if key not in before} == {
        "istio-ingress/ingress-canary": {"revision": "1-31-0", "proxy_image": "docker.io/istio/proxyv2:1.31.0",
                                         "strategy": "rolling"}}
    assert {key: value for key, value in after.items() if key in before} == before
    canary = walk["canary"][CANARY]
    assert canary.inputs["chart"] == "/mirror/istio-1.31.0/gateway"
    assert canary.inputs["namespace"] == "istio-ingress"
    assert canary.inputs["values"]["service"]["type"] == "None"
    assert canary.inputs["values"]["revision"] == "1-31-0"
    assert f"{CHART}::ingress" in canary.dependencies, "after the release that owns the Service"
    assert f"{CHART}::istiod-1-31-0" in canary.dependencies, "after the revision that injects it"


def test_promoting_updates_the_gateways_release_in_place_and_deletes_the_canary(
    walk: dict[str, dict[str, Registration]],
) -> None:
    change = diff(walk["canary"], walk["promoted"])
    assert change.deleted == {CANARY} and change.added == set()
    assert _custom_updates(walk["canary"], walk["promoted"]) == {MAIN}
    before, after = walk["canary"][MAIN].inputs, walk["promoted"][MAIN].inputs
    # Same release name and namespace, so the same Service object: only the pods' revision and chart version move.
    changed = {key for key in before["values"].keys() | after["values"].keys()
               if before["values"].get(key) != after["values"].get(key)}
    assert changed == {"revision"} and after["values"]["revision"] == "1-31-0"
    assert before["values"]["service"] == after["values"]["service"] == {
        "type": "ClusterIP", "ports": [{"name": "http2", "port": 80, "targetPort": 80, "protocol": "TCP"}]}
    assert (before["chart"], after["chart"]) == ("/mirror/istio-1.30.2/gateway", "/mirror/istio-1.31.0/gateway")


def test_rolling_back_a_promotion_is_its_exact_inverse(walk: dict[str, dict[str, Registration]]) -> None:
    forward, back = diff(walk["canary"], walk["promoted"]), diff(walk["promoted"], walk["canary"])
    assert back == forward.inverse()
    assert walk["canary"][CANARY].inputs == simulate(WITH_CANARY)[CANARY].inputs
