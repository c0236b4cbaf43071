"""The upgrade review (pure): config-level changes against the last outputs, and the Rollout's own decisions."""

from __future__ import annotations

from dataclasses import replace

from mesh.drain import Selectors, template_from_object
from mesh.review import (
    DataPlane,
    Deployed,
    Move,
    Review,
    control_plane,
    data_plane,
    left_to_gateways,
    moves,
    refusals,
    selected_after,
    unmanaged_labels,
)
from mesh.rollout_plan import rollout_inputs
from mesh.spec import load_spec
from mesh.webhook_overlap import namespaces_after
from mesh.workloads import Target, Workload, attach_pods, pod_from_object

DEPLOYED = Deployed.from_outputs({
    "revisions": {"1-30-2": {"version": "1.30.2", "proxy": "docker.io/istio/proxyv2:1.30.2"}},
    "tags": {"default": "1-30-2", "stable": "1-30-2"},
    "namespaces": {"payments": "1-30-2", "reporting": "1-30-2"},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "1-30-2"}},
}, rollout_inputs(load_spec({  # the MeshRollout's state after that `up`
    "revisions": {"1-30-2": {"version": "1.30.2"}},
    "tags": {"default": "1-30-2", "stable": "1-30-2"},
    "namespaces": {"payments": "stable", "reporting": {"revision": "stable", "strategy": "natural"}},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable"}},
})))


def spec(**over: object) -> object:
    config = {
        "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
        "tags": {"default": "1-30-2", "stable": "1-30-2", "canary": "1-31-0"},
        "namespaces": {"payments": "canary", "reporting": {"revision": "stable", "strategy": "natural"}},
        "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable"}},
    }
    config.update(over)
    return load_spec(config)


def test_adding_a_canary_and_moving_one_namespace() -> None:
    s = spec()
    assert control_plane(DEPLOYED, s) == [
        "revision `1-31-0` added at 1.31.0",
        "base chart and CRDs 1.30.2 -> 1.31.0",
        "tag `canary`: (none) -> 1-31-0",
    ]
    [move] = moves(DEPLOYED, s)
    assert (move.namespace, move.why, move.strategy) == ("payments", "1-30-2 -> 1-31-0", "rolling")
    assert move.target == Target("1-31-0", "docker.io/istio/proxyv2:1.31.0")


def test_an_in_place_version_change_moves_everything_bound_to_the_revision_by_proxy() -> None:
    s = spec(revisions={"1-30-2": {"version": "1.30.3"}}, tags={"default": "1-30-2", "stable": "1-30-2"},
             namespaces={"payments": "stable", "reporting": {"revision": "stable", "strategy": "natural"}})
    assert "revision `1-30-2` changes in place 1.30.2 -> 1.30.3 (allowed: at most one minor at a time)" in \
        control_plane(DEPLOYED, s)
    found = {(m.namespace, m.workload): m.why for m in moves(DEPLOYED, s)}
    proxy = "proxy docker.io/istio/proxyv2:1.30.2 -> docker.io/istio/proxyv2:1.30.3"
    assert found == {("payments", None): proxy, ("reporting", None): proxy, ("istio-ingress", "ingress"): proxy}


def pod(name: str, rev: str, image: str, rs: str = "rs1") -> dict:
    return {
        "metadata": {"name": name, "namespace": "payments", "uid": name, "annotations": {"istio.io/rev": rev},
                     "ownerReferences": [{"controller": True, "uid": rs}]},
        "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "istio-proxy", "image": image}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def web(name: str, uid: str) -> Workload:
    return Workload(kind="Deployment", namespace="payments", name=name, uid=uid, generation=1,
                    observed_generation=1, desired=2, current=2, updated=2, ready=2, available=2)


def test_the_data_plane_names_the_workloads_the_rollout_would_restart() -> None:
    [move] = moves(DEPLOYED, spec())
    pods = [pod_from_object(pod("a1", "1-30-2", "docker.io/istio/proxyv2:1.30.2", "rsA")),
            pod_from_object(pod("a2", "1-30-2", "docker.io/istio/proxyv2:1.30.2", "rsA")),
            pod_from_object(pod("b1", "1-31-0", "docker.io/istio/proxyv2:1.31.0", "rsB"))]
    workloads = attach_pods([web("api", "A"), web("done", "B")], pods, {"rsA": "A", "rsB": "B"})
    plane = data_plane(move, workloads, pods)
    assert plane.restart == {"Deployment/api": 2}
    review = Review("prod", [], [plane], {}, {}, concurrency=4, timeout_seconds=600)
    assert "`payments`: 1-30-2 -> 1-31-0, rolling: restarts Deployment/api (2 pods)" in review.markdown()
    assert review.estimate() == "1 batch(es) of up to 4 across the stack, at most 600s"


def test_the_estimate_takes_the_stack_wide_budget_and_the_per_namespace_cap() -> None:
    moving = [Move(ns, None, "1-30-2", Target("1-31-0", "docker.io/istio/proxyv2:1.31.0"), "rolling", "")
              for ns in ("a", "b", "c")]
    planes = [DataPlane(m, {f"Deployment/w{i}": 1 for i in range(n)}, 0, 0)
              for m, n in zip(moving, (10, 4, 6), strict=True)]
    assert Review("prod", [], planes, {}, {}, concurrency=5, timeout_seconds=60).estimate() == (
        "4 batch(es) of up to 5 across the stack, at most 240s")  # 20 restarts, 5 at a time
    assert Review("prod", [], planes, {}, {}, concurrency=5, timeout_seconds=60, per_namespace=2).estimate() == (
        "5 batch(es) of up to 5 across the stack (2 per namespace), at most 300s")  # a's 10, 2 at a time


def test_natural_namespaces_report_pending_pods() -> None:
    s = spec(namespaces={"reporting": {"revision": "canary", "strategy": "natural"}})
    [move] = [m for m in moves(DEPLOYED, s) if m.namespace == "reporting"]
    pods = [pod_from_object(pod("r1", "1-30-2", "docker.io/istio/proxyv2:1.30.2"))]
    plane = data_plane(move, [], pods)
    assert plane.pending_pods == 1 and not plane.restart
    md = Review("prod", [], [plane], {}, {}, 4, 600).markdown()
    assert "natural: moves on next deploy, 1 pods pending" in md


def test_removing_a_revision_in_use_says_up_will_refuse() -> None:
    s = load_spec({"revisions": {"1-31-0": {"version": "1.31.0"}}, "tags": {"default": "1-31-0"}})
    deployed = Deployed.from_outputs({"revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}}})
    users = [pod_from_object(pod(f"p{i}", "1-30-2", "x")) for i in range(3)]
    refused = refusals(deployed, s, users)
    assert refused == {"1-30-2": {"payments": 3}}
    md = Review("prod", control_plane(deployed, s), [], refused, {}, 4, 600).markdown()
    assert "revision `1-30-2` removed (was 1.30.2)" in md
    assert "removing `1-30-2`: up will refuse, 3 pods still run it (payments (3))" in md


def test_labels_no_binding_manages_are_named() -> None:
    labelled = {"legacy": {"istio-injection": "enabled"}, "payments": {"istio.io/rev": "canary"}}
    assert unmanaged_labels(labelled, spec()) == {"legacy": "istio-injection=enabled"}


def test_without_a_cluster_the_review_says_what_it_skipped() -> None:
    md = Review("dev", ["tag `canary`: (none) -> 1-31-0"], None, {}, {}, 4, 600, "no kubeconfig").markdown()
    assert "cluster part skipped: no kubeconfig" in md and "not checked (no cluster)" in md


def test_the_platform_profile_and_the_cni_agent_are_reviewed_when_they_change() -> None:
    """Turning CNI on for openshift, then an upgrade that moves the agent, then CNI off again."""
    on = spec(profile="openshift", cni={"enabled": True})
    assert control_plane(DEPLOYED, on)[2:4] == [
        "platform profile: (none) -> openshift (every chart is re-rendered with it)",
        "istio-cni node agent installed at 1.31.0; every revision's pods use it once restarted",
    ]
    deployed_on = Deployed.from_outputs({
        "revisions": {"1-30-2": {"version": "1.30.2"}},
        "platform": {"profile": "openshift", "cni": "1.30.2"},
    })
    upgraded = [line for line in control_plane(deployed_on, on) if "cni" in line or "profile" in line]
    assert upgraded == ["istio-cni node agent 1.30.2 -> 1.31.0 (its DaemonSet rolls node by node)"]
    off = [line for line in control_plane(deployed_on, spec()) if "cni" in line or "profile" in line]
    assert off == [
        "platform profile: openshift -> (none) (every chart is re-rendered with it)",
        "istio-cni node agent removed (was 1.30.2); revisions go back to istio-init",
    ]
    assert not [line for line in control_plane(DEPLOYED, spec()) if "cni" in line or "profile" in line]


def test_a_gateway_in_a_bound_namespace_is_counted_once() -> None:
    """The namespace's entry leaves the gateway's Deployment to the gateway's entry, as the MeshRollout does."""
    s = spec(namespaces={"istio-ingress": "canary"}, gateways={"ingress": {"namespace": "istio-ingress",
                                                                          "revision": "canary"}})
    found = {m.workload: m for m in moves(DEPLOYED, s)}
    assert set(found) == {None, "ingress"}
    ingress = Workload(kind="Deployment", namespace="istio-ingress", name="ingress", uid="G", generation=1,
                       observed_generation=1, desired=1, current=1, updated=1, ready=1, available=1)
    pods = [pod_from_object({**pod("g1", "1-30-2", "docker.io/istio/proxyv2:1.30.2", "rsG"),
                             "metadata": {"name": "g1", "namespace": "istio-ingress", "uid": "g1",
                                          "annotations": {"istio.io/rev": "1-30-2"},
                                          "ownerReferences": [{"controller": True, "uid": "rsG"}]}})]
    [ingress] = attach_pods([ingress], pods, {"rsG": "G"})
    planes = [data_plane(m, [ingress], pods, left_to_gateways(s, m)) for m in found.values()]
    assert [p.restart for p in planes] == [{}, {"Deployment/ingress": 1}]
    assert Review("prod", [], planes, {}, {}, concurrency=4, timeout_seconds=600).restarts == 1


def test_a_paused_deployment_is_named_with_what_up_does_with_it() -> None:
    [move] = [m for m in moves(DEPLOYED, spec()) if m.namespace == "payments"]
    pods = [pod_from_object(pod("a1", "1-30-2", "docker.io/istio/proxyv2:1.30.2", "rsA"))]
    [held] = attach_pods([replace(web("api", "A"), paused=True)], pods, {"rsA": "A"})
    plane = data_plane(move, [held], pods)
    assert (plane.restart, dict(plane.manual)) == ({}, {"Deployment/api": (
        "1 pods not on 1-31-0 (docker.io/istio/proxyv2:1.31.0); Deployment is paused (spec.paused=true): "
        "`kubectl rollout resume deployment/api -n payments`, then `pulumi up` again")})
    md = Review("prod", [], [plane], {}, {}, concurrency=4, timeout_seconds=600).markdown()
    assert "rolling: nothing to restart; refuses Deployment/api (1 pods not on 1-31-0" in md
    assert "up restarts the others, then fails naming them" in md


def test_pods_the_new_revision_would_not_inject_are_left_alone_with_the_reason() -> None:
    values = {"sidecarInjectorWebhook": {"neverInjectSelector": [{"matchLabels": {"app": "batch"}}]}}
    s = spec(revisions={"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0", "values": values}})
    [move] = [m for m in moves(DEPLOYED, s) if m.namespace == "payments"]
    batch = {**pod("b1", "1-30-2", "docker.io/istio/proxyv2:1.30.2", "rsB")}
    batch["metadata"] = {**batch["metadata"], "labels": {"app": "batch"}}
    pods = [pod_from_object(pod("a1", "1-30-2", "docker.io/istio/proxyv2:1.30.2", "rsA")), pod_from_object(batch)]
    workloads = attach_pods([web("api", "A"), replace(web("batch", "B"), template_labels={"app": "batch"})], pods,
                            {"rsA": "A", "rsB": "B"})
    plane = data_plane(move, workloads, pods)
    assert plane.restart == {"Deployment/api": 1}
    assert dict(plane.left_alone) == {"b1": "not injected by 1-31-0: its labels match "
                                            "sidecarInjectorWebhook.neverInjectSelector {app=batch}"}
    md = Review("prod", [], [plane], {}, {}, concurrency=4, timeout_seconds=600).markdown()
    assert ("leaves 1 pods as they are (a restart cannot move them): 1 not injected by 1-31-0: its labels match "
            "sidecarInjectorWebhook.neverInjectSelector {app=batch}") in md


def test_removing_a_revision_still_selected_by_labels_says_up_will_refuse() -> None:
    """No pod runs 1-30-2, but a namespace labelled by hand and a CronJob still select it once the change is
    applied; a namespace the change rebinds and the stack's own gateway Deployment do not."""
    s = load_spec({"revisions": {"1-31-0": {"version": "1.31.0"}}, "tags": {"default": "1-31-0"},
                   "namespaces": {"payments": "1-31-0"},
                   "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "1-31-0"}}})
    deployed = Deployed.from_outputs({"revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
                                      "namespaces": {"payments": "1-30-2"}})
    live = {"payments": {"istio.io/rev": "1-30-2"}, "batch": {"istio.io/rev": "1-30-2"}}
    templates = [
        template_from_object("CronJob", {"metadata": {"namespace": "jobs", "name": "nightly"}, "spec": {
            "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"istio.io/rev": "1-30-2"}}}}}}}),
        template_from_object("Deployment", {"metadata": {"namespace": "istio-ingress", "name": "ingress"}, "spec": {
            "template": {"metadata": {"labels": {"istio.io/rev": "1-30-2"}}}}}),
    ]
    found = selected_after(deployed, s, namespaces_after(s, deployed.namespaces, live), templates)
    assert found == {"1-30-2": Selectors(namespaces=["batch"], templates={"jobs": ["CronJob/nightly"]})}
    md = Review("prod", control_plane(deployed, s), [], {}, {}, 4, 600, selected=found).markdown()
    assert ("removing `1-30-2`: up will refuse, still selected by namespace `batch` (istio.io/rev=1-30-2), "
            "pod template `jobs/CronJob/nightly`") in md
    assert "nothing found" not in md
