"""Istio's upgrade rules in `mesh review`, end to end, before `up`: a revision moved in place 1.30 -> 1.31 under a
pod pinned to a 1.29 proxy (`sidecar.istio.io/proxyImage`, honoured by the real istiod). The review, Markdown and
`--json`, shows both the skew violation (the pod, its namespace, and that a restart keeps its proxy) and the
behaviour flags the 1.31 chart flips after 1.30 with how to keep them. Both rules only warn, so `up` proceeds;
afterwards the cluster is as the warnings said: the pinned pod still runs its 1.29 proxy under istiod 1.31, the
others were restarted onto 1.31, and the revision's istiod runs without the 1.30 values of the listed flags.

A stack and a control plane of its own (`pristine_cluster`); one `up` to install, one for the change.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from harness.admission_log import lists
from harness.control_plane import KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from tests.e2e.cluster_objects import deployments_settled, new_namespace

REVISION = "stable"
PINNED_PROXY = "docker.io/istio/proxyv2:1.29.0"
"""One minor behind istiod 1.30 (in skew), two behind 1.31 (out of skew)."""
KEEP = "proxy image set by hand (sidecar.istio.io/proxyImage)"


def config(tools: Tools, version: str) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "hub": "docker.io/istio",
        "revisions": {REVISION: {"version": version}},
        "rollout": {"concurrency": 4, "timeoutSeconds": 180},
    }


def deployment(api: k8s.ApiClient, namespace: str, name: str, annotations: dict[str, str]) -> None:
    k8s.AppsV1Api(api).create_namespaced_deployment(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                              "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}},
    })


def proxies(api: k8s.ApiClient, namespace: str) -> dict[str, tuple[str, str | None, str | None]]:
    """Live pods by name: (uid, revision that injected it, its istio-proxy image)."""
    found = {}
    for p in k8s.CoreV1Api(api).list_namespaced_pod(namespace).items:
        if p.metadata.deletion_timestamp is None and p.status.phase not in ("Succeeded", "Failed"):
            images = [c.image for c in [*(p.spec.init_containers or []), *p.spec.containers] if c.name == "istio-proxy"]
            found[p.metadata.name] = (p.metadata.uid, (p.metadata.annotations or {}).get("istio.io/rev"),
                                      images[0] if images else None)
    return found


def review(stack: MeshStack) -> tuple[str, dict[str, Any]]:
    """`mesh review` as Markdown and as `--json`; both exit 0 (these rules warn, they do not refuse)."""
    md, js = stack.review(), stack.review("--json")
    assert md.returncode == 0, md.stdout + md.stderr
    assert js.returncode == 0, js.stdout + js.stderr
    return md.stdout, json.loads(js.stdout)


def istiod_env(api: k8s.ApiClient) -> dict[str, str | None]:
    d = k8s.AppsV1Api(api).read_namespaced_deployment(f"istiod-{REVISION}", "istio-system")
    [discovery] = [c for c in d.spec.template.spec.containers if c.name == "discovery"]
    return {e.name: e.value for e in discovery.env or []}


def test_skew_and_behaviour_flags_show_in_the_review_before_up(
        pristine_cluster: KubeCluster, e2e_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> None:
    api = pristine_cluster.api()
    ns = new_namespace(api)
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("checks-stack"), name="checks")
    stack.write_config({**config(e2e_tools, "1.30.0"), "namespaces": {ns: REVISION}})
    stack.up()
    # Upstream (README, "Upstream behaviour"): the Kubernetes provider watches Events in every namespace while it
    # awaits a cluster-scoped object it created or updated (its event aggregator), so an `up` that touches one
    # lists all the cluster's Events. When this fails, the provider stopped doing it: update the README.
    assert pristine_cluster.admission is not None  # a control plane of its own: its audit log
    events_lists = lists(pristine_cluster.admission.path, "events")
    assert "" in {ns for ns, agent in events_lists if "pulumi" in agent.lower()}, events_lists
    deployment(api, ns, "web", {})
    deployment(api, ns, "pinned", {"sidecar.istio.io/proxyImage": PINNED_PROXY})
    wait_for(f"{ns} settled", lambda: deployments_settled(api, ns))
    before = proxies(api, ns)
    [pinned] = [name for name in before if name.startswith("pinned-")]
    [web] = [name for name in before if name.startswith("web-")]
    assert before[pinned][1:] == (REVISION, PINNED_PROXY) and before[web][1:] == (
        REVISION, "docker.io/istio/proxyv2:1.30.0"), before

    # The change: 1.30 -> 1.31 in place. Reviewed before any `up`.
    stack.write_config({**config(e2e_tools, "1.31.0"), "namespaces": {ns: REVISION}})
    markdown, data = review(stack)
    checks = data["checks"]
    assert checks["refusals"] == [] and checks["skipped"] == [], checks
    [skew] = [w for w in checks["warnings"] if w["rule"] == "version-skew"]
    assert skew["key"] == f"revisions.{REVISION}.version", skew
    assert skew["details"]["pods"] == {ns: [pinned]}, skew
    assert skew["details"]["kept"] == {ns: {pinned: KEEP}} and skew["details"]["restarted"] == [], skew
    assert f"{ns}: 1 pods (proxy 1.29.0; a restart keeps their proxy ({KEEP}): change that to move them)" in \
        skew["message"], skew
    [flags] = [w for w in checks["warnings"] if w["rule"] == "behaviour-changes"]
    profile = yaml.safe_load((e2e_tools.cache / "istio-1.31.0" / "charts" / "istiod" / "files" /
                              "profile-compatibility-version-1.30.yaml").read_text())
    flipped = {f"pilot.env.{k}": v for k, v in profile["pilot"]["env"].items()}
    assert flags["key"] == f"revisions.{REVISION}" and flags["details"]["keep"] == "1.30", flags
    assert {path: f["old"] for path, f in flags["details"]["flags"].items()} == flipped, flags
    assert f'set revisions.{REVISION}.values.compatibilityVersion to "1.30"' in flags["message"], flags
    # The Markdown carries the same two warnings, and the data plane names what `up` restarts and leaves.
    section = markdown.split("#### Checks\n", 1)[1]
    for finding in (skew, flags):
        assert f"- warning: `istio-mesh:{finding['key']}`: {finding['message']}" in section, section
    assert f"- `{ns}`: proxy docker.io/istio/proxyv2:1.30.0 -> docker.io/istio/proxyv2:1.31.0, rolling: restarts " \
           "Deployment/web (1 pods)" in markdown, markdown
    assert proxies(api, ns) == before, "the review changed nothing"

    # The rules only warn: `up` proceeds, and the cluster ends as the warnings said.
    stack.up()
    wait_for(f"{ns} settled", lambda: deployments_settled(api, ns))
    after = proxies(api, ns)
    assert after[pinned] == before[pinned], after  # kept on its 1.29 proxy, out of skew under istiod 1.31
    [new_web] = [name for name in after if name.startswith("web-")]
    assert new_web != web and after[new_web][1:] == (REVISION, "docker.io/istio/proxyv2:1.31.0"), after
    assert stack.outputs()["revisions"][REVISION]["version"] == "1.31.0"
    env = istiod_env(api)
    assert all(env.get(k) != v for k, v in profile["pilot"]["env"].items()), env
