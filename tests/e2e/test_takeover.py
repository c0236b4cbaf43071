"""Taking over a cluster that already runs a revisionless Istio installed with Helm (base + istiod, no
`revision`), as most adopting clusters do: the default tag replaces the old injector without double
injection, the old istiod keeps serving its pods until they move, and dropping the tag gives the old
injector back. The install is made by the Helm CLI from the same charts the program renders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from harness.control_plane import KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from tests.e2e.cluster_objects import (
    create_deployment,
    create_namespace,
    deployments_settled,
    helm,
    namespace_labels,
    pod_revisions,
    scale_up_and_get_new_pods,
)
from tests.e2e.istio_agreement import check_istio_agrees

REV = "1-30-0"
BOUND = "shop"
"""Labelled istio-injection=enabled by the old install's users, and bound to the default tag here."""
UNBOUND = "legacy-only"
"""Labelled istio-injection=enabled and left alone: its pods follow whichever webhook serves that label."""
OLD_INJECTOR = "istio-sidecar-injector"
NEVER_MATCH = {"matchLabels": {"istio.io/deactivated": "never-match"}}
"""istioctl's own selector for a switched-off injector, which the takeover writes too."""


def takeover_config(tools: Tools) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "revisions": {REV: {"version": "1.30.0"}},
        "tags": {"default": REV},
        "namespaces": {BOUND: "default"},
        "rollout": {"concurrency": 2, "timeoutSeconds": 180},
    }


def old_injector(api: k8s.ApiClient) -> dict[str, Any]:
    raw = k8s.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(OLD_INJECTOR,
                                                                                  _preload_content=False)
    return json.loads(raw.data)


def selectors(hook: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(w.get("namespaceSelector"), w.get("objectSelector")) for w in hook["webhooks"]]


class Takeover:
    def __init__(self, cluster: KubeCluster, stack: MeshStack) -> None:
        self.cluster, self.stack, self.api = cluster, stack, cluster.api()
        self.original_selectors: list[tuple[Any, Any]] = []


@pytest.fixture(scope="module")
def takeover(pristine_cluster: KubeCluster, e2e_tools: Tools,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Takeover]:
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("takeover-stack"))
    yield Takeover(pristine_cluster, stack)


def test_1_a_revisionless_helm_install_injects_its_pods(takeover: Takeover) -> None:
    cluster, api = takeover.cluster, takeover.api
    charts = cluster.tools.charts["1.30.0"]
    helm(cluster, "install", "istio-base", str(charts.base), "-n", "istio-system", "--create-namespace")
    helm(cluster, "install", "istiod", str(charts.istiod), "-n", "istio-system",
         "--set", "global.hub=docker.io/istio", "--set", "global.tag=1.30.0")
    for ns in (BOUND, UNBOUND):
        create_namespace(api, ns, {"istio-injection": "enabled"})
    create_deployment(api, BOUND, "web")
    create_deployment(api, UNBOUND, "old-app")
    for ns in (BOUND, UNBOUND):
        wait_for(f"{ns} settled", lambda ns=ns: deployments_settled(api, ns))
        assert set(pod_revisions(api, ns).values()) == {"default"}, "injected by the revisionless istiod"
    takeover.original_selectors = selectors(old_injector(api))
    check_istio_agrees(takeover.cluster, takeover.stack)


def test_2_the_default_tag_takes_over_without_double_injection(takeover: Takeover) -> None:
    cluster, api, stack = takeover.cluster, takeover.api, takeover.stack
    before_unbound = pod_revisions(api, UNBOUND)
    stack.write_config(takeover_config(cluster.tools))
    stack.up()
    hook = old_injector(api)
    assert all(ns == obj == NEVER_MATCH for ns, obj in selectors(hook)), "switched off with istioctl's never-match"
    assert set(pod_revisions(api, BOUND).values()) == {REV}, "the bound namespace moved off the old istiod"
    assert "istio-injection" not in namespace_labels(api, BOUND)
    # The old istiod still runs and still serves the pods it injected; the program reports them.
    assert k8s.AppsV1Api(api).read_namespaced_deployment("istiod", "istio-system").metadata.deletion_timestamp is None
    assert pod_revisions(api, UNBOUND) == before_unbound
    # Counted when the old webhook was switched off, before bound namespaces were restarted.
    takeover_outputs = [r for r in stack.resources() if r["type"].endswith("RevisionlessInjectorTakeover")]
    assert takeover_outputs[0]["outputs"]["revisionless_pods"] == {BOUND: 2, UNBOUND: 2}
    assert any("4 pod(s) still run the revisionless istiod" in line for line in stack.log), stack.log[-40:]
    # A new pod in a legacy-labelled namespace: one webhook call, from the default tag's revision.
    assert cluster.admission is not None
    cluster.admission.clear()
    new = scale_up_and_get_new_pods(api, UNBOUND, "old-app", 3, before_unbound)
    assert list(new.values()) == [REV]
    assert [(c.revision, c.injectors) for c in cluster.admission.injections(UNBOUND)] == [
        (REV, ["istio-revision-tag-default"])], "two webhooks matched one pod"
    assert stack.preview_changes() == {}
    check_istio_agrees(takeover.cluster, takeover.stack)


def test_3_an_old_injector_turned_back_on_is_drift_the_next_up_fixes(takeover: Takeover) -> None:
    """`helm upgrade istiod` re-renders the old webhook, but Helm's three-way merge keeps the never-match
    `matchLabels` it never owned beside the chart's `matchExpressions`: the injector stays off, no change. An
    injector really put back (replaced with its original selectors, as `kubectl replace` would) is drift the
    next `up` fixes."""
    cluster, api, stack = takeover.cluster, takeover.api, takeover.stack
    helm(cluster, "upgrade", "istiod", str(cluster.tools.charts["1.30.0"].istiod), "-n", "istio-system",
         "--reuse-values")
    after_helm = selectors(old_injector(api))
    assert after_helm != takeover.original_selectors
    assert all(ns["matchLabels"] == NEVER_MATCH["matchLabels"] for ns, _ in after_helm), after_helm
    assert stack.preview_changes() == {}, "still switched off: nothing to do"
    check_istio_agrees(cluster, stack)

    hook = old_injector(api)
    for entry, (ns, obj) in zip(hook["webhooks"], takeover.original_selectors, strict=True):
        entry["namespaceSelector"], entry["objectSelector"] = ns, obj
    k8s.AdmissionregistrationV1Api(api).replace_mutating_webhook_configuration(OLD_INJECTOR, hook)
    assert selectors(old_injector(api)) == takeover.original_selectors
    assert stack.preview_changes() == {"update": 1}
    stack.up()
    assert all(ns == obj == NEVER_MATCH for ns, obj in selectors(old_injector(api)))
    assert stack.preview_changes() == {}
    check_istio_agrees(takeover.cluster, takeover.stack)


def test_4_dropping_the_default_tag_gives_the_old_injector_back(takeover: Takeover) -> None:
    cluster, api, stack = takeover.cluster, takeover.api, takeover.stack
    config = takeover_config(cluster.tools)
    config["tags"] = {"stable": REV}
    config["namespaces"] = {BOUND: "stable"}
    stack.write_config(config)
    stack.up()
    assert selectors(old_injector(api)) == takeover.original_selectors
    before = pod_revisions(api, UNBOUND)
    assert cluster.admission is not None
    cluster.admission.clear()
    new = scale_up_and_get_new_pods(api, UNBOUND, "old-app", 4, before)
    assert list(new.values()) == ["default"], "the legacy label is served by the old install again"
    assert [(c.revision, c.injectors) for c in cluster.admission.injections(UNBOUND)] == [
        ("default", [OLD_INJECTOR])]
    assert stack.preview_changes() == {}
    check_istio_agrees(takeover.cluster, takeover.stack)
