"""In-place upgrades, end to end: a revision's version (1.30.0 -> 1.30.1) and then the hub change under it,
and every pod injected by it is restarted onto the new proxy image, once; a `natural` namespace is only
reported; a pod whose proxy was set by hand is left alone and reported. Real engine, real Kubernetes
provider rendering the real charts (the 1.30.1 mirror entry is the 1.30 snapshot stamped 1.30.1), real
API server calling the revision's webhooks, answered by the revision's real istiod (restarted by the harness
when the in-place change rolls its Deployment), which injects the image its injection template and values
name (global.hub, global.tag, global.proxy.image, global.variant).

This module runs on a control plane of its own. Its stack owns `istio-base` (CRDs, cluster roles,
validators) and `istio-system`, as test_upgrade.py's stack does: one stack per cluster, as the README
says. In a shared cluster the two stacks would take those objects from each other (base objects are
applied with patchForce), and this stack's revision validator would show up in test_upgrade.py's own
assertions on the cluster's validators.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from pulumi import automation as auto
from pulumi.dynamic.dynamic import serialize_provider

from harness.control_plane import ControlPlane, KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from mesh.providers.rollout import RolloutProvider
from tests.e2e.istio_agreement import check_istio_agrees

REVISION = "stable-ip"
TAG = "inplace"
BY_TAG, BY_NAME, NATURAL = "inplace-a", "inplace-b", "inplace-natural"
GATEWAY, GATEWAY_NS = "inplace-ingress", "inplace-gw"
ROLLING = (BY_TAG, BY_NAME, GATEWAY_NS)
"""Namespaces whose injected pods the program restarts (the gateway's through its own MeshRollout entry)."""
PINNED = "pinned"
"""A Deployment in BY_NAME whose pods chose their proxy by hand (sidecar.istio.io/proxyImage)."""
OWN_PROXY = "registry.example/own/proxyv2:1.29.0"
APP_IMAGE = "registry.example/app:1"
ROLLOUT = "pulumi-python:dynamic/mesh:MeshRollout"
ROLLOUT_NAME = "data-plane-rollout"
ENTRIES = {BY_TAG, BY_NAME, NATURAL, f"{GATEWAY_NS}/{GATEWAY}"}
"""The MeshRollout's entries: each binding, and the gateway's Deployment."""
OLD_ROLLOUT = "pulumi-python:dynamic/mesh:Rollout"
"""The per-namespace resource of the program's earlier versions."""


def config(tools: Tools, version: str = "1.30.0", hub: str = "docker.io/istio") -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "hub": hub,
        "revisions": {REVISION: {"version": version}},
        "tags": {TAG: REVISION},
        "namespaces": {
            BY_TAG: TAG,
            BY_NAME: REVISION,
            NATURAL: {"revision": TAG, "strategy": "natural"},
        },
        "gateways": {
            GATEWAY: {"namespace": GATEWAY_NS, "revision": TAG, "replicas": 2, "service": {"type": "ClusterIP"}},
        },
        "rollout": {"concurrency": 4, "timeoutSeconds": 180},
    }


# ---- cluster helpers -------------------------------------------------------------------------------


def proxies(api: k8s.ApiClient, namespace: str) -> dict[str, tuple[str, str | None, str | None]]:
    """Live pods by uid: (name, revision that injected it, its istio-proxy image)."""
    found = {}
    for p in k8s.CoreV1Api(api).list_namespaced_pod(namespace).items:
        if p.metadata.deletion_timestamp is not None or p.status.phase in ("Succeeded", "Failed"):
            continue
        images = [c.image for c in [*(p.spec.init_containers or []), *p.spec.containers] if c.name == "istio-proxy"]
        revision = (p.metadata.annotations or {}).get("istio.io/rev")
        found[p.metadata.uid] = (p.metadata.name, revision, images[0] if images else None)
    return found


def pod_template(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": APP_IMAGE}]},
    }


def create_deployment(api: k8s.ApiClient, namespace: str, name: str, replicas: int,
                      annotations: dict[str, str] | None = None) -> None:
    k8s.AppsV1Api(api).create_namespaced_deployment(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": pod_template(name, annotations)},
    })


def create_statefulset(api: k8s.ApiClient, namespace: str, name: str, replicas: int) -> None:
    k8s.AppsV1Api(api).create_namespaced_stateful_set(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                 "template": pod_template(name)},
    })


def settled(api: k8s.ApiClient, namespace: str) -> bool:
    """Every Deployment and StatefulSet rolled out, and only their current pods left."""
    apps = k8s.AppsV1Api(api)
    workloads = [*apps.list_namespaced_deployment(namespace).items, *apps.list_namespaced_stateful_set(namespace).items]
    for w in workloads:
        s, want = w.status, w.spec.replicas
        if (s.observed_generation or 0) < w.metadata.generation or (s.updated_replicas or 0) != want:
            return False
        if (s.ready_replicas or 0) != want or (s.replicas or 0) != want:
            return False
        if getattr(s, "update_revision", None) not in (None, getattr(s, "current_revision", None)):
            return False
    return len(proxies(api, namespace)) == sum(w.spec.replicas for w in workloads)


def pod_sets(api: k8s.ApiClient, namespace: str) -> dict[str, set[str]]:
    """Each workload's pod-template generations: a Deployment's ReplicaSets, a StatefulSet's revisions.
    A restart adds exactly one."""
    apps = k8s.AppsV1Api(api)
    found: dict[str, set[str]] = {}
    for obj in [*apps.list_namespaced_replica_set(namespace).items,
                *apps.list_namespaced_controller_revision(namespace).items]:
        owner = next((r for r in obj.metadata.owner_references or [] if r.controller), None)
        if owner is not None:
            found.setdefault(f"{owner.kind}/{owner.name}", set()).add(obj.metadata.name)
    return found


# ---- the steps ---------------------------------------------------------------------------------------


class InPlace:
    """State shared by the steps."""

    def __init__(self, cluster: KubeCluster, stack: MeshStack, tools: Tools) -> None:
        self.cluster, self.stack, self.tools = cluster, stack, tools
        self.api = cluster.api()

    def snapshot(self) -> dict[str, dict[str, tuple[str, str | None, str | None]]]:
        return {ns: proxies(self.api, ns) for ns in (*ROLLING, NATURAL)}

    def preview_updates(self) -> dict[str, list[str]]:
        """A preview's steps other than `same`, as `op type::name` -> the inputs that change (dynamic
        providers report no keys of their own, so they are compared here as the CLI's diff does)."""
        steps: dict[str, list[str]] = {}

        def record(event: auto.EngineEvent) -> None:
            pre = event.resource_pre_event
            if pre is None or pre.metadata.op == auto.OpType.SAME:
                return
            meta = pre.metadata
            old = meta.old.inputs if meta.old else {}
            new = meta.new.inputs if meta.new else {}
            changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
            steps[f"{meta.op.value} {meta.type}::{meta.urn.split('::')[-1]}"] = changed

        self.stack.stack.preview(on_event=record, on_output=self.stack.log.append, color="never", diff=True)
        return steps

    def rollout_outputs(self) -> dict[str, dict[str, Any]]:
        """The MeshRollout's results, by entry."""
        [rollout] = [r for r in self.stack.resources() if r["type"] == ROLLOUT]
        return rollout["outputs"]["results"]

    def injections_since(self, since: float) -> dict[str, int]:
        """Pods istiod injected since `since`, by namespace (the apiserver's record of each pod create)."""
        assert self.cluster.admission is not None
        counts: dict[str, int] = {}
        for call in self.cluster.admission.injections():
            if call.time >= since and call.patched:
                counts[call.namespace] = counts.get(call.namespace, 0) + 1
        return counts

    def check_converged(self, istioctl_finds: Iterable[tuple[str, str]] = ()) -> None:
        """No changes left, and Istio's own tooling agrees (`istioctl_finds`: findings caused on purpose)."""
        assert self.stack.preview_changes() == {}, "\n".join(self.stack.log[-80:])
        check_istio_agrees(self.cluster, self.stack, istioctl_finds)

    def assert_restarted_once_onto(self, image: str, before: dict[str, Any], sets: dict[str, Any],
                                   since: float) -> None:
        """Every injected pod of the rolling namespaces (but the pinned one) recreated exactly once onto
        `image`; the natural namespace and the pinned pod untouched."""
        after = self.snapshot()
        for ns in ROLLING:
            pinned = {uid: pod for uid, pod in before[ns].items() if pod[0].startswith(f"{PINNED}-")}
            moved = {uid: pod for uid, pod in after[ns].items() if uid not in pinned}
            assert {(rev, img) for _, rev, img in moved.values()} == {(REVISION, image)}, after[ns]
            assert not set(moved) & set(before[ns]), f"{ns}: every pod recreated"
            assert {uid: after[ns][uid] for uid in pinned} == pinned, f"{ns}: the hand-set proxy is left alone"
            assert self.cluster.admission is not None
            created = sorted(c.name for c in self.cluster.admission.injections(ns) if c.time >= since and c.patched)
            assert len(created) == len(moved), (
                f"{ns}: one new pod per pod, no more: created {created}, live {sorted(p[0] for p in moved.values())}")
            now = pod_sets(self.api, ns)
            for workload, generations in now.items():
                added = generations - sets[ns].get(workload, set())
                expected = 0 if workload == f"Deployment/{PINNED}" else 1
                assert len(added) == expected, f"{ns} {workload}: restarted {len(added)} times"
        assert after[NATURAL] == before[NATURAL], "natural: nothing restarted"
        assert self.injections_since(since).get(NATURAL, 0) == 0


@pytest.fixture(scope="module")
def own_cluster(e2e_tools: Tools) -> Iterator[KubeCluster]:
    """A control plane for this module alone (see the module doc); an existing cluster is used as it is."""
    if e2e_tools.existing_kubeconfig is not None:
        yield KubeCluster(e2e_tools.existing_kubeconfig, e2e_tools, None)
        return
    cp = ControlPlane(e2e_tools)
    cp.start()
    cluster = KubeCluster(cp.kubeconfig, e2e_tools, cp)
    try:
        yield cluster
    finally:
        if cluster._api is not None:
            cluster._api.close()
        cp.stop()


@pytest.fixture(scope="module")
def walk(own_cluster: KubeCluster, e2e_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> InPlace:
    if own_cluster.admission is None:
        pytest.skip("existing cluster: no audit log to count injections with")
    stack = MeshStack(e2e_tools, own_cluster.kubeconfig, tmp_path_factory.mktemp("in-place-stack"), name="inplace")
    return InPlace(own_cluster, stack, e2e_tools)


def test_1_steady_state_runs_the_revisions_proxy(walk: InPlace) -> None:
    api = walk.api
    for ns in (BY_TAG, BY_NAME, NATURAL):
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    walk.stack.write_config(config(walk.tools))
    walk.stack.up()

    create_deployment(api, BY_TAG, "web", 2)
    create_deployment(api, BY_TAG, "api", 1)
    create_deployment(api, BY_NAME, "billing", 2)
    create_statefulset(api, BY_NAME, "db", 2)
    create_deployment(api, BY_NAME, PINNED, 1, {"sidecar.istio.io/proxyImage": OWN_PROXY})
    create_deployment(api, NATURAL, "batch", 2)
    for ns in (*ROLLING, NATURAL):
        wait_for(f"{ns} settled", lambda ns=ns: settled(api, ns))
    pods = walk.snapshot()
    # The real istiod honours the pod's own `sidecar.istio.io/proxyImage` (the stand-in injector did not).
    assert {(rev, img) for ns in pods for name, rev, img in pods[ns].values() if not name.startswith(f"{PINNED}-")} == {
        (REVISION, "docker.io/istio/proxyv2:1.30.0")}, pods
    assert [(rev, img) for name, rev, img in pods[BY_NAME].values() if name.startswith(f"{PINNED}-")] == [
        (REVISION, OWN_PROXY)], pods
    assert len(pods[GATEWAY_NS]) == 2
    walk.check_converged()


def test_2_an_in_place_version_change_restarts_every_injected_pod_once(walk: InPlace) -> None:
    api = walk.api
    before, sets = walk.snapshot(), {ns: pod_sets(api, ns) for ns in ROLLING}
    walk.stack.set_path(f"revisions.{REVISION}.version", "1.30.1")

    steps = walk.preview_updates()
    rollouts = {step: keys for step, keys in steps.items() if ROLLOUT in step}
    assert rollouts == {f"update {ROLLOUT}::{ROLLOUT_NAME}": ["gateways", "namespaces"]}, steps
    # Nothing but updates: the revision's ConfigMaps (its values and injector config) change in place
    # (kubernetes:enableConfigMapMutable, set for every stack in Pulumi.yaml), never deleted and recreated
    # under the serving istiod.
    others = {step for step in steps if not step.startswith("update ")}
    assert others == set(), "\n".join(sorted(others))
    assert {f"update kubernetes:core/v1:ConfigMap::istiod-{REVISION}:istio-system/{name}"
            for name in (f"values-{REVISION}", f"istio-sidecar-injector-{REVISION}")} <= set(steps)
    assert not [s for s in steps if "NamespaceLabels" in s or f"istio-revision-tag-{TAG}" in s], "bindings stay"
    shown = [line for line in walk.stack.log if "proxy_image" in line]
    moved = [line for line in shown if "docker.io/istio/proxyv2:1.30.0" in line and "docker.io/istio/proxyv2:1.30.1"
             in line]
    assert len(moved) == len(ENTRIES), shown or walk.stack.log[-40:]  # one per entry: the preview names each

    since = time.time()
    walk.stack.up()
    walk.assert_restarted_once_onto("docker.io/istio/proxyv2:1.30.1", before, sets, since)
    # Every pod created while the revision's ConfigMaps and istiod changed under it was admitted and injected
    # by the real istiod: none refused by the webhook, none let through without a proxy.
    assert walk.cluster.admission is not None
    during = [c for c in walk.cluster.admission.calls() if c.time >= since and c.namespace in (*ROLLING, GATEWAY_NS)]
    assert during and [c for c in during if c.code >= 400 or not c.patched] == [], during

    outputs = walk.rollout_outputs()
    assert outputs[NATURAL]["pods_with_stale_proxy"] == 2
    assert outputs[NATURAL]["restarted"] == []
    assert f"{NATURAL}: 2 run {REVISION} with another proxy image" in "\n".join(walk.stack.log)
    [pinned] = [name for name, _, _ in before[BY_NAME].values() if name.startswith(f"{PINNED}-")]
    assert outputs[BY_NAME]["proxies_left_alone"] == {
        pinned: "proxy image set by hand (sidecar.istio.io/proxyImage)"}
    assert sorted(outputs[BY_NAME]["restarted"]) == ["Deployment/billing", "StatefulSet/db"]
    assert sorted(outputs[BY_TAG]["restarted"]) == ["Deployment/api", "Deployment/web"]
    # The gateway chart follows the version: its own update re-created the gateway's pods before the MeshRollout ran.
    assert outputs[f"{GATEWAY_NS}/{GATEWAY}"]["restarted"] == []
    assert (f"restarted 4 workloads in 2 namespaces/gateways: {BY_TAG}: Deployment/api, Deployment/web; "
            f"{BY_NAME}: Deployment/billing, StatefulSet/db") in "\n".join(walk.stack.log)
    walk.check_converged()


def test_3_a_hub_change_alone_restarts_every_injected_pod_of_the_revision(walk: InPlace) -> None:
    api = walk.api
    before, sets = walk.snapshot(), {ns: pod_sets(api, ns) for ns in ROLLING}
    walk.stack.set_path("hub", "mirror.example/istio")
    since = time.time()
    walk.stack.up()
    walk.assert_restarted_once_onto("mirror.example/istio/proxyv2:1.30.1", before, sets, since)
    assert walk.rollout_outputs()[NATURAL]["pods_with_stale_proxy"] == 2
    walk.check_converged()


def test_4_upgrading_from_per_namespace_rollouts_restarts_nothing(walk: InPlace) -> None:
    """A stack deployed by the program's earlier versions: one Rollout per binding and gateway, no MeshRollout
    (the state rewritten so). The preview deletes those Rollouts (a no-op: the engine loads their provider class
    from the state) and creates the MeshRollout with every entry; `up` restarts no pod, the natural namespace
    included, although its pods still run the old proxy."""
    deployment = walk.stack.stack.export_stack()
    state = json.loads(json.dumps(deployment.deployment))
    resources = state["resources"]
    [at] = [i for i, r in enumerate(resources) if r["type"] == ROLLOUT]
    mesh = resources.pop(at)
    parents = {r["urn"].rsplit("::", 1)[-1]: r["urn"] for r in resources
                if r["type"] in ("istio-mesh:index:NamespaceBindings", "istio-mesh:index:Gateway")}
    legacy: list[dict[str, Any]] = []
    for entry, target in {**mesh["outputs"]["namespaces"], **mesh["outputs"]["gateways"]}.items():
        ns, _, workload = entry.partition("/")
        parent = parents[workload or "namespaces"]
        props = {"__provider": serialize_provider(RolloutProvider()), "namespace": ns, "workload": workload or None,
                 **target, "concurrency": 4, "timeout_seconds": 180}
        legacy.append({
            "urn": f"{parent.rpartition('::')[0]}${OLD_ROLLOUT}::{workload or ns}-rollout", "custom": True,
            "id": entry, "type": OLD_ROLLOUT, "inputs": props, "outputs": {**props, "restarted": []},
            "parent": parent, "provider": mesh["provider"], "dependencies": [],
        })
    resources[at:at] = legacy
    walk.stack.stack.import_stack(auto.Deployment(version=deployment.version, deployment=state))

    steps = walk.preview_updates()
    assert set(steps) == {f"create {ROLLOUT}::{ROLLOUT_NAME}"} | {
        f"delete {OLD_ROLLOUT}::{name}"
        for name in (f"{BY_TAG}-rollout", f"{BY_NAME}-rollout", f"{NATURAL}-rollout", f"{GATEWAY}-rollout")
    }, steps
    before = walk.snapshot()
    since = time.time()
    walk.stack.up()
    assert walk.snapshot() == before
    assert walk.injections_since(since) == {}
    assert walk.rollout_outputs()[NATURAL]["restarted"] == []
    assert "restarted nothing" in "\n".join(walk.stack.log)
    walk.check_converged()
