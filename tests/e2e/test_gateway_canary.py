"""Gateway canaries, end to end: a gateway on one revision, a canary Deployment on the next one behind the
same Service, the promotion (the canary's revision becomes the gateway's, the canary goes) and its rollback
(`git revert`: the canary comes back, the gateway returns to its revision). Throughout, a watcher polls the
gateway's Service and EndpointSlices every 0.2 s: the Service keeps its uid and clusterIP and always has ready
endpoints. Real engine, real Kubernetes provider rendering the real gateway charts (1.30.0 and 1.31.0), pods
made Ready by KWOK and injected by the revisions' real istiod through their real webhooks. A preview
after the last step shows no changes.

Its own control plane: its stack owns `istio-base` and `istio-system`, one stack per cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from harness.control_plane import KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from tests.e2e.cluster_objects import pod_revisions
from tests.e2e.istio_agreement import check_istio_agrees

OLD, NEW = "1-30-0", "1-31-0"
GATEWAY, NAMESPACE = "edge", "edge-gw"
CANARY = f"{GATEWAY}-canary"


def config(tools: Tools, revision: str = OLD, canary: dict[str, Any] | None = None) -> dict[str, Any]:
    gateway: dict[str, Any] = {"namespace": NAMESPACE, "revision": revision, "replicas": 2,
                               "service": {"type": "ClusterIP"}}
    if canary:
        gateway["canary"] = canary
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "revisions": {OLD: {"version": "1.30.0"}, NEW: {"version": "1.31.0"}},
        "gateways": {GATEWAY: gateway},
        "rollout": {"concurrency": 2, "timeoutSeconds": 180},
    }


def with_canary(tools: Tools) -> dict[str, Any]:
    return config(tools, OLD, {"revision": NEW, "replicas": 1})


@dataclass
class Sample:
    at: float
    uid: str | None
    cluster_ip: str | None
    ready: frozenset[str]
    """Pods behind the Service's ready endpoints."""


@dataclass
class Watcher:
    """Polls the gateway's Service and its EndpointSlices from a thread of its own, with a client of its own."""

    kubeconfig: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="endpoint-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        api = k8s_config.new_client_from_config(config_file=self.kubeconfig)
        core, discovery = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
        while not self._stop.is_set():
            try:
                svc = core.read_namespaced_service(GATEWAY, NAMESPACE)
                slices = discovery.list_namespaced_endpoint_slice(
                    NAMESPACE, label_selector=f"kubernetes.io/service-name={GATEWAY}").items
                ready = frozenset(
                    e.target_ref.name for s in slices for e in s.endpoints or []
                    if e.conditions is not None and e.conditions.ready and e.target_ref is not None
                )
                self.samples.append(Sample(time.monotonic(), svc.metadata.uid, svc.spec.cluster_ip, ready))
            except Exception as exc:  # recorded and asserted on: the watcher must not die
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(0.2)
        api.close()

    def since(self, start: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= start]


@dataclass
class Canary:
    cluster: KubeCluster
    stack: MeshStack
    watcher: Watcher
    api: k8s.ApiClient
    service: tuple[str, str] | None = None
    """The Service's uid and clusterIP when it was created."""


@pytest.fixture(scope="module")
def canary(pristine_cluster: KubeCluster, e2e_tools: Tools,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canary]:
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("canary-stack"))
    watcher = Watcher(str(pristine_cluster.kubeconfig))
    yield Canary(pristine_cluster, stack, watcher, pristine_cluster.api())
    watcher.stop()


def deployment_pods(api: k8s.ApiClient, deployment: str) -> dict[str, str | None]:
    """Live pods of one of the two Deployments, by name: the revision that injected each."""
    owned = {rs.metadata.name for rs in k8s.AppsV1Api(api).list_namespaced_replica_set(NAMESPACE).items
             if any(o.name == deployment for o in rs.metadata.owner_references or [])}
    return {
        p.metadata.name: (p.metadata.annotations or {}).get("istio.io/rev")
        for p in k8s.CoreV1Api(api).list_namespaced_pod(NAMESPACE).items
        if p.metadata.deletion_timestamp is None and any(o.name in owned for o in p.metadata.owner_references or [])
    }


def rolled_out(api: k8s.ApiClient, deployment: str) -> bool:
    d = k8s.AppsV1Api(api).read_namespaced_deployment(deployment, NAMESPACE)
    s, want = d.status, d.spec.replicas
    return ((s.observed_generation or 0) >= d.metadata.generation and (s.updated_replicas or 0) == want
            and (s.ready_replicas or 0) == want and (s.replicas or 0) == want
            and len(deployment_pods(api, deployment)) == want)


def deployments(api: k8s.ApiClient) -> set[str]:
    return {d.metadata.name for d in k8s.AppsV1Api(api).list_namespaced_deployment(NAMESPACE).items}


def assert_service_kept_and_served(c: Canary, start: float) -> list[Sample]:
    """Every sample since `start`: the Service as created, with at least one ready endpoint."""
    samples = c.watcher.since(start)
    assert len(samples) >= 10, f"the watcher took only {len(samples)} samples (errors: {c.watcher.errors[-3:]})"
    assert c.watcher.errors == []
    changed = [s for s in samples if (s.uid, s.cluster_ip) != c.service]
    assert changed == [], f"the Service changed: {changed[:3]} (was {c.service})"
    empty = [s for s in samples if not s.ready]
    assert empty == [], f"{len(empty)} of {len(samples)} samples had no ready endpoint"
    return samples


def test_1_a_gateway_on_one_revision_serves_through_its_service(canary: Canary) -> None:
    c = canary
    c.stack.write_config(config(c.cluster.tools))
    c.stack.up()
    svc = k8s.CoreV1Api(c.api).read_namespaced_service(GATEWAY, NAMESPACE)
    c.service = (svc.metadata.uid, svc.spec.cluster_ip)
    assert svc.spec.cluster_ip and svc.spec.cluster_ip != "None"
    wait_for("the gateway rolled out", lambda: rolled_out(c.api, GATEWAY))
    assert set(deployment_pods(c.api, GATEWAY).values()) == {OLD}
    c.watcher.start()
    wait_for("the watcher sees both pods ready", lambda: any(len(s.ready) == 2 for s in c.watcher.samples))
    check_istio_agrees(canary.cluster, canary.stack)


def test_2_a_canary_adds_a_deployment_on_the_next_revision_behind_the_same_service(canary: Canary) -> None:
    c = canary
    start = time.monotonic()
    main_before = deployment_pods(c.api, GATEWAY)
    c.stack.write_config(with_canary(c.cluster.tools))
    review = c.stack.review()
    assert "canary added on 1-31-0 (`edge-canary`, 1 of 3 pods behind its Service)" in review.stdout, review.stdout
    c.stack.up()
    assert deployments(c.api) == {GATEWAY, CANARY}
    wait_for("the canary rolled out", lambda: rolled_out(c.api, CANARY))
    canary_pods = deployment_pods(c.api, CANARY)
    assert list(canary_pods.values()) == [NEW], "the canary's pod was injected by the canary revision"
    assert deployment_pods(c.api, GATEWAY) == main_before, "the gateway's own pods were not touched"
    services = k8s.CoreV1Api(c.api).list_namespaced_service(NAMESPACE).items
    assert [s.metadata.name for s in services] == [GATEWAY], "the canary renders no Service of its own"
    wait_for("the Service sends the canary its share",
             lambda: c.watcher.samples[-1].ready == {*main_before, *canary_pods}, timeout=30)
    assert_service_kept_and_served(c, start)
    check_istio_agrees(canary.cluster, canary.stack)


def test_3_promoting_rolls_the_gateway_first_then_removes_the_canary_and_keeps_the_service(canary: Canary) -> None:
    c = canary
    main_before = set(deployment_pods(c.api, GATEWAY))
    canary_pods = set(deployment_pods(c.api, CANARY))
    c.stack.write_config(config(c.cluster.tools, NEW))
    review = c.stack.review()
    assert "canary promoted, 1-30-0 -> 1-31-0" in review.stdout, review.stdout
    start = time.monotonic()
    changes = c.stack.up().summary.resource_changes or {}
    assert "replace" not in changes and changes.get("delete", 0) >= 1, changes
    assert deployments(c.api) == {GATEWAY}
    wait_for("the promoted gateway rolled out", lambda: rolled_out(c.api, GATEWAY))
    after = deployment_pods(c.api, GATEWAY)
    assert set(after.values()) == {NEW} and not set(after) & main_before
    samples = assert_service_kept_and_served(c, start)
    # The canary left the endpoints only once the gateway's new pods were serving: the first sample without it
    # already has the gateway's new pods ready and none of the old ones.
    gone = next((s for s in samples if not s.ready & canary_pods), None)
    assert gone is not None and gone.ready and not gone.ready & main_before, (gone.ready, main_before)
    wait_for("the Service serves the new pods only", lambda: c.watcher.samples[-1].ready == set(after), timeout=30)
    check_istio_agrees(canary.cluster, canary.stack)


def test_4_rolling_back_the_promotion_brings_the_canary_back_and_the_gateway_back_to_its_revision(
    canary: Canary,
) -> None:
    c = canary
    start = time.monotonic()
    c.stack.write_config(with_canary(c.cluster.tools))
    c.stack.up()
    assert deployments(c.api) == {GATEWAY, CANARY}
    wait_for("both rolled out", lambda: rolled_out(c.api, GATEWAY) and rolled_out(c.api, CANARY))
    assert set(deployment_pods(c.api, GATEWAY).values()) == {OLD}
    assert set(deployment_pods(c.api, CANARY).values()) == {NEW}
    assert sorted(pod_revisions(c.api, NAMESPACE).values()) == [OLD, OLD, NEW]
    wait_for("the Service serves all three", lambda: len(c.watcher.samples[-1].ready) == 3, timeout=30)
    assert_service_kept_and_served(c, start)
    assert c.stack.preview_changes() == {}
    check_istio_agrees(canary.cluster, canary.stack)
