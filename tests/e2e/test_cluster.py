"""Tests of the e2e harness itself: the control plane, KWOK and the webhook route.

The injection webhooks are the hand-built ones of ``harness.fake_revision`` (the selectors of
Istio's ``istio-sidecar-injector-<rev>``), so the apiserver, not the stand-in, decides which
revision is called.
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
from harness.fake_revision import HUB, ISTIO_NS, create_or_keep, install_fake_revision, revision_webhook
from tests.e2e.cluster_objects import new_namespace

pytestmark = pytest.mark.e2e


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }


@pytest.fixture(scope="module")
def revisions(kube_cluster: KubeCluster) -> Iterator[dict[str, str]]:
    """Two fake revisions, `r-a` (1.30.0) and `r-b` (1.31.0)."""
    if kube_cluster.injector is None:
        pytest.skip("existing cluster: no stand-in injector to observe")
    api = kube_cluster.api()
    create_or_keep(k8s.CoreV1Api(api).create_namespace, {"metadata": {"name": ISTIO_NS}})
    revs = {"r-a": "1.30.0", "r-b": "1.31.0"}
    for rev, tag in revs.items():
        install_fake_revision(api, rev, tag)
    # The apiserver learns webhook configurations through an informer: wait until each
    # revision's webhook injects (dry-run pods: webhooks with sideEffects None still run).
    core = k8s.CoreV1Api(api)
    for rev in revs:
        probe_ns = new_namespace(api, {"istio.io/rev": rev})

        def injected(ns: str = probe_ns, rev: str = rev) -> bool:
            p = core.create_namespaced_pod(ns, pod("probe"), dry_run="All")
            return (p.metadata.annotations or {}).get("istio.io/rev") == rev

        wait_for(f"webhook of revision {rev} active", injected, timeout=30)
    yield revs
    adm = k8s.AdmissionregistrationV1Api(api)
    for rev in revs:
        adm.delete_mutating_webhook_configuration(f"istio-sidecar-injector-{rev}")


def test_namespace_label_selects_revision_webhook(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    api = kube_cluster.api()
    core = k8s.CoreV1Api(api)
    ns = new_namespace(api, {"istio.io/rev": "r-a"})
    created = core.create_namespaced_pod(ns, pod("web"))

    annotations = created.metadata.annotations or {}
    assert annotations.get("istio.io/rev") == "r-a"
    status = json.loads(annotations["sidecar.istio.io/status"])
    assert status["revision"] == "r-a"
    proxies = [c for c in created.spec.containers if c.name == "istio-proxy"]
    assert [c.image for c in proxies] == [f"{HUB}/proxyv2:1.30.0"]

    calls = kube_cluster.injector.injections(ns)  # type: ignore[union-attr]
    assert [(c.revision, c.service, c.name, c.patched) for c in calls] == [
        ("r-a", f"{ISTIO_NS}/istiod-r-a", "web", True)
    ]
    assert calls[0].server_name == f"istiod-r-a.{ISTIO_NS}.svc"


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
    assert [c.revision for c in kube_cluster.injector.injections(bound)] == ["r-a"]  # type: ignore[union-attr]


def test_tag_webhook_injects_the_revision_it_points_to(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """A tag is only a webhook calling istiod-<rev>: the pod gets that revision, not the tag."""
    api = kube_cluster.api()
    adm = k8s.AdmissionregistrationV1Api(api)
    adm.create_mutating_webhook_configuration(revision_webhook("r-b", tag="prod"))
    try:
        core = k8s.CoreV1Api(api)
        ns = new_namespace(api, {"istio.io/rev": "prod"})

        def injected() -> bool:
            p = core.create_namespaced_pod(ns, pod("probe"), dry_run="All")
            return "istio.io/rev" in (p.metadata.annotations or {})

        wait_for("tag webhook active", injected, timeout=30)
        created = core.create_namespaced_pod(ns, pod("tagged"))
        assert created.metadata.annotations["istio.io/rev"] == "r-b"
        calls = [c for c in kube_cluster.injector.injections(ns) if c.name == "tagged"]  # type: ignore[union-attr]
        assert [(c.revision, c.service) for c in calls] == [("r-b", f"{ISTIO_NS}/istiod-r-b")]
    finally:
        adm.delete_mutating_webhook_configuration("istio-revision-tag-prod")


def test_inject_false_is_not_injected(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    api = kube_cluster.api()
    core = k8s.CoreV1Api(api)
    ns = new_namespace(api, {"istio.io/rev": "r-a"})
    created = core.create_namespaced_pod(ns, pod("opt-out", {"sidecar.istio.io/inject": "false"}))
    assert "istio.io/rev" not in (created.metadata.annotations or {})
    assert [c.name for c in created.spec.containers] == ["app"]
    assert kube_cluster.injector.injections(ns) == []  # type: ignore[union-attr]
    # No label at all: no webhook matches either.
    plain = new_namespace(api)
    created = core.create_namespaced_pod(plain, pod("plain"))
    assert [c.name for c in created.spec.containers] == ["app"]
    assert kube_cluster.injector.injections(plain) == []  # type: ignore[union-attr]


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
    calls = kube_cluster.injector.injections(ns)  # type: ignore[union-attr]
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


def test_validating_webhook_reaches_validate(kube_cluster: KubeCluster, revisions: dict[str, str]) -> None:
    """istiod's validation path answers allowed (a Fail policy would block otherwise)."""
    api = kube_cluster.api()
    adm = k8s.AdmissionregistrationV1Api(api)
    ns = new_namespace(api, {"e2e-validate": "yes"})
    name = f"istio-validator-r-a-{ns}"
    adm.create_validating_webhook_configuration(
        {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "rev.validation.istio.io",
                    "clientConfig": {
                        "service": {
                            "name": "istiod-r-a",
                            "namespace": ISTIO_NS,
                            "path": "/validate",
                            "port": 443,
                        }
                    },
                    "rules": [
                        {
                            "operations": ["CREATE", "UPDATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["configmaps"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"e2e-validate": "yes"}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                }
            ],
        }
    )
    try:
        # Webhook configurations reach the admission plugin through an informer: retry
        # until the call shows up.
        core = k8s.CoreV1Api(api)
        seen: list[Any] = []

        def validated() -> bool:
            core.create_namespaced_config_map(ns, {"metadata": {"generateName": "cm-"}, "data": {"k": "v"}})
            seen[:] = [
                c
                for c in kube_cluster.injector.calls()  # type: ignore[union-attr]
                if c.path == "/validate" and c.namespace == ns
            ]
            return bool(seen)

        wait_for("a /validate call", validated, timeout=30)
        assert seen[0].revision == "r-a" and seen[0].kind == "ConfigMap"
    finally:
        adm.delete_validating_webhook_configuration(name)


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
