"""Workloads and namespaces in the e2e cluster, made and read the way users and controllers do."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from harness.control_plane import KubeCluster, wait_for


def pod_revisions(api: k8s.ApiClient, namespace: str) -> dict[str, str | None]:
    """uid -> revision that injected the pod (None: not injected), for live pods."""
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace).items
    return {
        p.metadata.uid: (p.metadata.annotations or {}).get("istio.io/rev")
        for p in pods
        if p.metadata.deletion_timestamp is None and p.status.phase != "Succeeded"
    }


def create_namespace(api: k8s.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels or {}}})


def label_by_hand(api: k8s.ApiClient, namespace: str, labels: dict[str, str | None]) -> None:
    """What `kubectl label ns <namespace> k=v` does: an Update under kubectl's own field manager."""
    k8s.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": labels}}, field_manager="kubectl-label")


def namespace_labels(api: k8s.ApiClient, namespace: str) -> dict[str, str]:
    return k8s.CoreV1Api(api).read_namespace(namespace).metadata.labels or {}


def scale_up_and_get_new_pods(api: k8s.ApiClient, namespace: str, deployment: str, replicas: int,
                              before: dict[str, str | None]) -> dict[str, str | None]:
    k8s.AppsV1Api(api).patch_namespaced_deployment_scale(deployment, namespace, {"spec": {"replicas": replicas}})
    wait_for(f"{namespace} scale-up", lambda: deployments_settled(api, namespace))
    return {u: r for u, r in pod_revisions(api, namespace).items() if u not in before}


def create_deployment(api: k8s.ApiClient, namespace: str, name: str, replicas: int = 2) -> None:
    labels = {"app": name}
    k8s.AppsV1Api(api).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
                },
            },
        },
    )


def deployments_settled(api: k8s.ApiClient, namespace: str) -> bool:
    """Every Deployment rolled out and only its current pods left."""
    for d in k8s.AppsV1Api(api).list_namespaced_deployment(namespace).items:
        s, want = d.status, d.spec.replicas
        if (
            (s.observed_generation or 0) < d.metadata.generation
            or (s.updated_replicas or 0) != want
            or (s.available_replicas or 0) != want
            or (s.replicas or 0) != want
        ):
            return False
    return len(pod_revisions(api, namespace)) == sum(
        d.spec.replicas for d in k8s.AppsV1Api(api).list_namespaced_deployment(namespace).items
    )


def restart_deployments(api: k8s.ApiClient, namespace: str) -> None:
    """What `kubectl rollout restart deployment -n <ns>` does."""
    apps = k8s.AppsV1Api(api)
    stamp = datetime.now(UTC).isoformat()
    for d in apps.list_namespaced_deployment(namespace).items:
        apps.patch_namespaced_deployment(
            d.metadata.name,
            namespace,
            {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
        )
    wait_for(f"{namespace} to roll out", lambda: deployments_settled(api, namespace))


def new_namespace(api: k8s.ApiClient, labels: dict[str, str] | None = None) -> str:
    """A fresh namespace, returned once its default ServiceAccount exists (pods need it)."""
    core = k8s.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})

    def has_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except ApiException:
            return False

    wait_for(f"default ServiceAccount in {name}", has_sa)
    return name


def helm(cluster: KubeCluster, *args: str) -> str:
    """The toolchain's `helm` against the cluster; its output (a failure fails the test, with helm's words)."""
    assert cluster.tools.helm is not None
    done = subprocess.run([str(cluster.tools.helm), *args], env=cluster.env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout
