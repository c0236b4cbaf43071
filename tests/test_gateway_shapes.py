"""Gateways the chart renders under another name (`values.name`) or as another kind (`values.kind: DaemonSet`):
the MeshRollout entry, the review and the cluster read follow what the chart renders, and the shapes the
program cannot carry through are refused with the key to change."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from harness.simulation import simulate
from mesh.charts import gateway_values
from mesh.providers.rollout import RolloutError, snapshot_of
from mesh.review import Deployed, Move, left_to_gateways, moves
from mesh.spec import load_spec
from mesh.validation import validate
from mesh.workloads import Target
from tests.test_gateway_canary import _render
from tests.test_upgrade_walk import CHART, GATEWAY, entries, k

CONFIG: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
    "tags": {"stable": "1-30-2"},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable",
                             "service": {"type": "ClusterIP"}}},
}
PROXY = {"1-30-2": "docker.io/istio/proxyv2:1.30.2", "1-31-0": "docker.io/istio/proxyv2:1.31.0"}


def gateway(config: Mapping[str, Any] = CONFIG, **changes: Any) -> dict[str, Any]:
    new = copy.deepcopy(dict(config))
    new["gateways"]["ingress"].update(changes)
    return new


RENAMED = gateway(values={"name": "istio-ingressgateway"})
DAEMONSET = gateway(values={"kind": "DaemonSet"})


def errors_of(config: Mapping[str, Any]) -> dict[str, str]:
    return {e.key: e.message for e in validate(load_spec(config))}


# --- the MeshRollout entry -------------------------------------------------------------------------------------


def test_a_renamed_gateway_is_moved_under_the_name_the_chart_gives_its_deployment() -> None:
    assert set(entries(simulate(RENAMED))) == {"istio-ingress/istio-ingressgateway"}


def test_a_daemonset_gateway_is_an_entry_of_that_kind_and_renders_without_replicas() -> None:
    records = simulate(DAEMONSET)
    assert set(entries(records)) == {"istio-ingress/DaemonSet/ingress"}
    values = records[k((GATEWAY, "ingress"), (CHART, "ingress"))].inputs["values"]
    assert values["kind"] == "DaemonSet" and "replicaCount" not in values


def test_a_deployment_gateways_entry_is_unchanged_so_existing_stacks_see_no_diff() -> None:
    assert set(entries(simulate(CONFIG))) == {"istio-ingress/ingress"}


# --- reading the entry from the cluster ------------------------------------------------------------------------


def _objects(kind: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """One workload of `kind` named `name` in istio-ingress with one pod on 1-30-2, as the API lists them."""
    pod = {"metadata": {"name": f"{name}-x", "namespace": "istio-ingress", "annotations": {"istio.io/rev": "1-30-2"},
                        "ownerReferences": [{"controller": True, "kind": kind, "uid": "w1"}]},
           "spec": {"containers": [{"name": "istio-proxy", "image": PROXY["1-30-2"]}]}, "status": {"phase": "Running"}}
    workload = {"metadata": {"name": name, "namespace": "istio-ingress", "uid": "w1", "generation": 1},
                "spec": {"template": {}}, "status": {"observedGeneration": 1}}
    return {kind: [workload], "Pod": [pod]}


@pytest.mark.parametrize(("entry", "kind", "name"), [
    ("istio-ingress/ingress", "Deployment", "ingress"),
    ("istio-ingress/DaemonSet/ingress", "DaemonSet", "ingress"),
])
def test_an_entry_reads_the_workload_of_its_kind_and_its_pods(entry: str, kind: str, name: str) -> None:
    workloads, pods = snapshot_of(entry, _objects(kind, name))
    assert list(workloads) == [f"{kind}/{name}"]
    assert [p.name for p in pods] == [f"{name}-x"]


def test_an_entry_whose_workload_is_missing_names_its_kind() -> None:
    with pytest.raises(RolloutError, match="DaemonSet ingress not found in istio-ingress"):
        snapshot_of("istio-ingress/DaemonSet/ingress", _objects("Deployment", "ingress"))


# --- the review ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "workload"), [(RENAMED, "istio-ingressgateway"), (DAEMONSET, "DaemonSet/ingress")])
def test_the_review_reads_the_workload_the_chart_renders(config: dict[str, Any], workload: str) -> None:
    deployed = Deployed(versions={"1-30-2": "1.30.2", "1-31-0": "1.31.0"}, proxies=PROXY,
                        gateways={"ingress": {"namespace": "istio-ingress", "revision": "1-30-2"}})
    [move] = moves(deployed, load_spec(gateway(config, revision="1-31-0")))
    assert (move.namespace, move.workload) == ("istio-ingress", workload)
    workloads, _pods = snapshot_of(f"{move.namespace}/{move.workload}", _objects(
        "DaemonSet" if config is DAEMONSET else "Deployment", workload.removeprefix("DaemonSet/")))
    assert len(workloads) == 1


def test_a_bound_namespaces_move_leaves_the_gateways_rendered_workload_to_the_gateways_entry() -> None:
    config = gateway(values={"name": "istio-ingressgateway", "kind": "DaemonSet"})
    config["namespaces"] = {"istio-ingress": "stable"}
    move = Move("istio-ingress", None, None, Target("1-30-2", PROXY["1-30-2"]), "rolling", "(unbound) -> 1-30-2")
    assert left_to_gateways(load_spec(config), move) == {
        "DaemonSet/istio-ingressgateway": "istio-ingress/DaemonSet/istio-ingressgateway"}


# --- validation ------------------------------------------------------------------------------------------------


def test_a_daemonset_gateway_without_replicas_or_canary_is_valid() -> None:
    assert errors_of(DAEMONSET) == {}
    assert errors_of(RENAMED) == {}


def test_a_kind_the_chart_does_not_render_is_refused() -> None:
    message = errors_of(gateway(values={"kind": "StatefulSet"}))["gateways.ingress.values.kind"]
    assert "must be exactly one of Deployment, DaemonSet" in message
    assert "did you mean DaemonSet?" in errors_of(gateway(values={"kind": "daemonset"}))["gateways.ingress.values.kind"]


def test_a_daemonset_gateway_refuses_replicas_and_a_canary() -> None:
    errors = errors_of(gateway(DAEMONSET, replicas=3, canary={"revision": "1-31-0"}))
    assert "one pod on every node" in errors["gateways.ingress.replicas"]
    assert "remove gateways.ingress.replicas" in errors["gateways.ingress.replicas"]
    assert "one pod on every node" in errors["gateways.ingress.canary"]


def test_two_gateways_rendering_the_same_workload_in_one_namespace_are_refused() -> None:
    config = copy.deepcopy(RENAMED)
    config["gateways"]["edge"] = {"namespace": "istio-ingress", "revision": "stable",
                                  "values": {"name": "istio-ingressgateway"}}
    message = errors_of(config)["gateways.ingress.values.name"]
    assert 'gateway "edge" renders istio-ingressgateway in istio-ingress too' in message
    config["gateways"]["edge"]["namespace"] = "elsewhere"
    assert errors_of(config) == {}


# --- what the chart renders ------------------------------------------------------------------------------------


def test_the_chart_renders_a_daemonset_named_as_the_entry_says_with_no_replicas(tmp_path: Any) -> None:
    spec = load_spec(gateway(values={"kind": "DaemonSet", "name": "istio-edge"}))
    rendered = _render("ingress", "1.30.1", gateway_values(spec, spec.gateways["ingress"]), tmp_path)
    [workload] = [o for o in rendered if o["kind"] in ("Deployment", "DaemonSet")]
    assert (workload["kind"], workload["metadata"]["name"]) == ("DaemonSet", "istio-edge")
    assert "replicas" not in workload["spec"], "a DaemonSet has no spec.replicas: the API server refuses it"
    assert not [o for o in rendered if o["kind"] == "PodDisruptionBudget"]
