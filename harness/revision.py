"""An istiod revision installed the way `helm install` does, for the harness's own tests and benchmarks.

Where driving the program through Pulumi would be beside the point (the webhook route, the providers on
their own, benchmarks), a revision is the real ``istiod`` chart of the toolchain rendered with
``helm template`` and applied server-side, after the ``base`` chart's CRDs. The local control plane
then runs a real istiod for it (``istiod.py``), which patches its webhooks' ``caBundle`` and answers
them: :func:`install_revision` returns once the revision's webhook injects.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from harness.control_plane import KubeCluster, wait_for

ISTIO_NS = "istio-system"
HUB = "docker.io/istio"


def render(cluster: KubeCluster, chart: Path, release: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` of one chart into istio-system, as objects."""
    assert cluster.tools.helm is not None
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        out = subprocess.run(
            [str(cluster.tools.helm), "template", release, str(chart), "--namespace", ISTIO_NS, "-f", f.name,
             "--include-crds"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def apply(cluster: KubeCluster, objects: list[dict[str, Any]]) -> None:
    """Server-side apply, as Helm 3.18 does it with --server-side (field manager `helm`)."""
    subprocess.run(
        [str(cluster.tools.kubectl), f"--kubeconfig={cluster.kubeconfig}", "apply", "--server-side",
         "--force-conflicts", "--field-manager=helm", "-f", "-"],
        input=yaml.safe_dump_all(objects), capture_output=True, text=True, check=True, timeout=180,
    )


def delete(cluster: KubeCluster, objects: list[dict[str, Any]]) -> None:
    """Delete what `apply` created (CRDs and the namespace excepted)."""
    keep = {"CustomResourceDefinition", "Namespace"}
    subprocess.run(
        [str(cluster.tools.kubectl), f"--kubeconfig={cluster.kubeconfig}", "delete", "--ignore-not-found",
         "--wait=false", "-f", "-"],
        input=yaml.safe_dump_all([o for o in objects if o["kind"] not in keep]),
        capture_output=True, text=True, check=True, timeout=180,
    )


def revision_objects(cluster: KubeCluster, rev: str, version: str, tags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The istiod chart of `version` rendered for revision `rev` (and its `tags`' webhooks)."""
    values = {"revision": rev, "revisionTags": list(tags), "global": {"hub": HUB, "tag": version}}
    return render(cluster, cluster.tools.charts[version].istiod, f"istiod-{rev}", values)


def install_base(cluster: KubeCluster, version: str) -> None:
    """Istio's CRDs and base objects (no default revision): what every istiod needs to start."""
    core = k8s.CoreV1Api(cluster.api())
    if not core.list_namespace(field_selector=f"metadata.name={ISTIO_NS}").items:
        core.create_namespace({"metadata": {"name": ISTIO_NS}})
    apply(cluster, render(cluster, cluster.tools.charts[version].base, "istio-base", {}))


def wait_injects(cluster: KubeCluster, label: dict[str, str], revision: str, timeout: float = 120.0) -> None:
    """Wait until a pod in a namespace with `label` is injected by `revision` (dry run, nothing kept)."""
    core = k8s.CoreV1Api(cluster.api())
    ns = core.create_namespace({"metadata": {"generateName": "probe-", "labels": label}}).metadata.name
    probe = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}

    def injected() -> bool:
        try:
            pod = core.create_namespaced_pod(ns, probe, dry_run="All")
        except k8s.ApiException:  # istiod not serving yet, or caBundle not patched yet
            return False
        return (pod.metadata.annotations or {}).get("istio.io/rev") == revision

    try:
        wait_for(f"revision {revision} injecting pods of {label}", injected, timeout=timeout, interval=1.0)
    finally:
        core.delete_namespace(ns)


def install_revision(cluster: KubeCluster, rev: str, version: str) -> list[dict[str, Any]]:
    """Base (if needed) and revision `rev` at chart `version`; returns once its istiod injects."""
    install_base(cluster, version)
    objects = revision_objects(cluster, rev, version)
    apply(cluster, objects)
    wait_injects(cluster, {"istio.io/rev": rev}, rev)
    return objects


def wait_ready_for_pods(cluster: KubeCluster, revisions: tuple[str, ...], tag: str, namespaces: list[str]) -> None:
    """Before a benchmark creates pods in `namespaces` sent to `tag`: every revision's istiod serves, the tag's
    webhook trusts it (istiod wrote its caBundle) and each namespace has its default ServiceAccount. Pods created
    before that are refused, and their controllers' backoff would be timed as the program's."""
    assert cluster.istiod is not None
    for rev in revisions:
        cluster.istiod.wait_serving(rev)
    api = cluster.api()
    hooks, core = k8s.AdmissionregistrationV1Api(api), k8s.CoreV1Api(api)
    webhook = f"istio-revision-tag-{tag}"
    wait_for("the tag's webhook trusts istiod (caBundle)", lambda: all(
        w.client_config.ca_bundle for w in hooks.read_mutating_webhook_configuration(webhook).webhooks))
    for ns in namespaces:
        wait_for(f"ServiceAccount of {ns}", lambda ns=ns: bool(
            core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items))
