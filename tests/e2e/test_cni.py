"""istio-cni on the OpenShift profile, end to end: the real cni chart rendered and applied (its DaemonSet's
pods run on the KWOK nodes and get Ready), every revision rendered for CNI with Multus, a
NetworkAttachmentDefinition `istio-cni` in each bound namespace (another attachment there is never
touched, unbinding removes ours), the SCC grants, and a short canary walk with CNI on: add a revision
(istio-cni follows it), move every namespace to it through a tag, drop the old one.

The local control plane is no OpenShift: the NetworkAttachmentDefinition CRD (Multus's, which OpenShift
ships) is installed here first, minimal; the SCC grants are plain RBAC RoleBindings to OpenShift's SCC
ClusterRoles, which need no `security.openshift.io` API to be applied, only to be enforced (not tested).
Runs on a control plane of its own: its stack owns istio-base, as every stack owns its cluster's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from harness.control_plane import KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from tests.e2e.cluster_objects import create_deployment, create_namespace, deployments_settled, pod_revisions
from tests.e2e.istio_agreement import check_istio_agrees

OLD, NEW = "1-30-0", "1-31-0"
SHOP, OTHER = "cni-shop", "cni-other"
GATEWAY, GATEWAY_NS = "cni-ingress", "cni-gw"
FOREIGN = "macvlan-conf"
"""An attachment somebody else made in a bound namespace: never ours to change."""
NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
DAEMONSET, CNI_NS = "istio-cni-node", "kube-system"


def config(tools: Tools, revisions: dict[str, str], tags: dict[str, str],
           namespaces: dict[str, str]) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "profile": "openshift",
        "cni": {"enabled": True},
        "revisions": {name: {"version": v} for name, v in revisions.items()},
        "tags": tags,
        "namespaces": namespaces,
        "gateways": {GATEWAY: {"namespace": GATEWAY_NS, "revision": "stable", "service": {"type": "ClusterIP"}}},
        "rollout": {"concurrency": 4, "timeoutSeconds": 180},
    }


def install_nad_crd(api: k8s.ApiClient) -> None:
    """Multus's CRD as OpenShift ships it, reduced to what the API server needs to store attachments."""
    ext = k8s.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition({
        "metadata": {"name": f"{NAD_PLURAL}.{NAD_GROUP}"},
        "spec": {
            "group": NAD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": NAD_PLURAL, "singular": "network-attachment-definition",
                      "kind": "NetworkAttachmentDefinition", "shortNames": ["net-attach-def"]},
            "versions": [{"name": NAD_VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    })

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{NAD_PLURAL}.{NAD_GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    wait_for("NetworkAttachmentDefinition CRD established", established)


def attachments(api: k8s.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    """name -> (uid, spec) of the namespace's NetworkAttachmentDefinitions."""
    found = k8s.CustomObjectsApi(api).list_namespaced_custom_object(NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL)
    return {o["metadata"]["name"]: {"uid": o["metadata"]["uid"], "spec": o.get("spec")} for o in found["items"]}


def cni_agent_ready(api: k8s.ApiClient, version: str) -> bool:
    """The DaemonSet rolled out at `version` on every node, each pod Ready."""
    ds = k8s.AppsV1Api(api).read_namespaced_daemon_set(DAEMONSET, CNI_NS)
    s = ds.status
    images = {c.image for c in ds.spec.template.spec.containers}
    pods = k8s.CoreV1Api(api).list_namespaced_pod(CNI_NS, label_selector="k8s-app=istio-cni-node").items
    ready = [p for p in pods if p.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    nodes = len(k8s.CoreV1Api(api).list_node().items)
    return (
        images == {f"docker.io/istio/install-cni:{version}"}
        and (s.observed_generation or 0) >= ds.metadata.generation
        and s.desired_number_scheduled == nodes
        and (s.updated_number_scheduled or 0) == nodes
        and (s.number_ready or 0) == nodes
        and len(ready) == nodes
    )


def injector_values(api: k8s.ApiClient, revision: str) -> dict[str, Any]:
    cm = k8s.CoreV1Api(api).read_namespaced_config_map(f"istio-sidecar-injector-{revision}", "istio-system")
    return json.loads(cm.data["values"])


def role_binding_subjects(api: k8s.ApiClient, namespace: str, name: str) -> tuple[str, list[tuple[str, str]]]:
    rb = k8s.RbacAuthorizationV1Api(api).read_namespaced_role_binding(name, namespace)
    return rb.role_ref.name, [(s.kind, s.name) for s in rb.subjects]


class Walk:
    def __init__(self, cluster: KubeCluster, stack: MeshStack) -> None:
        self.cluster, self.stack, self.api = cluster, stack, cluster.api()
        self.shop_attachments: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def walk(pristine_cluster: KubeCluster, e2e_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("cni-stack"))
    yield Walk(pristine_cluster, stack)


def test_1_openshift_with_cni_runs_the_agent_and_gives_bound_namespaces_their_attachment(walk: Walk) -> None:
    api, stack = walk.api, walk.stack
    install_nad_crd(api)
    for ns in (SHOP, OTHER):
        create_namespace(api, ns)
        wait_for(f"default ServiceAccount in {ns}",
                 lambda ns=ns: bool(k8s.CoreV1Api(api).list_namespaced_service_account(ns).items))
        create_deployment(api, ns, "web", replicas=1)
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(NAD_GROUP, NAD_VERSION, SHOP, NAD_PLURAL, {
        "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": FOREIGN}, "spec": {"config": '{"cniVersion": "0.3.1", "type": "macvlan"}'},
    })
    foreign_before = attachments(api, SHOP)[FOREIGN]

    stack.write_config(config(walk.cluster.tools, {OLD: "1.30.0"}, {"stable": OLD}, {SHOP: "stable", OTHER: "stable"}))
    stack.up()

    wait_for("istio-cni ready on every KWOK node", lambda: cni_agent_ready(api, "1.30.0"))
    # The chart's own attachment (its injector names default/istio-cni), and ours per bound namespace.
    assert "istio-cni" in attachments(api, "default")
    for ns in (SHOP, OTHER):
        assert "istio-cni" in attachments(api, ns), ns
        assert set(pod_revisions(api, ns).values()) == {OLD}, "moved onto the revision"
    assert attachments(api, SHOP)[FOREIGN] == foreign_before, "another attachment is never touched"
    walk.shop_attachments = attachments(api, SHOP)
    # The revision is rendered for CNI with Multus: its injector leaves redirection to istio-cni.
    values = injector_values(api, OLD)
    assert values["pilot"]["cni"]["enabled"] is True and values["pilot"]["cni"]["provider"] == "multus"
    assert values["global"]["platform"] == "openshift"
    # OpenShift's grants: anyuid for the control plane's namespace and the gateway's service account.
    assert role_binding_subjects(api, "istio-system", "istio-mesh-scc-anyuid") == (
        "system:openshift:scc:anyuid", [("Group", "system:serviceaccounts:istio-system")])
    assert role_binding_subjects(api, GATEWAY_NS, f"istio-mesh-scc-anyuid-{GATEWAY}") == (
        "system:openshift:scc:anyuid", [("ServiceAccount", GATEWAY)])
    assert stack.preview_changes() == {}
    check_istio_agrees(walk.cluster, walk.stack)


def test_2_adding_a_revision_moves_istio_cni_to_its_version(walk: Walk) -> None:
    api, stack = walk.api, walk.stack
    stack.write_config(config(walk.cluster.tools, {OLD: "1.30.0", NEW: "1.31.0"}, {"stable": OLD, "canary": NEW},
                              {SHOP: "stable", OTHER: "stable"}))
    assert stack.outputs()["platform"] == {"profile": "openshift", "cni": "1.30.0"}
    review = stack.review()
    assert "istio-cni node agent 1.30.0 -> 1.31.0 (its DaemonSet rolls node by node)" in review.stdout, (
        review.stdout + review.stderr)
    stack.up()
    assert stack.outputs()["platform"] == {"profile": "openshift", "cni": "1.31.0"}
    wait_for("istio-cni rolled to 1.31.0 on every KWOK node", lambda: cni_agent_ready(api, "1.31.0"))
    assert injector_values(api, NEW)["pilot"]["cni"]["enabled"] is True
    for ns in (SHOP, OTHER):
        assert set(pod_revisions(api, ns).values()) == {OLD}, "adding a revision moves no pod"
    assert attachments(api, SHOP) == walk.shop_attachments
    check_istio_agrees(walk.cluster, walk.stack)


def test_3_moving_the_tag_moves_every_namespace_and_keeps_their_attachments(walk: Walk) -> None:
    api, stack = walk.api, walk.stack
    stack.write_config(config(walk.cluster.tools, {OLD: "1.30.0", NEW: "1.31.0"}, {"stable": NEW, "canary": NEW},
                              {SHOP: "stable", OTHER: "stable"}))
    stack.up()
    for ns in (SHOP, OTHER, GATEWAY_NS):
        wait_for(f"{ns} settled", lambda ns=ns: deployments_settled(api, ns))
        assert set(pod_revisions(api, ns).values()) == {NEW}, ns
    assert attachments(api, SHOP) == walk.shop_attachments, "the attachments were neither replaced nor touched"
    check_istio_agrees(walk.cluster, walk.stack)


def test_4_dropping_the_old_revision_and_unbinding_a_namespace_removes_only_its_attachment(walk: Walk) -> None:
    api, stack = walk.api, walk.stack
    stack.write_config(config(walk.cluster.tools, {NEW: "1.31.0"}, {"stable": NEW, "canary": NEW}, {SHOP: "stable"}))
    stack.up()
    with pytest.raises(ApiException) as gone:
        k8s.AppsV1Api(api).read_namespaced_deployment(f"istiod-{OLD}", "istio-system")
    assert gone.value.status == 404
    assert "istio-cni" not in attachments(api, OTHER), "unbinding removes its attachment"
    assert attachments(api, SHOP) == walk.shop_attachments, "the bound namespace keeps both, untouched"
    assert cni_agent_ready(api, "1.31.0")
    assert stack.preview_changes() == {}
    check_istio_agrees(walk.cluster, walk.stack)
