"""A stack deployed by the previous release upgrades to this one: real engine, real Kubernetes provider, real
API server, on a control plane of its own.

The previous release (commit EARLIER, read from this repository's history) registered per bound namespace a
NamespaceBinding component, a NamespacePatch (field manager `istio-mesh`) and a LegacyInjectionLabel guard
that kept the removed `istio-injection` value in the state. This release holds every binding in one
NamespaceLabels resource. The upgrade's `up` creates that resource and deletes the old ones; nothing may be
lost on the way: no label goes (the old patches give up only their own field manager's share), the removed
legacy value moves onto the namespace (so unbinding later still gives it back), a namespace unbound in the
same `up` gets its legacy label back, and no pod is restarted.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from pulumi import automation as auto

from harness.control_plane import KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.toolchain import REPO_ROOT, Tools, skip_or_fail_missing
from mesh.namespace_labels import FIELD_MANAGER, REMOVED_LEGACY_ANNOTATION
from tests.e2e.cluster_objects import (
    create_deployment,
    create_namespace,
    deployments_settled,
    label_by_hand,
    namespace_labels,
    pod_revisions,
)

EARLIER = "d2f4509"
"""The last commit with one binding component, label patch and legacy-label guard per namespace."""
REVISION = "mig-1-30-0"
PLAIN, LEGACY, UNBOUND = "mig-plain", "mig-legacy", "mig-unbound"
"""Bound throughout; labelled istio-injection=enabled by hand before binding; unbound in the upgrading `up`."""
BINDING, PATCH, GUARD = ("istio-mesh:index:NamespaceBinding", "kubernetes:core/v1:NamespacePatch",
                         "pulumi-python:dynamic/mesh:LegacyInjectionLabel")
LABELS, BINDINGS = "pulumi-python:dynamic/mesh:NamespaceLabels", "istio-mesh:index:NamespaceBindings"
ROLLOUT = "pulumi-python:dynamic/mesh:MeshRollout"


def config(tools: Tools, namespaces: dict[str, str]) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "revisions": {REVISION: {"version": "1.30.0"}},
        "tags": {"default": REVISION, "stable": REVISION},
        "namespaces": namespaces,
        "rollout": {"concurrency": 4, "timeoutSeconds": 180},
    }


def use_release(stack: MeshStack, commit: str | None) -> None:
    """Put the program of `commit` (None: this checkout) in the stack's project, as a user's upgrade does."""
    shutil.rmtree(stack.project / "mesh")
    if commit is None:
        shutil.copytree(REPO_ROOT / "mesh", stack.project / "mesh", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO_ROOT / "__main__.py", stack.project / "__main__.py")
        return
    done = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, "mesh", "__main__.py"],
                          capture_output=True, check=False)
    if done.returncode != 0:
        skip_or_fail_missing(f"the previous release ({commit}) is not in this clone's history: "
                             f"{done.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(stack.project, filter="data")


def steps_of(stack: MeshStack) -> set[str]:
    """A preview's steps other than `same`, as `op type::name`."""
    steps: set[str] = set()

    def record(event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata.op != auto.OpType.SAME:
            steps.add(f"{pre.metadata.op.value} {pre.metadata.type}::{pre.metadata.urn.split('::')[-1]}")

    stack.stack.preview(on_event=record, on_output=stack.log.append, color="never")
    return steps


def metadata(api: k8s.ApiClient, ns: str) -> Any:
    return k8s.CoreV1Api(api).read_namespace(ns).metadata


def rev_owners(api: k8s.ApiClient, ns: str) -> set[str]:
    return {m.manager for m in metadata(api, ns).managed_fields or []
            if "f:istio.io/rev" in ((m.fields_v1 or {}).get("f:metadata") or {}).get("f:labels", {})}


class Migration:
    def __init__(self, cluster: KubeCluster, stack: MeshStack, tools: Tools) -> None:
        self.cluster, self.stack, self.tools = cluster, stack, tools
        self.api = cluster.api()
        self.pods: dict[str, dict[str, str | None]] = {}


@pytest.fixture(scope="module")
def walk(pristine_cluster: KubeCluster, e2e_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Migration:
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("migration"), name="migration")
    return Migration(pristine_cluster, stack, e2e_tools)


def test_1_the_previous_release_deploys_a_resource_per_namespace(walk: Migration) -> None:
    api = walk.api
    for ns in (PLAIN, LEGACY, UNBOUND):
        create_namespace(api, ns)
    label_by_hand(api, LEGACY, {"istio-injection": "enabled"})
    label_by_hand(api, UNBOUND, {"istio-injection": "disabled"})
    use_release(walk.stack, EARLIER)
    walk.stack.write_config(config(walk.tools, {PLAIN: "stable", LEGACY: "stable", UNBOUND: REVISION}))
    walk.stack.up()
    types = [r["type"] for r in walk.stack.resources()]
    assert (types.count(BINDING), types.count(PATCH), types.count(GUARD)) == (3, 3, 3)
    assert LABELS not in types
    assert "istio-injection" not in namespace_labels(api, LEGACY)
    for ns in (PLAIN, LEGACY):
        create_deployment(api, ns, "app", replicas=1)
        wait_for(f"{ns} settled", lambda ns=ns: deployments_settled(api, ns))
    walk.pods = {ns: pod_revisions(api, ns) for ns in (PLAIN, LEGACY)}
    assert {rev for pods in walk.pods.values() for rev in pods.values()} == {REVISION}


def test_2_upgrading_swaps_the_resources_and_loses_nothing(walk: Migration) -> None:
    api = walk.api
    use_release(walk.stack, None)
    walk.stack.write_config(config(walk.tools, {PLAIN: "stable", LEGACY: "stable"}))
    old = {f"delete {t}::{n}" for t in (BINDING, PATCH) for n in (PLAIN, LEGACY, UNBOUND)}
    old |= {f"delete {GUARD}::{n}-legacy-label" for n in (PLAIN, LEGACY, UNBOUND)}
    assert steps_of(walk.stack) == {
        f"create {BINDINGS}::namespaces", f"create {LABELS}::namespace-labels", f"update {ROLLOUT}::data-plane-rollout",
        # The SDK hands the stack config to the dynamic providers' default provider: any config edit updates it.
        "update pulumi:providers:pulumi-python::default",
        # Since the istioctl takeover: the default tag's webhook and Service are kept first (PreviousDefaultTag)
        # and applied with patchForce (an annotation: metadata only, in place).
        "create pulumi-python:dynamic/mesh:PreviousDefaultTag::default-tag-previous-webhook",
        "update kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration::istio-revision-tag-default",
        "update kubernetes:core/v1:Service::istiod-revision-tag-default",
        *old}, "\n".join(walk.stack.log[-60:])

    since = time.time()
    walk.stack.up()
    for ns in (PLAIN, LEGACY):
        assert namespace_labels(api, ns)["istio.io/rev"] == "stable", f"{ns}: the label was never lost"
        assert rev_owners(api, ns) == {FIELD_MANAGER}, "the earlier patch gave up its share only"
    assert "istio-injection" not in namespace_labels(api, LEGACY), "not given back while bound"
    assert metadata(api, LEGACY).annotations[REMOVED_LEGACY_ANNOTATION] == "enabled"
    assert "istio.io/rev" not in namespace_labels(api, UNBOUND)
    assert namespace_labels(api, UNBOUND)["istio-injection"] == "disabled", "unbound: its legacy label given back"
    assert {ns: pod_revisions(api, ns) for ns in (PLAIN, LEGACY)} == walk.pods, "no pod restarted"
    assert walk.cluster.admission is None or not [
        c for c in walk.cluster.admission.injections() if c.time >= since and c.patched]
    types = [r["type"] for r in walk.stack.resources()]
    assert (types.count(BINDING), types.count(PATCH), types.count(GUARD), types.count(LABELS)) == (0, 0, 0, 1)
    assert walk.stack.preview_changes() == {}, "\n".join(walk.stack.log[-60:])


def test_3_unbinding_after_the_upgrade_still_gives_the_removed_label_back(walk: Migration) -> None:
    api = walk.api
    walk.stack.write_config(config(walk.tools, {PLAIN: "stable"}))
    walk.stack.up()
    assert namespace_labels(api, LEGACY).get("istio-injection") == "enabled"
    assert "istio.io/rev" not in namespace_labels(api, LEGACY)
    assert REMOVED_LEGACY_ANNOTATION not in (metadata(api, LEGACY).annotations or {})
    assert namespace_labels(api, PLAIN)["istio.io/rev"] == "stable"
    assert walk.stack.preview_changes() == {}, "\n".join(walk.stack.log[-60:])
