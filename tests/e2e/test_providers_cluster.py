"""The MeshRollout and DrainGuard providers against a real kube-apiserver (no Pulumi engine).

The provider methods are called in-process (and once in a subprocess that gets killed, as an
interrupted `pulumi up` would be). Pods really roll: KWOK runs them on fake nodes, and the
apiserver calls the injection webhook of the revision the namespace label selects, answered by
that revision's real istiod (the istiod chart installed as `helm install` would, ``harness.revision``),
so a pod's `istio.io/rev` annotation says which revision's webhook injected it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from pulumi.dynamic import Config, ConfigureRequest

from harness.control_plane import KubeCluster, wait_for
from harness.revision import delete as uninstall_revision
from harness.revision import install_revision
from mesh.kube import KUBECONFIG_KEY
from mesh.providers.drain_guard import DrainGuardProvider, RevisionInUseError
from mesh.providers.rollout import MeshRolloutProvider, RolloutError
from mesh.workloads import RESTARTED_AT, RESTARTED_FOR, waiting_for, workload_from_object
from tests.e2e.cluster_objects import new_namespace

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "ro-old", "ro-new"
IMAGE = "example.invalid/app:1"




@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster) -> k8s.ApiClient:
    if kube_cluster.istiod is None:
        pytest.skip("existing cluster: the harness runs no istiod there")
    return kube_cluster.api()


@pytest.fixture(scope="module")
def revisions(kube_cluster: KubeCluster, api: k8s.ApiClient) -> Iterator[tuple[str, str]]:
    """Two real revisions whose webhooks the apiserver really calls and their istiods answer."""
    installed = [install_revision(kube_cluster, rev, version) for rev, version in ((OLD, "1.30.0"), (NEW, "1.31.0"))]
    yield OLD, NEW
    for objects in installed:
        uninstall_revision(kube_cluster, objects)


@pytest.fixture
def namespace(api: k8s.ApiClient, revisions: tuple[str, str]) -> Iterator[str]:
    """A namespace bound to the old revision, deleted after the test."""
    ns = new_namespace(api, {"istio.io/rev": revisions[0]})
    yield ns
    k8s.CoreV1Api(api).delete_namespace(ns)


def provider(kube_cluster: KubeCluster, cls: type = MeshRolloutProvider) -> Any:
    """A provider configured the way the engine does it: stack config `kubernetes:kubeconfig`."""
    p = cls()
    p.configure(ConfigureRequest(Config({KUBECONFIG_KEY: str(kube_cluster.kubeconfig)}, "istio-mesh")))
    return p


def template(labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": IMAGE}], **spec}}


def create_deployment(api: k8s.ApiClient, ns: str, name: str, replicas: int = 1, **extra: Any) -> None:
    labels = {"app": name, **extra.pop("labels", {})}
    body = {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(labels, **extra.pop("pod_spec", {})),
            **extra,
        },
    }
    k8s.AppsV1Api(api).create_namespaced_deployment(ns, body)


def create_statefulset(api: k8s.ApiClient, ns: str, name: str, replicas: int) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": template({"app": name}),
        },
    }
    k8s.AppsV1Api(api).create_namespaced_stateful_set(ns, body)


def create_daemonset(api: k8s.ApiClient, ns: str, name: str) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": template({"app": name})},
    }
    k8s.AppsV1Api(api).create_namespaced_daemon_set(ns, body)


def live_pods(api: k8s.ApiClient, ns: str) -> list[k8s.V1Pod]:
    return [p for p in k8s.CoreV1Api(api).list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]


def revisions_of(api: k8s.ApiClient, ns: str, prefix: str = "") -> dict[str, str | None]:
    return {
        p.metadata.name: (p.metadata.annotations or {}).get("istio.io/rev")
        for p in live_pods(api, ns)
        if p.metadata.name.startswith(prefix)
    }


def all_ready(api: k8s.ApiClient, ns: str, expected_pods: int) -> Callable[[], bool]:
    def check() -> bool:
        pods = live_pods(api, ns)
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return len(pods) == expected_pods and len(ready) == expected_pods

    return check


def templates(api: k8s.ApiClient, ns: str) -> dict[str, dict[str, str]]:
    """Pod-template annotations of every Deployment, StatefulSet and DaemonSet, by Kind/name."""
    apps = k8s.AppsV1Api(api)
    found: dict[str, dict[str, str]] = {}
    for kind, call in (
        ("Deployment", apps.list_namespaced_deployment),
        ("StatefulSet", apps.list_namespaced_stateful_set),
        ("DaemonSet", apps.list_namespaced_daemon_set),
    ):
        for obj in call(ns).items:
            found[f"{kind}/{obj.metadata.name}"] = dict(obj.spec.template.metadata.annotations or {})
    return found


def bind(api: k8s.ApiClient, ns: str, rev: str) -> None:
    """What the program's namespace patch does before the MeshRollout runs."""
    k8s.CoreV1Api(api).patch_namespace(ns, {"metadata": {"labels": {"istio.io/rev": rev}}})


def target(rev: str, strategy: str = "rolling") -> dict[str, str]:
    # What each revision's istiod injects: its chart's hub and tag (harness.revision's values).
    return {"revision": rev, "proxy_image": f"docker.io/istio/proxyv2:{'1.31.0' if rev == NEW else '1.30.0'}",
            "strategy": strategy}


def props(ns: str | list[str], rev: str, strategy: str = "rolling", **kw: Any) -> dict[str, Any]:
    """The MeshRollout's inputs moving `ns` (or several, or the gateway Deployment `workload` of it) to `rev`."""
    entries = {n: target(rev, strategy) for n in ([ns] if isinstance(ns, str) else ns)}
    workload = kw.get("workload")
    return {
        "namespaces": {} if workload else entries,
        "gateways": {f"{ns}/{workload}": target(rev, strategy)} if workload else {},
        "concurrency": kw.get("concurrency", 2),
        "per_namespace": kw.get("per_namespace", 0),
        "timeout_seconds": kw.get("timeout_seconds", 120),
    }


def nodes(api: k8s.ApiClient) -> int:
    return len(k8s.CoreV1Api(api).list_node().items)


def test_rolling_moves_every_pod_of_the_namespace(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    ns = namespace
    for name in ("web", "api", "worker"):
        create_deployment(api, ns, name, replicas=2)
    create_deployment(api, ns, "legacy", labels={"sidecar.istio.io/inject": "false"})
    create_statefulset(api, ns, "db", replicas=2)
    create_daemonset(api, ns, "agent")
    total = 3 * 2 + 1 + 2 + nodes(api)
    wait_for("workloads ready", all_ready(api, ns, total))
    assert set(revisions_of(api, ns).values()) == {OLD, None}  # legacy is not injected

    bind(api, ns, NEW)
    outs = provider(kube_cluster).create(props(ns, NEW, concurrency=2)).outs
    result = outs["results"][ns]

    assert sorted(result["restarted"]) == sorted(
        ["Deployment/web", "Deployment/api", "Deployment/worker", "StatefulSet/db", "DaemonSet/agent"]
    )
    assert "opted out" in result["skipped"]["Deployment/legacy"]
    assert result["pods_on_other_revisions"] == 0
    revs = revisions_of(api, ns)
    assert len(revs) == total
    assert {rev for name, rev in revs.items() if not name.startswith("legacy-")} == {NEW}
    assert [rev for name, rev in revs.items() if name.startswith("legacy-")] == [None]
    assert RESTARTED_AT not in templates(api, ns)["Deployment/legacy"]
    stamps = {key: t.get(RESTARTED_AT) for key, t in templates(api, ns).items()}

    # A second run that plans the namespace again (as after a failed `up`) restarts nothing.
    again = provider(kube_cluster).update("mesh-rollout", props(ns, OLD), props(ns, NEW, concurrency=2)).outs
    assert again["results"][ns]["restarted"] == []
    # A later `up` with the same entries does not even plan it.
    assert not provider(kube_cluster).diff("mesh-rollout", outs, props(ns, NEW, concurrency=5)).changes
    assert {key: t.get(RESTARTED_AT) for key, t in templates(api, ns).items()} == stamps


class RestartWatcher:
    """Counts, every few milliseconds, the workloads restarting (our restart annotation for NEW, rollout not
    complete) per namespace: what the stack-wide budget limits."""

    def __init__(self, api: k8s.ApiClient, namespaces: list[str]) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.namespaces = namespaces
        self.peak, self.peak_per_ns, self.together = 0, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.is_set():
            per_ns = {}
            for ns in self.namespaces:
                listed = self.apps.api_client.sanitize_for_serialization(self.apps.list_namespaced_deployment(ns))
                workloads = [workload_from_object("Deployment", o) for o in listed["items"]]
                per_ns[ns] = sum(1 for w in workloads if w.restarted_for is not None
                                 and w.restarted_for.revision == NEW and waiting_for(w) is not None)
            self.peak = max(self.peak, sum(per_ns.values()))
            self.peak_per_ns = max(self.peak_per_ns, *per_ns.values())
            self.together = max(self.together, sum(1 for n in per_ns.values() if n))
            time.sleep(0.05)

    def __enter__(self) -> RestartWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_one_budget_across_namespaces_shared_round_robin(
    kube_cluster: KubeCluster, api: k8s.ApiClient, revisions: tuple[str, str]
) -> None:
    namespaces = [new_namespace(api, {"istio.io/rev": OLD}) for _ in range(3)]
    try:
        for ns in namespaces:
            for name in ("a", "b"):
                create_deployment(api, ns, name, minReadySeconds=2)
        for ns in namespaces:
            wait_for("workloads ready", all_ready(api, ns, 2))
            bind(api, ns, NEW)
        with RestartWatcher(api, namespaces) as watcher:
            outs = provider(kube_cluster).create(props(namespaces, NEW, concurrency=2, per_namespace=1)).outs
        assert all(sorted(outs["results"][ns]["restarted"]) == ["Deployment/a", "Deployment/b"] for ns in namespaces)
        assert all(set(revisions_of(api, ns).values()) == {NEW} for ns in namespaces)
        assert watcher.peak == 2 and watcher.peak_per_ns == 1
        assert watcher.together == 2  # two namespaces at once: none waited for another to finish
    finally:
        for ns in namespaces:
            k8s.CoreV1Api(api).delete_namespace(ns)


def test_interrupted_run_resumes_without_restarting_finished_workloads(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    ns = namespace
    names = [f"w{i}" for i in range(4)]
    for name in names:
        # minReadySeconds stretches each rollout so the run can be cut in the middle of one.
        create_deployment(api, ns, name, minReadySeconds=6)
    wait_for("workloads ready", all_ready(api, ns, len(names)))
    bind(api, ns, NEW)

    # The first run, in its own process (as the Pulumi provider runs), killed mid-way.
    code = (
        "from mesh.providers.rollout import MeshRolloutProvider\n"
        f"MeshRolloutProvider().create({props(ns, NEW, concurrency=1)!r})\n"
    )
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=kube_cluster.env(), stderr=subprocess.PIPE)
    try:

        def w0_done_w1_restarting() -> bool:
            t = templates(api, ns)
            w0_on_new = set(revisions_of(api, ns, "w0-").values()) == {NEW}
            return w0_on_new and t["Deployment/w1"].get(RESTARTED_FOR) == NEW

        wait_for("w0 rolled and w1 restarting", w0_done_w1_restarting, timeout=90)
    finally:
        first.kill()
        first.wait()
    before = templates(api, ns)
    assert before["Deployment/w1"].get(RESTARTED_FOR) == NEW
    assert RESTARTED_AT not in before["Deployment/w2"] and RESTARTED_AT not in before["Deployment/w3"]

    # The killed create left no state: the next `up` creates again, with the same entries.
    result = provider(kube_cluster).create(props(ns, NEW, concurrency=1)).outs["results"][ns]

    after = templates(api, ns)
    assert result["restarted"] == ["Deployment/w2", "Deployment/w3"]
    assert result["skipped"] == {"Deployment/w0": f"all pods already run {NEW} (docker.io/istio/proxyv2:1.31.0)"}
    for key in ("Deployment/w0", "Deployment/w1"):  # w1 was waited on, not restarted again
        assert after[key][RESTARTED_AT] == before[key][RESTARTED_AT]
    assert set(revisions_of(api, ns).values()) == {NEW}


def test_stuck_rollout_times_out_naming_the_workload_and_its_cause(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    ns = namespace
    core = k8s.CoreV1Api(api)
    node = core.list_node().items[0].metadata.name
    label = f"e2e-stuck-{ns}"
    core.patch_node(node, {"metadata": {"labels": {label: "yes"}}})
    try:
        create_deployment(api, ns, "fine")
        create_deployment(api, ns, "pinned", pod_spec={"nodeSelector": {label: "yes"}})
        wait_for("workloads ready", all_ready(api, ns, 2))
    finally:
        # Running pods stay; any new pod of `pinned` can never be scheduled.
        core.patch_node(node, {"metadata": {"labels": {label: None}}})
    bind(api, ns, NEW)

    started = time.monotonic()
    with pytest.raises(RolloutError) as failed:
        provider(kube_cluster).create(props(ns, NEW, timeout_seconds=15))
    assert time.monotonic() - started < 60
    message = str(failed.value)
    assert f"rollout of namespace {ns} to revision {NEW} did not complete" in message
    assert "Deployment/pinned: timed out after 15s: 1 old replicas pending termination; pod pinned-" in message
    assert "Unschedulable" in message and "node affinity/selector" in message
    assert "Deployment/fine" not in message
    assert set(revisions_of(api, ns, "fine-").values()) == {NEW}


def test_natural_reports_and_restarts_nothing(kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str) -> None:
    ns = namespace
    create_deployment(api, ns, "web", replicas=3)
    wait_for("web ready", all_ready(api, ns, 3))
    bind(api, ns, NEW)
    result = provider(kube_cluster).create(props(ns, NEW, strategy="natural")).outs["results"][ns]
    assert (result["pods_on_other_revisions"], result["other_revisions"], result["restarted"]) == (3, {OLD: 3}, [])
    assert RESTARTED_AT not in templates(api, ns)["Deployment/web"]


def test_gateway_rollout_touches_only_its_deployment(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    ns = namespace
    create_deployment(api, ns, "gateway")
    create_deployment(api, ns, "other")
    wait_for("ready", all_ready(api, ns, 2))
    bind(api, ns, NEW)
    outs = provider(kube_cluster).create(props(ns, NEW, workload="gateway")).outs
    assert list(outs["results"]) == [f"{ns}/gateway"]
    assert outs["results"][f"{ns}/gateway"]["restarted"] == ["Deployment/gateway"]
    assert set(revisions_of(api, ns, "gateway-").values()) == {NEW}
    assert set(revisions_of(api, ns, "other-").values()) == {OLD}


def test_guard_refuses_while_in_use_and_lets_go_once_drained(
    kube_cluster: KubeCluster, api: k8s.ApiClient, revisions: tuple[str, str]
) -> None:
    guarded = f"dg-{uuid.uuid4().hex[:6]}"  # a revision of its own: other tests' pods don't count
    installed = install_revision(kube_cluster, guarded, "1.30.0")
    ns = new_namespace(api, {"istio.io/rev": guarded})
    try:
        create_deployment(api, ns, "web", replicas=2)
        wait_for("web ready", all_ready(api, ns, 2))
        guard = provider(kube_cluster, DrainGuardProvider)
        state = guard.create({"revision": guarded, "drain_timeout_seconds": 0}).outs

        with pytest.raises(RevisionInUseError) as refused:
            guard.delete(guarded, state)
        assert f"revision {guarded} is still in use by 2 pod(s) in 1 namespace(s)" in str(refused.value)
        assert f"  {ns}: 2 pod(s)" in str(refused.value)

        # With a drain timeout the delete waits; moving the namespace meanwhile lets it through.
        state = guard.update(guarded, state, {"revision": guarded, "drain_timeout_seconds": 120}).outs
        result: dict[str, Any] = {}

        def delete() -> None:
            try:
                guard.delete(guarded, state)
                result["ok"] = time.monotonic()
            except Exception as e:  # surfaced by the assertion below
                result["error"] = e

        waiter = threading.Thread(target=delete)
        waiter.start()
        time.sleep(2)
        assert waiter.is_alive(), result  # still waiting: the pods are still there
        bind(api, ns, revisions[1])
        moved_at = time.monotonic()
        provider(kube_cluster).update(ns, props(ns, guarded), props(ns, revisions[1]))
        waiter.join(timeout=60)
        assert "error" not in result, result
        assert result["ok"] >= moved_at
    finally:
        k8s.CoreV1Api(api).delete_namespace(ns)
        uninstall_revision(kube_cluster, installed)
