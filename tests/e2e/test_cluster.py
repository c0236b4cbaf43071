"""Tests of the e2e harness itself: the control plane, KWOK, the webhook route and the real istiod.

Two revisions are installed from the real istiod chart (``harness.revision``, as `helm install` would);
the harness runs a real istiod for each, which patches its webhooks and answers them. The apiserver,
not the harness, decides which revision is called; its audit log says which webhooks changed a pod.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from harness.control_plane import KubeCluster, wait_for
from harness.revision import HUB, ISTIO_NS, apply, delete, install_revision, revision_objects, wait_injects
from tests.e2e.cluster_objects import new_namespace

pytestmark = pytest.mark.e2e


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }


@pytest.fixture(scope="module")
def revisions(kube_cluster: KubeCluster) -> Iterator[dict[str, str]]:
    """Two real revisions, `r-a` (1.30.0 chart) and `r-b` (1.31.0 chart), each served by its own istiod."""
    if kube_cluster.istiod is None:
        pytest.skip("existing cluster: the harness runs no istiod there")
    revs = {"r-a": "1.30.0", "r-b": "1.31.0"}
    installed = {rev: install_revision(kube_cluster, rev, version) for rev, version in revs.items()}
    yield revs
    for objects in installed.values():
        delete(kube_cluster, objects)


def test_namespace_label_selects_revision_webhook(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    api = kube_cluster.api()
    core = k8s.CoreV1Api(api)
    ns = new_namespace(api, {"istio.io/rev": "r-a"})
    created = core.create_namespaced_pod(ns, pod("web"))

    annotations = created.metadata.annotations or {}
    assert annotations.get("istio.io/rev") == "r-a"
    status = json.loads(annotations["sidecar.istio.io/status"])
    assert status["revision"] == "r-a" and "istio-proxy" in status["containers"]
    assert "istio-init" in status["initContainers"]
    proxies = [c for c in created.spec.containers if c.name == "istio-proxy"]
    assert [c.image for c in proxies] == [f"{HUB}/proxyv2:1.30.0"]
    # The real template: the proxy runs the sidecar agent and knows its revision's istiod.
    env = {e.name: e.value for e in proxies[0].env or []}
    assert proxies[0].args[:2] == ["proxy", "sidecar"]
    assert env.get("ISTIO_META_CLUSTER_ID") == "Kubernetes"
    assert "istiod-r-a.istio-system.svc:15012" in json.dumps(env)

    calls = kube_cluster.admission.injections(ns)  # type: ignore[union-attr]
    assert [(c.revision, c.injectors, c.name, c.patched) for c in calls] == [
        ("r-a", ["istio-sidecar-injector-r-a"], "web", True)
    ]


def test_istiod_patched_the_ca_bundle_of_its_webhooks(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """Nothing of the harness writes caBundle: each revision's istiod patched its own webhook."""
    adm = k8s.AdmissionregistrationV1Api(kube_cluster.api())
    for rev in revisions:
        hook = adm.read_mutating_webhook_configuration(f"istio-sidecar-injector-{rev}")
        assert all(w.client_config.ca_bundle for w in hook.webhooks), rev
        assert {m.manager for m in hook.metadata.managed_fields or []} >= {"helm", "pilot-discovery"}


def test_an_istiod_pod_is_ready_when_its_istiod_is(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """KWOK runs istiod's pods unready; the harness marks them Ready once the real istiod answers /ready, as a
    kubelet's probe would, so the Deployment (and anything waiting on its rollout) waits for the real istiod."""
    assert kube_cluster.istiod is not None
    apps, core = k8s.AppsV1Api(kube_cluster.api()), k8s.CoreV1Api(kube_cluster.api())
    for rev in revisions:
        istiod = kube_cluster.istiod.wait_serving(rev)
        wait_for(f"istiod-{rev} available",
                 lambda rev=rev: (apps.read_namespaced_deployment(f"istiod-{rev}", ISTIO_NS).status.available_replicas
                                  or 0) == 1)
        [pod] = core.list_namespaced_pod(ISTIO_NS, label_selector=f"app=istiod,istio.io/rev={rev}").items
        assert [(c.type, c.status) for c in pod.status.conditions if c.type == "Ready"] == [("Ready", "True")]
        assert istiod.ready()


def test_pod_label_selects_other_revision(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """A pod label counts only in a namespace without labels; the apiserver picks r-b."""
    api = kube_cluster.api()
    core = k8s.CoreV1Api(api)
    plain = new_namespace(api)
    created = core.create_namespaced_pod(plain, pod("by-label", {"istio.io/rev": "r-b"}))
    assert created.metadata.annotations["istio.io/rev"] == "r-b"
    assert [c.image for c in created.spec.containers if c.name == "istio-proxy"] == [f"{HUB}/proxyv2:1.31.0"]
    # Namespace label beats pod label: only the namespace's revision is called.
    bound = new_namespace(api, {"istio.io/rev": "r-a"})
    created = core.create_namespaced_pod(bound, pod("ns-wins", {"istio.io/rev": "r-b"}))
    assert created.metadata.annotations["istio.io/rev"] == "r-a"
    calls = kube_cluster.admission.injections(bound)  # type: ignore[union-attr]
    assert [(c.revision, c.injectors) for c in calls] == [("r-a", ["istio-sidecar-injector-r-a"])]


def test_tag_webhook_injects_the_revision_it_points_to(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """A tag is only a webhook calling istiod-<rev>: the pod gets that revision, not the tag. The tag's
    webhook is the chart's own (`revisionTags`), and r-b's istiod patches its caBundle too."""
    tag_hook = [o for o in revision_objects(kube_cluster, "r-b", "1.31.0", tags=("prod",))
                if o["kind"] == "MutatingWebhookConfiguration" and o["metadata"]["name"] == "istio-revision-tag-prod"]
    assert len(tag_hook) == 1
    apply(kube_cluster, tag_hook)
    try:
        wait_injects(kube_cluster, {"istio.io/rev": "prod"}, "r-b")
        api = kube_cluster.api()
        ns = new_namespace(api, {"istio.io/rev": "prod"})
        created = k8s.CoreV1Api(api).create_namespaced_pod(ns, pod("tagged"))
        assert created.metadata.annotations["istio.io/rev"] == "r-b"
        calls = [c for c in kube_cluster.admission.injections(ns) if c.name == "tagged"]  # type: ignore[union-attr]
        assert [(c.revision, c.injectors) for c in calls] == [("r-b", ["istio-revision-tag-prod"])]
    finally:
        delete(kube_cluster, tag_hook)


def test_inject_false_is_not_injected(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    api = kube_cluster.api()
    core = k8s.CoreV1Api(api)
    ns = new_namespace(api, {"istio.io/rev": "r-a"})
    created = core.create_namespaced_pod(ns, pod("opt-out", {"sidecar.istio.io/inject": "false"}))
    assert "istio.io/rev" not in (created.metadata.annotations or {})
    assert [c.name for c in created.spec.containers] == ["app"]
    assert kube_cluster.admission.injections(ns) == []  # type: ignore[union-attr]
    # No label at all: no webhook matches either.
    plain = new_namespace(api)
    created = core.create_namespaced_pod(plain, pod("plain"))
    assert [c.name for c in created.spec.containers] == ["app"]
    assert kube_cluster.admission.injections(plain) == []  # type: ignore[union-attr]


def test_deployment_rolls_out_on_kwok_nodes(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """Two replicas become Available; their pods (injected via ReplicaSet) run on KWOK nodes."""
    api = kube_cluster.api()
    apps = k8s.AppsV1Api(api)
    ns = new_namespace(api, {"istio.io/rev": "r-b"})
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
                },
            },
        },
    )

    def available() -> bool:
        st = apps.read_namespaced_deployment_status("web", ns).status
        return (st.available_replicas or 0) == 2 and (st.updated_replicas or 0) == 2

    wait_for("deployment web available", available, timeout=90)
    pods = k8s.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app=web").items
    assert len(pods) == 2
    for p in pods:
        assert p.spec.node_name and p.spec.node_name.startswith("kwok-node-")
        assert p.status.phase == "Running"
        assert p.metadata.annotations["istio.io/rev"] == "r-b"
        assert {c.name for c in p.spec.containers} == {"app", "istio-proxy"}
    calls = kube_cluster.admission.injections(ns)  # type: ignore[union-attr]
    assert len(calls) == 2 and {c.revision for c in calls} == {"r-b"}


def test_daemonset_runs_on_every_node(kube_cluster: KubeCluster) -> None:
    api = kube_cluster.api()
    apps = k8s.AppsV1Api(api)
    ns = new_namespace(api)
    labels = {"app": "agent"}
    apps.create_namespaced_daemon_set(
        ns,
        {
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "agent", "image": "example.invalid/a:1"}]},
                },
            },
        },
    )
    nodes = len(k8s.CoreV1Api(api).list_node().items)

    def ready() -> bool:
        st = apps.read_namespaced_daemon_set_status("agent", ns).status
        return st.desired_number_scheduled == nodes and (st.number_ready or 0) == nodes

    wait_for("daemonset agent ready on every node", ready, timeout=90)
    assert nodes >= 2


def test_validating_webhook_is_answered_by_istiod(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """The chart's validator of r-a (labelled objects only) calls r-a's istiod, which refuses invalid config
    with its own message (istiod's validation, not the CRD's schema) and admits valid config."""
    api = kube_cluster.api()
    ns = new_namespace(api)
    custom = k8s.CustomObjectsApi(api)

    def virtual_service(name: str, hosts: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "labels": {"istio.io/rev": "r-a"}},
            "spec": {"hosts": hosts, "http": [{"route": [{"destination": {"host": "web"}}]}]},
        }

    refusal: list[str] = []

    def refused() -> bool:
        try:
            custom.create_namespaced_custom_object(
                "networking.istio.io", "v1", ns, "virtualservices", virtual_service("bad", ["*"]), dry_run="All")
        except ApiException as e:
            refusal[:] = [e.body or ""]
            return "validation.istio.io" in (e.body or "")
        refusal[:] = ["accepted"]
        return False

    try:
        wait_for("istiod's validation refusing a mesh VirtualService for every host", refused, timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer: {refusal}") from None
    assert "wildcard host * is not allowed for virtual services bound to the mesh gateway" in refusal[0]
    custom.create_namespaced_custom_object(
        "networking.istio.io", "v1", ns, "virtualservices", virtual_service("good", ["web"]))


def test_egress_proxy_refuses_non_service_addresses(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """Only Service ClusterIPs are tunnelled (to loopback); anything else gets 502."""
    cp = kube_cluster.control_plane
    assert cp is not None and cp.proxy is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(cp.egress_socket))
        s.sendall(b"CONNECT 10.240.0.1:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 502")
    refused = [c for c in cp.proxy.calls() if c.target == "10.240.0.1:10250"]
    assert refused and not refused[0].forwarded
    # Every webhook call so far went to a Service IP inside SERVICE_CIDR.
    assert all(c.target.startswith("10.96.") for c in cp.proxy.calls() if c.forwarded)


def test_namespace_deletion_completes(kube_cluster: KubeCluster) -> None:
    """Deleting a namespace with running pods finishes (KWOK's pod-delete stage, namespace GC)."""
    api = kube_cluster.api()
    core = k8s.CoreV1Api(api)
    ns = new_namespace(api)
    core.create_namespaced_pod(ns, pod("doomed"))
    wait_for("pod running", lambda: core.read_namespaced_pod("doomed", ns).status.phase == "Running")
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
            return False
        except ApiException as e:
            return e.status == 404

    wait_for(f"namespace {ns} deleted", gone, timeout=90)
    assert core.list_namespaced_pod(ns).items == [], "its pod went with it"
