"""The canary upgrade as a series of simulated previews, and its rollback as the exact inverse.

steady -> add canary revision -> move one namespace -> move the stable and default tags -> drop the old revision
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.simulation import Diff, Registration, diff, simulate

ROOT = "istio-mesh:index:Istio::mesh"
REVISION = "istio-mesh:index:IstioRevision"
TAG = "istio-mesh:index:IstioRevisionTag"
BINDINGS = "istio-mesh:index:NamespaceBindings"
GATEWAY = "istio-mesh:index:Gateway"
CHART = "kubernetes:helm.sh/v4:Chart"
MWC = "kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration"
SERVICE = "kubernetes:core/v1:Service"
LABELS = "pulumi-python:dynamic/mesh:NamespaceLabels"
ROLLOUT = "pulumi-python:dynamic/mesh:MeshRollout"
DRAIN_GUARD = "pulumi-python:dynamic/mesh:DrainGuard"
VERSION_GATE = "pulumi-python:dynamic/mesh:VersionGate"

STEADY: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "hub": "mirror.example/istio",
    "revisions": {"1-30-2": {"version": "1.30.2"}},
    "tags": {"default": "1-30-2", "stable": "1-30-2"},
    "namespaces": {
        "payments": "stable",
        "checkout": "stable",
        "reporting": {"revision": "stable", "strategy": "natural"},
    },
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable", "service": {"type": "ClusterIP"}}},
}


def _step(config: dict[str, Any], **changes: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(config)
    for key, value in changes.items():
        new[key] = value
    return new


ADD_CANARY = _step(
    STEADY,
    revisions={**STEADY["revisions"], "1-31-0": {"version": "1.31.0"}},
    tags={**STEADY["tags"], "canary": "1-31-0"},
)
MOVE_NAMESPACE = _step(ADD_CANARY, namespaces={**ADD_CANARY["namespaces"], "payments": "canary"})
MOVE_TAGS = _step(MOVE_NAMESPACE, tags={"default": "1-31-0", "stable": "1-31-0", "canary": "1-31-0"})
DROP_OLD = _step(MOVE_TAGS, revisions={"1-31-0": {"version": "1.31.0"}})
WALK = [STEADY, ADD_CANARY, MOVE_NAMESPACE, MOVE_TAGS, DROP_OLD]


def k(*path: tuple[str, str]) -> str:
    """Key of a resource from its chain of (type, name) below the root component."""
    parent = ROOT
    for typ, name in path[:-1]:
        parent = f"{typ}::{name}"
    typ, name = path[-1]
    return f"{parent}/{typ}::{name}"


def revision_keys(rev: str) -> set[str]:
    return {
        k((REVISION, rev)),
        k((REVISION, rev), (CHART, f"istiod-{rev}")),
        k((REVISION, rev), (DRAIN_GUARD, f"{rev}-drain-guard")),
    }


def tag_objects(tag: str) -> set[str]:
    return {k((TAG, tag), (MWC, f"istio-revision-tag-{tag}")), k((TAG, tag), (SERVICE, f"istiod-revision-tag-{tag}"))}


GATE = k((VERSION_GATE, "versions"))
BASE = k((CHART, "istio-base"))
NAMESPACE_LABELS = k((BINDINGS, "namespaces"), (LABELS, "namespace-labels"))
"""The one resource holding every bound namespace's label: its inputs map namespace to tag or revision."""
DATA_PLANE = k((ROLLOUT, "data-plane-rollout"))
"""The one MeshRollout of the stack: its entries say which namespaces and gateways move."""


def entries(records: dict[str, Registration]) -> dict[str, dict[str, str]]:
    """The MeshRollout's targets: namespace, or `<namespace>/<gateway>`, -> revision, proxy image, strategy."""
    inputs = records[DATA_PLANE].inputs
    return {**inputs["namespaces"], **inputs["gateways"]}


def labels(records: dict[str, Registration]) -> dict[str, str]:
    """Bound namespace -> the label value the stack sets."""
    return records[NAMESPACE_LABELS].inputs["namespaces"]


def relabelled(before: dict[str, Registration], after: dict[str, Registration]) -> set[str]:
    """Namespaces whose label the preview shows changing (added, moved or removed)."""
    old, new = labels(before), labels(after)
    return {ns for ns in old.keys() | new.keys() if old.get(ns) != new.get(ns)}


def moved(before: dict[str, Registration], after: dict[str, Registration]) -> set[str]:
    """Entries added, changed or removed: what the preview shows under the MeshRollout."""
    old, new = entries(before), entries(after)
    return {e for e in old.keys() | new.keys() if old.get(e) != new.get(e)}


@pytest.fixture(scope="module")
def recordings() -> list[dict[str, Registration]]:
    return [simulate(config) for config in WALK]


def test_adding_a_canary_adds_its_revision_and_tag_and_moves_only_base_to_the_newest_version(
    recordings: list[dict[str, Registration]],
) -> None:
    d = diff(recordings[0], recordings[1])
    assert d.added == revision_keys("1-31-0") | {k((TAG, "canary"))} | tag_objects("canary")
    assert d.updated == {GATE, BASE}
    assert d.deleted == set()
    assert recordings[1][BASE].inputs["chart"] == "/mirror/istio-1.31.0/base"


def test_moving_one_namespace_updates_only_its_label_entry_and_rollout_entry(
    recordings: list[dict[str, Registration]],
) -> None:
    d = diff(recordings[1], recordings[2])
    assert d == Diff(added=set(), updated={NAMESPACE_LABELS, DATA_PLANE}, deleted=set())
    assert relabelled(recordings[1], recordings[2]) == {"payments"}
    assert labels(recordings[2]) == {"payments": "canary", "checkout": "stable", "reporting": "stable"}
    assert moved(recordings[1], recordings[2]) == {"payments"}
    assert entries(recordings[2])["payments"] == {
        "revision": "1-31-0", "proxy_image": "mirror.example/istio/proxyv2:1.31.0", "strategy": "rolling"}


def test_moving_the_stable_and_default_tags_updates_their_webhooks_in_place_and_moves_their_workloads(
    recordings: list[dict[str, Registration]],
) -> None:
    d = diff(recordings[2], recordings[3])
    assert d.added == set() and d.deleted == set()
    assert d.updated == (
        tag_objects("stable") | tag_objects("default")
        | {BASE}  # defaultRevision follows the default tag
        | {DATA_PLANE, k((GATEWAY, "ingress"), (CHART, "ingress"))}
    )
    assert moved(recordings[2], recordings[3]) == {"checkout", "reporting", "istio-ingress/ingress"}
    assert entries(recordings[3])["reporting"]["strategy"] == "natural"
    hook = recordings[3][k((TAG, "stable"), (MWC, "istio-revision-tag-stable"))].inputs
    services = {w["clientConfig"]["service"]["name"] for w in hook["webhooks"]}
    assert services == {"istiod-1-31-0"}
    assert recordings[3][BASE].inputs["values"]["defaultRevision"] == "1-31-0"
    # Namespaces bound through the tag keep their label: only the tag's target moved.
    assert NAMESPACE_LABELS not in d.updated


def test_dropping_the_old_revision_deletes_only_its_own_objects(recordings: list[dict[str, Registration]]) -> None:
    d = diff(recordings[3], recordings[4])
    assert d.added == set()
    assert d.deleted == revision_keys("1-30-2")
    assert d.updated == {GATE}


@pytest.mark.parametrize("step", range(1, len(WALK)))
def test_rollback_of_each_step_is_its_inverse(recordings: list[dict[str, Registration]], step: int) -> None:
    forward = diff(recordings[step - 1], recordings[step])
    assert diff(recordings[step], recordings[step - 1]) == forward.inverse()


def test_every_recording_of_the_same_config_is_identical() -> None:
    """Re-running with unchanged config is a no-op preview (no nondeterminism in names or inputs)."""
    assert diff(simulate(MOVE_TAGS), simulate(MOVE_TAGS)) == Diff()


def test_install_order_base_then_revisions_then_tags_then_bindings_and_gateways(
    recordings: list[dict[str, Registration]],
) -> None:
    mid = recordings[2]
    assert mid[k((REVISION, "1-31-0"), (CHART, "istiod-1-31-0"))].dependencies == {f"{CHART}::istio-base"}
    guard = mid[k((REVISION, "1-31-0"), (DRAIN_GUARD, "1-31-0-drain-guard"))]
    assert guard.dependencies == {f"{CHART}::istiod-1-31-0"}, "deleted before the chart's objects"
    canary_hook = mid[k((TAG, "canary"), (MWC, "istio-revision-tag-canary"))]
    assert f"{CHART}::istiod-1-31-0" in canary_hook.dependencies
    # Labels are set once every tag or revision a binding names has its webhook (which waited for its revision);
    # not after the tags' Services, which injection does not use and whose endpoint await would hold up the move.
    assert mid[NAMESPACE_LABELS].dependencies == {
        f"{MWC}::istio-revision-tag-canary", f"{MWC}::istio-revision-tag-stable"}
    # Pods move once every binding's labels are set (the legacy label removed with it) and every gateway chart
    # is applied: pods stay injected throughout.
    assert mid[DATA_PLANE].dependencies == {f"{LABELS}::namespace-labels", f"{CHART}::ingress"}
    gateway_chart = mid[k((GATEWAY, "ingress"), (CHART, "ingress"))]
    expected = {f"{MWC}::istio-revision-tag-stable", "kubernetes:core/v1:Namespace::istio-ingress"}
    assert expected <= gateway_chart.dependencies


def test_gate_comes_first_and_namespaces_are_never_deleted(recordings: list[dict[str, Registration]]) -> None:
    steady = recordings[0]
    assert f"{VERSION_GATE}::versions" in steady[BASE].dependencies
    namespaces = [r for r in steady.values() if r.type == "kubernetes:core/v1:Namespace"]
    assert {r.name for r in namespaces} == {"istio-system", "istio-ingress"}
    assert all(r.retain_on_delete for r in namespaces)


def test_no_ignore_rules_on_webhooks(recordings: list[dict[str, Registration]]) -> None:
    """Ignore paths into the `webhooks` list cannot be relied on: nothing istiod writes is applied instead."""
    hook = recordings[0][k((TAG, "stable"), (MWC, "istio-revision-tag-stable"))]
    assert not hook.ignore_changes


def test_only_the_default_tag_takes_over_from_a_revisionless_install(recordings: list[dict[str, Registration]]) -> None:
    steady = recordings[0]
    takeovers = [r for r in steady.values() if r.type == "pulumi-python:dynamic/mesh:RevisionlessInjectorTakeover"]
    assert [r.key for r in takeovers] == [k((TAG, "default"), (takeovers[0].type, "revisionless-injector-takeover"))]
    assert takeovers[0].dependencies == {f"{MWC}::istio-revision-tag-default"}, "the tag injects before the old stops"


PREVIOUS_TAG = "pulumi-python:dynamic/mesh:PreviousDefaultTag"


def test_a_default_tag_made_by_istioctl_is_kept_before_it_is_taken_over_and_given_back_by_the_takeover(
        recordings: list[dict[str, Registration]]) -> None:
    """`istioctl install` made `istio-revision-tag-default` under its own field manager: the program's apply
    takes its fields over instead of conflicting, after the webhook found is kept (`PreviousDefaultTag`), and
    removing the tag leaves the object to that resource, which puts the kept one back (no moment without it)."""
    steady = recordings[0]
    hook = steady[k((TAG, "default"), (MWC, "istio-revision-tag-default"))]
    assert hook.inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}
    assert hook.retain_on_delete, "the kept webhook is put back in its place, never deleted first"
    assert f"{PREVIOUS_TAG}::default-tag-previous-webhook" in hook.dependencies
    assert k((TAG, "default"), (PREVIOUS_TAG, "default-tag-previous-webhook")) in steady
    other = steady[k((TAG, "stable"), (MWC, "istio-revision-tag-stable"))]
    assert not other.retain_on_delete and "annotations" not in other.inputs["metadata"]
    # istioctl makes the tag's Service as well: taken over and given back the same way.
    service = steady[k((TAG, "default"), ("kubernetes:core/v1:Service", "istiod-revision-tag-default"))]
    assert service.inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}
    assert service.retain_on_delete and f"{PREVIOUS_TAG}::default-tag-previous-webhook" in service.dependencies
    other_service = steady[k((TAG, "stable"), ("kubernetes:core/v1:Service", "istiod-revision-tag-stable"))]
    assert not other_service.retain_on_delete


def test_a_binding_on_the_default_tag_waits_for_the_takeover() -> None:
    """Pods sent to `default` before the revisionless injector stops would be injected twice (IST0139)."""
    bound = simulate(_step(STEADY, namespaces={**STEADY["namespaces"], "legacy": "default"}))
    assert bound[NAMESPACE_LABELS].dependencies == {
        "pulumi-python:dynamic/mesh:RevisionlessInjectorTakeover::revisionless-injector-takeover",
        f"{MWC}::istio-revision-tag-stable"}
