"""Taking over a cluster installed with the real `istioctl install`, from the two istioctl starting points:

* `revisionless`: `istioctl install` (no revision). istioctl itself creates `istio-revision-tag-default`
  (revision `default`, field manager `istio-operator`) and switches `istio-sidecar-injector` off with its
  never-match selector;
* `revision-and-tag`: `istioctl install --revision X` (which makes a default tag on X when there is none)
  then `istioctl tag set default --revision X --overwrite`.

Each starts on a cluster of its own. The stack then points the default tag at its own revision (the same
1.31 snapshot istioctl embeds): `up` must take istioctl's tag webhook over without a field-manager conflict,
a new pod of a legacy-labelled namespace must be injected once, by the stack's revision, through the tag
webhook; removing `tags.default` must give back exactly the injection webhooks that were there before (read
back equal, apart from metadata the API server owns) and new pods of that namespace are served by istioctl's
revision again. istioctl's own tools agree after every step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from harness.control_plane import ControlPlane, KubeCluster, wait_for
from harness.istio_checks import istioctl
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from tests.e2e.cluster_objects import (
    create_deployment,
    create_namespace,
    deployments_settled,
    pod_revisions,
    scale_up_and_get_new_pods,
)
from tests.e2e.istio_agreement import check_istio_agrees

REV = "1-31-0"
ISTIOCTL_REV = "ictl"
BOUND = "shop"
UNBOUND = "legacy-only"
TAG_WEBHOOK = "istio-revision-tag-default"
SERVER_OWNED = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")
"""Metadata the API server writes: left out when objects are compared before and after."""


class Start:
    """One starting point: how istioctl installed it, and what serves legacy-labelled namespaces before."""

    def __init__(self, name: str, cluster: KubeCluster, stack: MeshStack) -> None:
        self.name, self.cluster, self.stack, self.api = name, cluster, stack, cluster.api()
        self.original_revision = "default" if name == "revisionless" else ISTIOCTL_REV
        self.before: dict[str, dict[str, Any]] = {}
        self.injectors_before: list[str] = []


def injection_webhooks(api: k8s.ApiClient) -> dict[str, dict[str, Any]]:
    """Every mutating webhook configuration, as read, without the metadata the API server owns."""
    raw = k8s.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration(_preload_content=False)
    found = {}
    for item in json.loads(raw.data)["items"]:
        item["metadata"] = {k: v for k, v in item["metadata"].items() if k not in SERVER_OWNED}
        found[item["metadata"]["name"]] = item
    return found


def config(tools: Tools, tags: dict[str, str], namespaces: dict[str, str]) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "revisions": {REV: {"version": "1.31.0"}},
        "tags": tags,
        "namespaces": namespaces,
        "rollout": {"concurrency": 2, "timeoutSeconds": 180},
    }


@pytest.fixture(scope="module", params=["revisionless", "revision-and-tag"])
def start(request: pytest.FixtureRequest, e2e_tools: Tools,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    """A cluster of its own per starting point (`pristine_cluster` is module-scoped: one per module, so the
    second starting point starts its own control plane here)."""
    if e2e_tools.existing_kubeconfig is not None:
        pytest.skip("needs clusters of its own")
    cp = ControlPlane(e2e_tools)
    cp.start()
    cluster = KubeCluster(cp.kubeconfig, e2e_tools, cp)
    try:
        stack = MeshStack(e2e_tools, cp.kubeconfig, tmp_path_factory.mktemp(f"istioctl-{request.param}"))
        yield Start(request.param, cluster, stack)
    finally:
        if cluster._api is not None:
            cluster._api.close()
        cp.stop()


def test_1_istioctl_installs_and_injects(start: Start) -> None:
    cluster, api = start.cluster, start.api
    if start.name == "revisionless":
        istioctl(cluster, "install", "-y", "--set", "profile=minimal")
    else:
        istioctl(cluster, "install", "-y", "--set", "profile=minimal", "--set", f"revision={ISTIOCTL_REV}")
        # istioctl install --revision makes a default tag itself when there is none; `tag set` is what the
        # upgrade docs have users run (and what re-points it), so it is run as they would.
        istioctl(cluster, "tag", "set", "default", "--revision", ISTIOCTL_REV, "--overwrite", "--skip-confirmation")
    assert cluster.istiod is not None
    cluster.istiod.wait_serving(start.original_revision)
    hooks = injection_webhooks(api)
    tag = hooks[TAG_WEBHOOK]
    assert tag["metadata"]["labels"]["istio.io/rev"] == start.original_revision
    if start.name == "revisionless":
        assert all(w["namespaceSelector"] == {"matchLabels": {"istio.io/deactivated": "never-match"}}
                   for w in hooks["istio-sidecar-injector"]["webhooks"]), "istioctl switched the old injector off"
    for ns in (BOUND, UNBOUND):
        create_namespace(api, ns, {"istio-injection": "enabled"})
    create_deployment(api, BOUND, "web")
    create_deployment(api, UNBOUND, "old-app")
    for ns in (BOUND, UNBOUND):
        wait_for(f"{ns} settled", lambda ns=ns: deployments_settled(api, ns), timeout=180)
        assert set(pod_revisions(api, ns).values()) == {start.original_revision}
    wait_for("istiod's caBundle in the tag webhook",
             lambda: all(w["clientConfig"].get("caBundle") for w in injection_webhooks(api)[TAG_WEBHOOK]["webhooks"]))
    start.before = injection_webhooks(api)
    check_istio_agrees(cluster, start.stack, tags={"default": start.original_revision})


def test_2_the_default_tag_is_taken_over_without_conflict_or_double_injection(start: Start) -> None:
    cluster, api, stack = start.cluster, start.api, start.stack
    before_unbound = pod_revisions(api, UNBOUND)
    stack.write_config(config(cluster.tools, {"default": REV}, {BOUND: "default"}))
    stack.up()
    tag = injection_webhooks(api)[TAG_WEBHOOK]
    assert tag["metadata"]["labels"]["istio.io/rev"] == REV
    assert {w["clientConfig"]["service"]["name"] for w in tag["webhooks"]} == {f"istiod-{REV}"}
    assert set(pod_revisions(api, BOUND).values()) == {REV}, "the bound namespace moved"
    assert pod_revisions(api, UNBOUND) == before_unbound, "nothing unbound restarted"
    assert cluster.admission is not None
    cluster.admission.clear()
    new = scale_up_and_get_new_pods(api, UNBOUND, "old-app", 3, before_unbound)
    assert list(new.values()) == [REV]
    assert [(c.revision, c.injectors) for c in cluster.admission.injections(UNBOUND)] == [
        (REV, [TAG_WEBHOOK])], "one webhook injected the new pod"
    assert stack.preview_changes() == {}
    check_istio_agrees(cluster, stack)


def test_3_removing_the_default_tag_gives_back_what_istioctl_made(start: Start) -> None:
    cluster, api, stack = start.cluster, start.api, start.stack
    stack.write_config(config(cluster.tools, {"stable": REV}, {BOUND: "stable"}))
    stack.up()
    after = injection_webhooks(api)
    for name, hook in start.before.items():
        assert after.get(name) == hook, f"{name} is not as istioctl left it"
    before = pod_revisions(api, UNBOUND)
    assert cluster.admission is not None
    cluster.admission.clear()
    new = scale_up_and_get_new_pods(api, UNBOUND, "old-app", 4, before)
    assert list(new.values()) == [start.original_revision], "istioctl's revision serves the legacy label again"
    assert [(c.revision, c.injectors) for c in cluster.admission.injections(UNBOUND)] == [
        (start.original_revision, [TAG_WEBHOOK])]
    assert stack.preview_changes() == {}
    check_istio_agrees(cluster, stack, tags={"default": start.original_revision, "stable": REV})
