"""Planning rules of the MeshRollout: what to restart, when a rollout is done, when to give up."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest
from pulumi.runtime.rpc import UNKNOWN

from mesh.injection import InjectorPolicy
from mesh.istio_vocabulary import INJECT_KEY
from mesh.providers.rollout import MeshRolloutProvider, NamespaceReader, RolloutError, roll, snapshot_of
from mesh.proxy_image import PodProxy
from mesh.restart_budget import Schedule
from mesh.workloads import (
    RESTARTED_AT,
    RESTARTED_FOR,
    RESTARTED_FOR_PROXY,
    UNINJECTED,
    Action,
    Pod,
    RolloutRun,
    Target,
    Workload,
    attach_pods,
    decide,
    describe_wait,
    opted_out,
    pod_from_object,
    restart_patch,
    revision_report,
    waiting_for,
    workload_from_object,
)

NS = "shop"
TARGETS = {rev: Target(rev, f"docker.io/istio/proxyv2:{version}")
           for rev, version in (("a", "1.30.0"), ("b", "1.31.0"), ("c", "1.31.0"))}
"""Revisions the tests move between, each with the proxy image it injects now."""
B = TARGETS["b"]
OLD_B = "docker.io/istio/proxyv2:1.30.9"
"""What b injected before an in-place upgrade."""


def pods(*revisions: str | None, owner: str = "uid", **kw: Any) -> tuple[Pod, ...]:
    """Pods injected by `revisions` (None: not injected), each with the proxy image that revision injects now."""
    return tuple(
        Pod(NS, f"p{i}", rev, owner, kw.get("injectable", True), kw.get("live", True), kw.get("problem"),
            PodProxy(image=TARGETS[rev].proxy_image) if rev else PodProxy())
        for i, rev in enumerate(revisions)
    )


def stale_pods(revision: str, n: int, owner: str = "uid", injectable: bool = True) -> tuple[Pod, ...]:
    """Pods injected by `revision` before its in-place upgrade: the old proxy image."""
    return tuple(Pod(NS, f"old{i}", revision, owner, injectable, True, proxy=PodProxy(OLD_B)) for i in range(n))


def deployment(name: str = "web", *revisions: str | None, **kw: Any) -> Workload:
    """A complete Deployment whose pods run `revisions` (one pod each)."""
    n = len(revisions)
    base = Workload(
        kind="Deployment",
        namespace=NS,
        name=name,
        uid=f"uid-{name}",
        generation=2,
        observed_generation=2,
        desired=n,
        current=n,
        updated=n,
        ready=n,
        available=n,
        pods=pods(*revisions, owner=f"uid-{name}"),
    )
    return replace(base, **kw)


def restarting(w: Workload, revision: str, proxy_image: str | None = None) -> Workload:
    """The same workload just after our restart patch for `revision`, not yet observed by its controller."""
    annotations = {
        **w.template_annotations,
        RESTARTED_FOR: revision,
        RESTARTED_FOR_PROXY: proxy_image or TARGETS[revision].proxy_image,
        RESTARTED_AT: "now",
    }
    return replace(w, generation=w.generation + 1, template_annotations=annotations)


def rolled(w: Workload, revision: str) -> Workload:
    """The workload once its rollout completed: every pod recreated and injected by `revision`."""
    return replace(w, observed_generation=w.generation, pods=pods(*[revision] * len(w.pods), owner=w.uid))


# --- reading API objects ---------------------------------------------------------------------


def api_deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": NS, "uid": "d1", "generation": 3},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {RESTARTED_FOR: "b", RESTARTED_FOR_PROXY: "i"}},
                "spec": {},
            }
        },
        "status": status,
    }


def test_deployment_numbers_and_default_replicas() -> None:
    w = workload_from_object(
        "Deployment",
        api_deployment(observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1),
    )
    assert (w.desired, w.current, w.updated, w.available) == (1, 2, 1, 1)
    assert (w.generation, w.observed_generation) == (3, 2)
    assert w.restarted_for == Target("b", "i")
    assert w.key == "Deployment/web"


def test_deployment_progress_deadline_is_reported() -> None:
    obj = api_deployment(observedGeneration=3, replicas=1, updatedReplicas=1)
    obj["status"]["conditions"] = [
        {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "RS web-1 timed out"}
    ]
    assert waiting_for(workload_from_object("Deployment", obj)) == ("progress deadline exceeded: RS web-1 timed out")


def test_daemonset_uses_scheduled_numbers() -> None:
    obj = {
        "metadata": {"name": "agent", "namespace": NS, "uid": "ds", "generation": 1},
        "spec": {"template": {}},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "updatedNumberScheduled": 2,
            "numberAvailable": 3,
        },
    }
    w = workload_from_object("DaemonSet", obj)
    assert (w.desired, w.updated, w.available) == (3, 2, 3)
    assert waiting_for(w) == "2 of 3 pods updated"


@pytest.mark.parametrize(
    ("strategy", "manual"),
    [
        ({"type": "OnDelete"}, "updateStrategy OnDelete"),
        ({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}, "rollingUpdate.partition=2"),
        ({"type": "RollingUpdate"}, None),
    ],
)
def test_statefulset_update_strategies_that_do_not_roll(strategy: dict, manual: str | None) -> None:
    obj = {
        "metadata": {"name": "db", "namespace": NS, "uid": "s", "generation": 1},
        "spec": {"replicas": 3, "updateStrategy": strategy, "template": {}},
        "status": {},
    }
    assert workload_from_object("StatefulSet", obj).manual_update == manual


def test_pod_reading() -> None:
    obj = {
        "metadata": {
            "name": "web-1",
            "namespace": NS,
            "annotations": {"istio.io/rev": "a"},
            "ownerReferences": [
                {"uid": "other", "controller": False},
                {"uid": "rs1", "controller": True},
            ],
        },
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available",
                }
            ],
        },
    }
    pod = pod_from_object(obj)
    assert (pod.revision, pod.owner_uid, pod.injectable, pod.live) == ("a", "rs1", True, True)
    assert pod.problem == "Unschedulable: 0/2 nodes are available"


@pytest.mark.parametrize(
    ("meta", "spec", "status", "injectable", "live"),
    [
        ({"labels": {INJECT_KEY: "false"}}, {}, {}, False, True),
        ({"annotations": {INJECT_KEY: "false"}}, {}, {}, False, True),
        ({"labels": {INJECT_KEY: "true"}, "annotations": {INJECT_KEY: "false"}}, {}, {}, True, True),
        ({"labels": {INJECT_KEY: "maybe"}, "annotations": {INJECT_KEY: "false"}}, {}, {}, True, True),
        ({"annotations": {INJECT_KEY: "FALSE"}}, {}, {}, True, True),
        ({}, {"hostNetwork": True}, {}, False, True),
        ({"deletionTimestamp": "2026-01-01T00:00:00Z"}, {}, {}, True, False),
        ({}, {}, {"phase": "Succeeded"}, True, False),
        ({"labels": {INJECT_KEY: "true"}}, {}, {"phase": "Running"}, True, True),
    ],
)
def test_pod_injectable_and_live(meta: dict, spec: dict, status: dict, injectable: bool, live: bool) -> None:
    pod = pod_from_object({"metadata": {"name": "p", **meta}, "spec": spec, "status": status})
    assert (pod.injectable, pod.live) == (injectable, live)


@pytest.mark.parametrize(
    ("labels", "annotations", "opted"),
    [
        ({}, {}, False),
        ({INJECT_KEY: "false"}, {}, True),
        ({}, {INJECT_KEY: "false"}, True),
        ({INJECT_KEY: "true"}, {INJECT_KEY: "false"}, False),  # the label beats the annotation
        ({INJECT_KEY: "false"}, {INJECT_KEY: "true"}, True),
        ({INJECT_KEY: ""}, {INJECT_KEY: "false"}, False),  # a label present, even empty, replaces the annotation
        ({}, {INJECT_KEY: "False"}, False),  # only the exact "false" counts
        ({}, {INJECT_KEY: "no"}, False),
    ],
)
def test_opt_out_precedence_as_istiod_decides_it(labels: dict, annotations: dict, opted: bool) -> None:
    """istio/istio pkg/kube/inject/inject.go injectRequired; templates and pods follow the same rule."""
    assert opted_out(labels, annotations) is opted
    assert deployment("web", "a", template_labels=labels, template_annotations=annotations).opted_out is opted


def test_pod_reading_finds_the_proxy_in_containers_or_as_a_native_sidecar() -> None:
    proxy = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.1"}
    app = {"name": "app", "image": "registry.example/app:1"}
    sidecar = pod_from_object({"metadata": {}, "spec": {"containers": [app, proxy]}})
    native = pod_from_object({"metadata": {}, "spec": {"initContainers": [proxy], "containers": [app]}})
    assert sidecar.proxy == native.proxy == PodProxy("docker.io/istio/proxyv2:1.30.1")
    assert pod_from_object({"metadata": {}, "spec": {"containers": [app]}}).proxy == PodProxy()
    annotated = pod_from_object({
        "metadata": {"annotations": {"sidecar.istio.io/proxyImage": "registry.example/own/proxyv2:x",
                                     "sidecar.istio.io/proxyImageType": "debug"}},
        "spec": {"containers": [app, proxy]},
    })
    assert annotated.proxy == PodProxy("docker.io/istio/proxyv2:1.30.1", "registry.example/own/proxyv2:x", "debug")


def test_ready_pod_has_no_problem_and_unready_one_says_why() -> None:
    ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    waiting = {
        "phase": "Pending",
        "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}],
    }
    assert pod_from_object({"metadata": {}, "status": ready}).problem is None
    assert pod_from_object({"metadata": {}, "status": waiting}).problem == "container app ImagePullBackOff"


def test_attach_pods_follows_owner_references_through_replicasets() -> None:
    web, db = deployment("web"), replace(deployment("db"), kind="StatefulSet")
    found = [
        Pod(NS, "web-a", "a", "rs-web", True, True),
        Pod(NS, "db-0", "a", "uid-db", True, True),
        Pod(NS, "bare", "a", None, True, True),
        Pod(NS, "orphan-rs", "a", "rs-orphan", True, True),
    ]
    out = {w.name: [p.name for p in w.pods] for w in attach_pods([web, db], found, {"rs-web": "uid-web"})}
    assert out == {"web": ["web-a"], "db": ["db-0"]}


# --- completion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, None),
        ({"observed_generation": 1}, "controller has not observed generation 2 yet (observed 1)"),
        ({"paused": True}, "rollout is paused (spec.paused=true)"),
        ({"updated": 1}, "1 of 2 replicas updated"),
        ({"current": 3}, "1 old replicas pending termination"),
        ({"available": 1}, "1 of 2 updated replicas available"),
    ],
)
def test_deployment_completion(change: dict, expected: str | None) -> None:
    assert waiting_for(replace(deployment("web", "a", "a"), **change)) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, None),
        ({"update_revision": "db-2", "current_revision": "db-1"}, "3 of 3 pods at the new revision"),
        ({"updated": 2}, "2 of 3 pods at the new revision"),
        ({"ready": 2}, "2 of 3 pods ready"),
        ({"available": 2}, "2 of 3 pods available"),
        ({"manual_update": "updateStrategy OnDelete"}, "pods are only replaced when deleted (updateStrategy OnDelete)"),
    ],
)
def test_statefulset_completion(change: dict, expected: str | None) -> None:
    sts = replace(deployment("db", "a", "a", "a"), kind="StatefulSet", update_revision="db-2", current_revision="db-2")
    assert waiting_for(replace(sts, **change)) == expected


def test_daemonset_completion_needs_every_scheduled_pod_available() -> None:
    ds = replace(deployment("agent", "a", "a"), kind="DaemonSet")
    assert waiting_for(ds) is None
    assert waiting_for(replace(ds, available=1)) == "1 of 2 pods available"


def test_describe_wait_names_the_pod_problem() -> None:
    w = replace(
        deployment("web", "a"),
        available=0,
        pods=pods("b", owner="uid-web", problem="Unschedulable: 0/2 nodes match"),
    )
    assert describe_wait(w) == "0 of 1 updated replicas available; pod p0: Unschedulable: 0/2 nodes match"


# --- what to restart -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "action", "reason_part"),
    [
        (deployment("web", "a", "a"), Action.RESTART, "2 of 2 pods not on b"),
        (deployment("web", "b", None), Action.RESTART, "1 of 2 pods not on b"),
        (deployment("web", "b", "b"), Action.SKIP, "all pods already run b"),
        (deployment("web"), Action.SKIP, "no running pods"),
        (replace(deployment("web", "a"), template_labels={INJECT_KEY: "false"}), Action.SKIP, "opted out"),
        (replace(deployment("web", "a"), template_annotations={INJECT_KEY: "false"}), Action.SKIP, "opted out"),
        (replace(deployment("web", "a"), host_network=True), Action.SKIP, "hostNetwork"),
        (replace(deployment("web", "a"), manual_update="updateStrategy OnDelete"), Action.MANUAL, "OnDelete"),
        # a paused Deployment never rolls: refused up front, as `kubectl rollout restart` refuses it
        (replace(deployment("web", "a"), paused=True), Action.MANUAL,
         "Deployment is paused (spec.paused=true): `kubectl rollout resume deployment/web -n shop`"),
        (replace(restarting(deployment("web", "a"), "b"), paused=True), Action.MANUAL, "paused"),
        (replace(deployment("web", "b"), paused=True), Action.SKIP, "all pods already run b"),
        (restarting(deployment("web", "a"), "b"), Action.WAIT, "already in progress"),
        # a restart for b that completed long ago, pods since recreated elsewhere: restart again
        (replace(deployment("web", "a"), template_annotations={RESTARTED_FOR: "b"}), Action.RESTART, "not on b"),
        # an in-flight restart for another revision does not count as ours
        (restarting(deployment("web", "a"), "c"), Action.RESTART, "not on b"),
        # in place: the revision stayed, the image it injects changed
        (replace(deployment("web", "b", "b"), pods=stale_pods("b", 2, owner="uid-web")), Action.RESTART,
         "2 of 2 pods not on b"),
        (replace(deployment("web", "b"), pods=(*pods("b", owner="uid-web"), *stale_pods("b", 1, owner="uid-web"))),
         Action.RESTART, "1 of 2 pods not on b"),
        # a restart for b's previous image, still rolling when the image changed again: restart for the new one
        (restarting(replace(deployment("web", "b"), pods=stale_pods("b", 1, owner="uid-web")), "b", OLD_B),
         Action.RESTART, "1 of 1 pods not on b"),
        (restarting(replace(deployment("web", "b"), pods=stale_pods("b", 1, owner="uid-web")), "b"),
         Action.WAIT, "already in progress"),
        # a restart stamped by a version of the program that did not record the image is not ours
        (replace(restarting(deployment("web", "a"), "b"),
                 template_annotations={RESTARTED_FOR: "b", RESTARTED_AT: "then"}), Action.RESTART, "not on b"),
        # proxies chosen by hand, or given by digest alone, are left as they are
        (replace(deployment("web", "b"), pods=(
            Pod(NS, "p0", "b", "uid-web", True, True, proxy=PodProxy(OLD_B, pinned="registry.example/own/p:1")),
            Pod(NS, "p1", "b", "uid-web", True, True, proxy=PodProxy("docker.io/istio/proxyv2@sha256:0f")),
        )), Action.SKIP, "all pods already run b"),
        # an opted-out pod of the old proxy in a workload that is not opted out: nothing to do for it
        (replace(deployment("web", "b"), pods=(*pods("b", owner="uid-web"),
                                             *stale_pods("b", 1, owner="uid-web", injectable=False))),
         Action.SKIP, "all pods already run b"),
    ],
)
def test_decide(workload: Workload, action: Action, reason_part: str) -> None:
    decision = decide(workload, B)
    assert decision.action is action
    assert reason_part in decision.reason


def test_terminating_and_uninjectable_pods_do_not_need_a_restart() -> None:
    w = replace(
        deployment("web", "b"),
        pods=(*pods("b", owner="x"), Pod(NS, "old", "a", "x", True, False), Pod(NS, "job", None, "x", False, True)),
    )
    assert decide(w, B).action is Action.SKIP


def test_restart_patch_is_kubectls_plus_our_revision_stamp() -> None:
    annotations = {RESTARTED_AT: "2026-01-01T00:00:00Z", RESTARTED_FOR: "b", RESTARTED_FOR_PROXY: B.proxy_image}
    patch = restart_patch(B, "2026-01-01T00:00:00Z")
    assert patch == {"spec": {"template": {"metadata": {"annotations": annotations}}}}


# --- the run ---------------------------------------------------------------------------------


def namespace(n: int, revision: str = "a", prefix: str = "w") -> dict[str, Workload]:
    ws = [deployment(f"{prefix}{i}", revision) for i in range(n)]
    return {w.key: w for w in ws}


def test_run_keeps_at_most_concurrency_in_flight_and_refills_as_they_finish() -> None:
    snap = namespace(5)
    run = RolloutRun(B, concurrency=2, timeout_seconds=60)
    run.plan(snap.values(), now=0)
    first = run.tick(snap, now=0)
    assert [w.name for w in first] == ["w0", "w1"]
    snap.update({w.key: restarting(w, "b") for w in first})
    assert run.tick(snap, now=1) == []  # both still rolling
    snap["Deployment/w0"] = rolled(snap["Deployment/w0"], "b")
    second = run.tick(snap, now=2)
    assert [w.name for w in second] == ["w2"]
    assert run.done == ["Deployment/w0"]
    assert len(run.in_flight) == 2
    assert not run.finished


def test_run_restarts_each_workload_once_and_finishes() -> None:
    snap = namespace(3)
    run = RolloutRun(B, concurrency=10, timeout_seconds=60)
    run.plan(snap.values(), now=0)
    started = run.tick(snap, now=0)
    snap.update({w.key: rolled(restarting(w, "b"), "b") for w in started})
    assert run.tick(snap, now=1) == []
    assert run.finished
    assert run.restarted == ["Deployment/w0", "Deployment/w1", "Deployment/w2"]
    assert run.failure_message(NS) is None


def test_resumed_run_waits_on_in_flight_restarts_and_skips_finished_ones() -> None:
    """What a second run sees after an interrupted one: w0 done, w1 mid-rollout, w2 untouched."""
    snap = namespace(3)
    snap["Deployment/w0"] = rolled(restarting(snap["Deployment/w0"], "b"), "b")
    snap["Deployment/w1"] = restarting(snap["Deployment/w1"], "b")
    run = RolloutRun(B, concurrency=1, timeout_seconds=60)
    run.plan(snap.values(), now=0)
    assert run.skipped == {"Deployment/w0": f"all pods already run {B}"}
    assert list(run.in_flight) == ["Deployment/w1"]
    assert run.tick(snap, now=0) == []  # the one slot is taken by w1's rollout
    snap["Deployment/w1"] = rolled(snap["Deployment/w1"], "b")
    assert [w.name for w in run.tick(snap, now=1)] == ["w2"]
    assert run.restarted == ["Deployment/w2"]


def test_queued_workload_that_moved_meanwhile_is_not_restarted() -> None:
    snap = namespace(2)
    run = RolloutRun(B, concurrency=1, timeout_seconds=60)
    run.plan(snap.values(), now=0)
    run.tick(snap, now=0)
    snap["Deployment/w0"] = rolled(restarting(snap["Deployment/w0"], "b"), "b")
    snap["Deployment/w1"] = rolled(snap["Deployment/w1"], "b")  # someone else restarted it
    assert run.tick(snap, now=1) == []
    assert run.finished
    assert run.skipped == {"Deployment/w1": f"all pods already run {B}"}
    assert run.total == 1


def test_stuck_workload_times_out_stops_new_restarts_and_is_reported() -> None:
    snap = namespace(4)
    run = RolloutRun(B, concurrency=2, timeout_seconds=30)
    run.plan(snap.values(), now=0)
    started = run.tick(snap, now=0)
    snap.update({w.key: restarting(w, "b") for w in started})
    w0 = snap["Deployment/w0"]
    snap["Deployment/w0"] = replace(
        w0,
        observed_generation=w0.generation,
        updated=0,
        pods=pods("a", owner=w0.uid, problem="Unschedulable: no node matches"),
    )
    snap["Deployment/w1"] = rolled(snap["Deployment/w1"], "b")
    [w2] = run.tick(snap, now=10)
    snap[w2.key] = restarting(w2, "b")
    assert run.tick(snap, now=29) == []
    assert run.tick(snap, now=31) == []  # w0 failed: nothing new starts although a slot is free
    assert "Deployment/w0" in run.failed
    assert not run.finished  # w2 is still in flight and is waited for
    snap[w2.key] = rolled(snap[w2.key], "b")
    assert run.tick(snap, now=32) == []
    assert run.finished
    message = run.failure_message(NS)
    assert message is not None
    assert (
        "Deployment/w0: timed out after 30s: 0 of 1 replicas updated; pod p0: Unschedulable: no node matches"
    ) in message
    assert "not restarted after the failure: Deployment/w3" in message
    assert "done: 2 of 4" in message


def test_rollout_that_ends_on_the_old_proxy_image_fails_and_points_at_the_injector() -> None:
    snap = {w.key: replace(w, pods=stale_pods("b", 1, owner=w.uid)) for w in namespace(1, "b").values()}
    run = RolloutRun(B, concurrency=1, timeout_seconds=30)
    run.plan(snap.values(), now=0)
    w = run.tick(snap, now=0)[0]
    snap[w.key] = replace(restarting(w, "b"), observed_generation=w.generation + 1)  # re-injected from old values
    run.tick(snap, now=1)
    assert run.failed["Deployment/w0"] == (
        f"rolled out, but 1 pods run b ({OLD_B}) instead of {B}: does istiod of b inject from its current "
        "config (configmap istio-sidecar-injector-b: global.hub, global.proxy.image, global.variant)?"
    )


def test_rollout_that_ends_on_the_wrong_revision_fails() -> None:
    snap = namespace(1)
    run = RolloutRun(B, concurrency=1, timeout_seconds=30)
    run.plan(snap.values(), now=0)
    w = run.tick(snap, now=0)[0]
    snap[w.key] = rolled(restarting(w, "b"), "a")  # the namespace label still points at a
    run.tick(snap, now=1)
    assert run.finished
    assert "rolled out, but 1 pods run a instead of b" in run.failed["Deployment/w0"]


def test_manual_workloads_make_the_run_fail_with_a_hint() -> None:
    sts = replace(deployment("db", "a"), kind="StatefulSet", manual_update="updateStrategy OnDelete")
    run = RolloutRun(B, concurrency=1, timeout_seconds=30)
    run.plan([sts], now=0)
    assert run.tick({sts.key: sts}, now=0) == []
    assert run.finished
    assert f"StatefulSet/db: 1 pods not on {B}; updateStrategy OnDelete: delete them" in (run.failure_message(NS) or "")


def test_deleted_workload_counts_as_done() -> None:
    snap = namespace(1)
    run = RolloutRun(B, concurrency=1, timeout_seconds=30)
    run.plan(snap.values(), now=0)
    run.tick(snap, now=0)
    run.tick({}, now=1)
    assert run.finished and run.done == ["Deployment/w0"]


def test_revision_report_counts_live_injectable_pods_by_revision() -> None:
    found = (
        *pods("a", "a", "b", None),
        Pod(NS, "gone", "a", None, True, False),
        Pod(NS, "opted-out", None, None, False, True),
    )
    report = revision_report(found, B)
    assert (report.on_target, report.on_other) == (1, 3)
    assert report.others() == {"a": 2, UNINJECTED: 1}
    assert report.summary("shop") == (
        f"shop: 3 pods still run other revisions ((not injected): 1, a: 2), 1 run {B}; they move when next recreated"
    )
    assert revision_report(pods("b"), B).summary("shop") == f"shop: all 1 pods run {B}"


def test_revision_report_counts_stale_proxies_and_names_the_ones_left_alone() -> None:
    """What a `natural` namespace reports after an in-place upgrade of its revision."""
    found = (
        *pods("b", "b", "a"),
        *stale_pods("b", 3, owner="x"),
        Pod(NS, "pinned", "b", "x", True, True, proxy=PodProxy(OLD_B, pinned="registry.example/own/proxyv2:1")),
        Pod(NS, "by-digest", "b", "x", True, True, proxy=PodProxy("docker.io/istio/proxyv2@sha256:ab")),
    )
    report = revision_report(found, B)
    assert (report.on_target, report.stale_proxies, report.on_other) == (4, 3, 1)
    assert report.summary("shop") == (
        f"shop: 1 pods still run other revisions (a: 1), 3 run b with another proxy image, 4 run {B}; "
        "they move when next recreated"
    )
    assert report.left_alone == {
        "by-digest": "proxy image given by digest alone (no tag to compare)",
        "pinned": "proxy image set by hand (sidecar.istio.io/proxyImage)",
    }
    assert report.left_alone_summary("shop") == (
        "shop: proxies left alone: by-digest: proxy image given by digest alone (no tag to compare); "
        "pinned: proxy image set by hand (sidecar.istio.io/proxyImage)"
    )
    assert revision_report(pods("b"), B).left_alone_summary("shop") is None


# --- the provider around the plan --------------------------------------------------------------


def entry(revision: str = "a", strategy: str = "rolling", proxy_image: str | None = None) -> dict[str, str]:
    return {"revision": revision, "proxy_image": proxy_image or TARGETS[revision].proxy_image, "strategy": strategy}


def props(namespaces: dict[str, dict[str, str]], gateways: dict[str, dict[str, str]] | None = None,
          **settings: Any) -> dict[str, Any]:
    return {"namespaces": namespaces, "gateways": gateways or {}, "concurrency": 2.0, "per_namespace": 0.0,
            "timeout_seconds": 300.0, **settings}


OLDS = props({NS: entry("a"), "other": entry("a")}, {"edge/ingress": entry("a")})


@pytest.mark.parametrize(
    ("news", "changes"),
    [
        (OLDS, False),
        ({**OLDS, "concurrency": 8.0, "per_namespace": 2.0, "timeout_seconds": 900.0}, False),  # next rollout only
        (props({NS: entry("b"), "other": entry("a")}, OLDS["gateways"]), True),
        (props({NS: entry("a", "natural"), "other": entry("a")}, OLDS["gateways"]), True),
        (props({NS: entry("a")}, OLDS["gateways"]), True),  # unbound: recorded, so a later rebind moves again
        (props({**OLDS["namespaces"], "new": entry("a")}, OLDS["gateways"]), True),
        (props(OLDS["namespaces"], {"edge/ingress": entry("b")}), True),
        ({**OLDS, "namespaces": UNKNOWN}, True),
        (props({NS: entry("a", proxy_image="docker.io/istio/proxyv2:1.30.1"), "other": entry("a")}, OLDS["gateways"]),
         True),  # in place: new version, hub or variant
    ],
)
def test_rollout_diff_is_a_change_of_entries_only(news: dict, changes: bool) -> None:
    result = MeshRolloutProvider().diff("mesh-rollout", OLDS, news)
    assert (result.changes, result.replaces) == (changes, [])


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({}, []),
        ({"namespaces": {NS: entry("a", "fast")}}, [f"namespaces.{NS}.strategy"]),
        ({"gateways": {"edge/ingress": {**entry("a"), "proxy_image": ""}}}, ["gateways.edge/ingress.proxy_image"]),
        ({"concurrency": 0.0}, ["concurrency"]),
        ({"per_namespace": -1.0}, ["per_namespace"]),
        ({"timeout_seconds": "soon"}, ["timeout_seconds"]),
        ({"namespaces": {NS: entry("a", UNKNOWN)}, "concurrency": UNKNOWN}, []),
    ],
)
def test_rollout_check(change: dict, failed: list[str]) -> None:
    assert [f.property for f in MeshRolloutProvider().check({}, {**OLDS, **change}).failures] == failed


def test_strategy_none_never_reaches_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cluster(_settings: object) -> None:
        raise AssertionError("strategy none must not talk to the cluster")

    monkeypatch.setattr("mesh.kube.api_client", no_cluster)
    outs = MeshRolloutProvider().create(props({NS: entry("b", "none")})).outs
    assert outs is not None and outs["results"][NS]["restarted"] == [] and outs["namespaces"][NS]["revision"] == "b"


def in_ns(ns: str, workloads: dict[str, Workload]) -> dict[str, Workload]:
    return {k: replace(w, namespace=ns) for k, w in workloads.items()}


class FakeCluster:
    """Stands in for ClusterReader: a controller that completes a restart `ticks` reads later, and a watcher
    counting the workloads restarting at once."""

    def __init__(self, namespaces: dict[str, dict[str, Workload]], ticks: int = 1) -> None:
        self.workloads = {ns: dict(ws) for ns, ws in namespaces.items()}
        self.ticks = ticks
        self.pending: dict[tuple[str, str], int] = {}
        self.restarts: list[str] = []
        self.max_in_flight = 0
        self.followed: list[set[str]] = []
        self.waited = 0.0

    def follow(self, entries: Iterable[str]) -> None:
        self.followed.append({e.partition("/")[0] for e in entries})

    def wait(self, timeout: float) -> None:
        """A change arrives after `timeout` (the tests' clock may be this count)."""
        self.waited += timeout

    def snapshots(self, entries: list[str]) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        for where in list(self.pending):
            self.pending[where] -= 1
            if not self.pending[where]:
                del self.pending[where]
                ns, key = where
                self.workloads[ns][key] = rolled(self.workloads[ns][key], "b")
        return self.confirm(entries)

    def confirm(self, entries: list[str]) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        """The cluster as it is, without moving time on."""
        result = {}
        for e in entries:
            ns, _, gateway = e.partition("/")
            ws = {k: w for k, w in self.workloads[ns].items() if not gateway or k == f"Deployment/{gateway}"}
            result[e] = (ws, [p for w in ws.values() for p in w.pods])
        return result

    def read_proxy_configs(self, targets: dict[str, Target]) -> None:
        """No ProxyConfig resources here; the targets are kept for the test to look at."""
        self.targets = targets

    def restart(self, w: Workload, target: Target) -> None:
        self.restarts.append(f"{w.namespace}: {w.key}")
        self.workloads[w.namespace][w.key] = restarting(w, target.revision, target.proxy_image)
        self.pending[(w.namespace, w.key)] = self.ticks
        self.max_in_flight = max(self.max_in_flight, len(self.pending))


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> list[FakeCluster]:
    """The provider's cluster I/O replaced by the FakeCluster the test appends."""
    clusters: list[FakeCluster] = []
    monkeypatch.setattr("mesh.kube.api_client", lambda _settings: contextlib.nullcontext())
    monkeypatch.setattr("mesh.providers.rollout.ClusterReader", lambda _api: clusters[0])
    return clusters


def test_an_update_moves_only_the_changed_entries_under_one_budget(
    fake_cluster: list[FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = {"Deployment/ingress": replace(deployment("ingress", "a"), namespace="edge")}
    fake_cluster.append(FakeCluster({
        **{f"ns{i}": in_ns(f"ns{i}", namespace(4)) for i in range(5)},
        "still": in_ns("still", namespace(2)),
        "edge": gateway,
    }, ticks=3))
    olds = {**props({**{f"ns{i}": entry("a") for i in range(5)}, "still": entry("a")}, {"edge/ingress": entry("a")}),
            "results": {"still": {"restarted": ["Deployment/earlier"]}, "gone": {"restarted": []}}}
    news = props({**{f"ns{i}": entry("b") for i in range(5)}, "still": entry("a")}, {"edge/ingress": entry("b")},
                 concurrency=3.0)
    outs = MeshRolloutProvider().update("mesh-rollout", olds, news).outs
    cluster = fake_cluster[0]
    assert len(cluster.restarts) == len(set(cluster.restarts)) == 21
    assert not any(r.startswith("still:") for r in cluster.restarts)
    assert cluster.max_in_flight == 3
    # round-robin: the first restarts come from different namespaces
    assert [r.split(":")[0] for r in cluster.restarts[:3]] == ["edge", "ns0", "ns1"]
    assert outs["results"]["edge/ingress"]["restarted"] == ["Deployment/ingress"]
    assert outs["results"]["ns3"]["restarted"] == [f"Deployment/w{i}" for i in range(4)]
    assert outs["results"]["still"] == {"restarted": ["Deployment/earlier"]}  # untouched: last results kept
    assert "gone" not in outs["results"]
    assert outs["namespaces"] == news["namespaces"] and outs["concurrency"] == 3.0
    err = capsys.readouterr().err
    assert "rolling 6 namespaces/gateways: 21 workloads to restart, 0 already restarting, 0 left alone; " \
        "concurrency 3 across the stack" in err
    assert "info: moved 21/21 workloads, 0 waiting on readiness, eta 0s" in err
    assert "info: restarted 21 workloads in 6 namespaces/gateways: edge/ingress: Deployment/ingress; ns0: " in err


def test_per_namespace_caps_each_namespace(fake_cluster: list[FakeCluster]) -> None:
    fake_cluster.append(FakeCluster({"one": in_ns("one", namespace(6))}, ticks=2))
    outs = MeshRolloutProvider().create(props({"one": entry("b")}, concurrency=4.0, per_namespace=2.0)).outs
    assert fake_cluster[0].max_in_flight == 2
    assert len(outs["results"]["one"]["restarted"]) == 6


def test_first_create_over_a_converged_stack_restarts_nothing(
    fake_cluster: list[FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    """Upgrading the program: the per-namespace Rollouts go (a no-op delete) and the MeshRollout is created with
    every entry. Rolling namespaces already on target, a natural one still on the old revision, a none one: no
    restart, the natural one reported."""
    fake_cluster.append(FakeCluster({
        "done": in_ns("done", namespace(3, "b")),
        "lazy": in_ns("lazy", namespace(2, "a")),
        "manual": in_ns("manual", namespace(2, "a")),
        "edge": {"Deployment/ingress": replace(deployment("ingress", "b"), namespace="edge")},
    }))
    outs = MeshRolloutProvider().create(props(
        {"done": entry("b"), "lazy": entry("b", "natural"), "manual": entry("b", "none")},
        {"edge/ingress": entry("b")})).outs
    assert fake_cluster[0].restarts == []
    assert outs["results"]["lazy"]["pods_on_other_revisions"] == 2
    assert outs["results"]["done"]["skipped"] == {f"Deployment/w{i}": f"all pods already run {B}" for i in range(3)}
    assert "info: restarted nothing" in capsys.readouterr().err


def test_a_failure_raises_naming_namespace_and_workload_and_keeps_the_state(fake_cluster: list[FakeCluster]) -> None:
    stuck = {k: replace(w, namespace="bad", manual_update="updateStrategy OnDelete", kind="StatefulSet")
             for k, w in namespace(1).items()}
    fake_cluster.append(FakeCluster({"bad": {"StatefulSet/w0": stuck["Deployment/w0"]},
                                     "fine": in_ns("fine", namespace(2))}))
    with pytest.raises(RolloutError) as failed:
        MeshRolloutProvider().update("mesh-rollout", OLDS, props({"bad": entry("b"), "fine": entry("b")}))
    assert "rollout of namespace bad to revision b did not complete:\n  StatefulSet/w0: 1 pods not on" in str(
        failed.value)
    assert len(fake_cluster[0].restarts) == 2  # a workload to delete by hand does not stop the others


def in_place(workloads: dict[str, Workload]) -> dict[str, Workload]:
    """The same workloads after an in-place upgrade of b: every pod still runs b's previous image."""
    return {k: replace(w, pods=stale_pods("b", len(w.pods), owner=w.uid)) for k, w in workloads.items()}


BOUND_TO_B = props({NS: entry("b")})


def test_an_in_place_upgrade_restarts_every_workload_on_the_old_proxy_once(fake_cluster: list[FakeCluster]) -> None:
    fake_cluster.append(FakeCluster({NS: in_place(namespace(3, "b"))}))
    olds = props({NS: entry("b", proxy_image=OLD_B)})
    assert MeshRolloutProvider().diff("mesh-rollout", olds, BOUND_TO_B).changes
    outs = MeshRolloutProvider().update("mesh-rollout", olds, BOUND_TO_B).outs
    assert fake_cluster[0].restarts == [f"{NS}: Deployment/w{i}" for i in range(3)]
    result = outs["results"][NS]
    assert result["restarted"] == ["Deployment/w0", "Deployment/w1", "Deployment/w2"]
    assert (result["pods_with_stale_proxy"], result["pods_on_other_revisions"]) == (0, 0)


def test_natural_reports_the_pods_on_the_old_proxy_and_restarts_nothing(
    fake_cluster: list[FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_cluster.append(FakeCluster({NS: {**in_place(namespace(2, "b")), **namespace(1, "b", prefix="current")}}))
    olds = props({NS: entry("b", proxy_image=OLD_B)})
    outs = MeshRolloutProvider().update("mesh-rollout", olds, props({NS: entry("b", "natural")})).outs
    assert fake_cluster[0].restarts == []
    result = outs["results"][NS]
    assert (result["pods_with_stale_proxy"], result["pods_on_other_revisions"], result["restarted"]) == (2, 0, [])
    assert (
        f"info: {NS}: 2 run b with another proxy image, 1 run {B}; they move when next recreated"
    ) in capsys.readouterr().err


def test_pods_with_a_proxy_set_by_hand_are_left_alone_and_reported(
    fake_cluster: list[FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    [w] = namespace(1, "b").values()
    pinned = Pod(NS, "own-proxy", "b", w.uid, True, True, proxy=PodProxy(OLD_B, pinned="registry.example/own/p:1"))
    fake_cluster.append(FakeCluster({NS: {w.key: replace(w, pods=(pinned,))}}))
    outs = MeshRolloutProvider().create(BOUND_TO_B).outs
    assert fake_cluster[0].restarts == []
    assert outs["results"][NS]["proxies_left_alone"] == {
        "own-proxy": "proxy image set by hand (sidecar.istio.io/proxyImage)"}
    assert f"warning: {NS}: proxies left alone: own-proxy: proxy image set by hand" in capsys.readouterr().err


def test_progress_lines_are_throttled(capsys: pytest.CaptureFixture[str]) -> None:
    """Ticks a second apart (no change seen for a second), each restart taking 4 ticks: one line per 5s at most,
    however many ticks, and a last line once all moved."""
    cluster = FakeCluster({NS: namespace(10)}, ticks=4)
    run = RolloutRun(B, 1, 300)
    run.plan(namespace(10).values(), 0)
    roll(cluster, Schedule({NS: run}, concurrency=1), clock=lambda: cluster.waited)  # type: ignore[arg-type]
    lines = [line for line in capsys.readouterr().err.splitlines() if "waiting on readiness" in line]
    assert cluster.waited == 40  # TICK_SECONDS apart
    assert len(lines) == 8  # at 5s, 10s, ... 35s, and the last
    assert lines[0] == "info: moved 1/10 workloads, 1 waiting on readiness, eta 45s"
    assert lines[-1] == "info: moved 10/10 workloads, 0 waiting on readiness, eta 0s"


def test_a_gateway_deployment_in_a_bound_namespace_is_restarted_once(fake_cluster: list[FakeCluster]) -> None:
    """`namespaces.istio-ingress` and gateway `ingress` there both move: the gateway's entry plans its Deployment,
    the namespace's entry plans the rest, so it is patched once and takes one slot."""
    ingress = {k: replace(w, namespace="istio-ingress") for k, w in
               {**namespace(1, prefix="ingress"), **namespace(1, prefix="web")}.items()}
    fake_cluster.append(FakeCluster({"istio-ingress": ingress}))
    news = props({"istio-ingress": entry("b")}, {"istio-ingress/ingress0": entry("b")})
    outs = MeshRolloutProvider().update("mesh-rollout", OLDS, news).outs
    assert sorted(fake_cluster[0].restarts) == ["istio-ingress: Deployment/ingress0", "istio-ingress: Deployment/web0"]
    assert outs["results"]["istio-ingress/ingress0"]["restarted"] == ["Deployment/ingress0"]
    assert outs["results"]["istio-ingress"]["restarted"] == ["Deployment/web0"]
    assert outs["results"]["istio-ingress"]["skipped"] == {
        "Deployment/ingress0": "moved by its gateway entry istio-ingress/ingress0"}


def test_a_paused_deployment_is_refused_before_anything_restarts(
    fake_cluster: list[FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    """Never patched, never waited on: the others move, the `up` fails naming it and the fix, in no time."""
    paused = {k: replace(w, namespace="held", paused=True) for k, w in namespace(1).items()}
    fake_cluster.append(FakeCluster({"held": paused, "fine": in_ns("fine", namespace(2))}))
    with pytest.raises(RolloutError) as failed:
        MeshRolloutProvider().update("mesh-rollout", OLDS, props({"held": entry("b"), "fine": entry("b")},
                                                                 timeout_seconds=0.5))
    assert sorted(fake_cluster[0].restarts) == ["fine: Deployment/w0", "fine: Deployment/w1"]
    assert f"  Deployment/w0: 1 pods not on {B}; Deployment is paused (spec.paused=true)" in str(failed.value)
    err = capsys.readouterr().err
    assert "rolling 2 namespaces/gateways: 2 workloads to restart, 0 already restarting, 0 left alone, " \
        "1 refused; " in err
    assert err.index("warning: held: Deployment/w0 refused: 1 pods not on b") < err.index("info: moved")


# --- pods a restart cannot move (the injector's own decisions) ----------------------------------

BATCH = {"matchLabels": {"app": "batch"}}


def api_pod(revision: str | None, image: str | None, labels: dict | None = None, **annotations: str) -> Pod:
    """A pod as the API returns it: injected by `revision` with proxy `image` (None: not injected)."""
    return pod_from_object({
        "metadata": {"name": "p0", "namespace": NS, "labels": labels or {},
                     "annotations": {**({"istio.io/rev": revision} if revision else {}), **annotations},
                     "ownerReferences": [{"controller": True, "uid": "uid-web"}]},
        "spec": {"containers": [{"name": "app", "image": "app:1"},
                                *([{"name": "istio-proxy", "image": image}] if image else [])]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    })


class Injector(FakeCluster):
    """A controller that recreates the pods as the injector gives them back: here, exactly as they were."""

    def restart(self, w: Workload, target: Target) -> None:
        self.restarts.append(f"{w.namespace}: {w.key}")
        self.workloads[w.namespace][w.key] = replace(restarting(w, target.revision, target.proxy_image),
                                                     observed_generation=w.generation + 1)


@pytest.mark.parametrize(
    ("injector", "template_labels", "reason"),
    [
        ({"never": [BATCH]}, {"app": "batch"}, "sidecarInjectorWebhook.neverInjectSelector {app=batch}"),
        ({"policy": "disabled"}, {"app": "web"}, "global.proxy.autoInject is disabled"),
    ],
)
def test_workloads_the_injector_would_not_inject_are_left_alone_and_reported(
    fake_cluster: list[FakeCluster], capsys: pytest.CaptureFixture[str], injector: dict, template_labels: dict,
    reason: str,
) -> None:
    """Restarting them gives pods without a proxy again: never restarted, so the `up` does not fail every time."""
    w = replace(deployment("web"), template_labels=template_labels, desired=1, current=1, updated=1, ready=1,
                available=1, pods=(api_pod(None, None, template_labels),))
    fake_cluster.append(Injector({NS: {w.key: w}}))
    outs = MeshRolloutProvider().update("mesh-rollout", OLDS, {**BOUND_TO_B, "injectors": {"b": injector}}).outs
    assert fake_cluster[0].restarts == []
    result = outs["results"][NS]
    assert reason in result["skipped"]["Deployment/web"]
    assert result["skipped"]["Deployment/web"].startswith("not injected by b: ")
    assert reason in result["proxies_left_alone"]["p0"]
    assert result["pods_on_other_revisions"] == 0
    assert "proxies left alone: p0: not injected by b" in capsys.readouterr().err


def test_a_pod_the_policy_injects_by_its_own_label_is_still_moved(fake_cluster: list[FakeCluster]) -> None:
    labels = {"app": "web", INJECT_KEY: "true"}
    w = replace(deployment("web"), template_labels=labels, desired=1, current=1, updated=1, ready=1, available=1,
                pods=(api_pod("a", TARGETS["a"].proxy_image, labels),))
    fake_cluster.append(FakeCluster({NS: {w.key: w}}))
    MeshRolloutProvider().update("mesh-rollout", OLDS, {**BOUND_TO_B, "injectors": {"b": {"policy": "disabled"}}})
    assert fake_cluster[0].restarts == [f"{NS}: Deployment/web"]


OWN_PROXY = json.dumps({"containers": [{"name": "istio-proxy", "image": "registry.example/own/proxyv2:7"}]})


@pytest.mark.parametrize(
    ("pod", "action"),
    [
        # the template's own istio-proxy container pins the image: the injector keeps it
        (api_pod("b", "registry.example/own/proxyv2:7", **{"proxy.istio.io/overrides": OWN_PROXY}), Action.SKIP),
        # ... but the revision still moves with a restart
        (api_pod("a", "registry.example/own/proxyv2:7", **{"proxy.istio.io/overrides": OWN_PROXY}), Action.RESTART),
        # `image: auto` takes the injected image: compared as usual
        (api_pod("b", OLD_B, **{"proxy.istio.io/overrides": json.dumps(
            {"containers": [{"name": "istio-proxy", "image": ""}]})}), Action.RESTART),
        # the pod's proxy.istio.io/config chooses the image type
        (api_pod("b", f"{B.proxy_image}-distroless", **{"proxy.istio.io/config": "image:\n  imageType: distroless\n"}),
         Action.SKIP),
        (api_pod("b", f"{OLD_B}-distroless", **{"proxy.istio.io/config": "image:\n  imageType: distroless\n"}),
         Action.RESTART),
    ],
)
def test_proxies_whose_image_the_pod_chooses_are_compared_as_the_injector_writes_them(pod: Pod, action: Action) -> None:
    w = replace(deployment("web"), desired=1, current=1, updated=1, ready=1, available=1, pods=(pod,))
    assert decide(w, B).action is action


def test_the_rollout_reads_proxy_config_resources_into_the_pods_it_compares() -> None:
    """A ProxyConfig giving `app: web` the distroless type: its pods run `-distroless`, which is on target."""
    web = {"metadata": {"name": "web", "namespace": NS, "uid": "uid-web", "generation": 1},
           "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}}},
           "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                      "availableReplicas": 1}}
    rs = {"metadata": {"name": "web-1", "namespace": NS, "uid": "rs1",
                       "ownerReferences": [{"controller": True, "kind": "Deployment", "uid": "uid-web"}]}}
    pod = {"metadata": {"name": "web-1-x", "namespace": NS, "labels": {"app": "web"},
                        "annotations": {"istio.io/rev": "b"}, "ownerReferences": [{"controller": True, "uid": "rs1"}]},
           "spec": {"containers": [{"name": "istio-proxy", "image": f"{B.proxy_image}-distroless"}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    objects = {"Deployment": [web], "ReplicaSet": [rs], "Pod": [pod]}
    config = {"metadata": {"name": "web", "namespace": NS}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "image": {"imageType": "distroless"}}}
    assert decide(snapshot_of(NS, objects)[0]["Deployment/web"], B).action is Action.RESTART
    workloads, pods = snapshot_of(NS, objects, ([config], "istio-system"))
    assert decide(workloads["Deployment/web"], B).action is Action.SKIP
    assert pods[0].proxy.image_type == "distroless"


def test_the_review_reads_the_entry_as_up_does_proxy_configs_included(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster({NS: namespace(1, "b")})
    monkeypatch.setattr("mesh.providers.rollout.ClusterReader", lambda _api: cluster)
    target = Target("b", B.proxy_image, InjectorPolicy(root_namespace="mesh-root"))
    workloads, _pods = NamespaceReader(None, NS, None, target).snapshot()  # type: ignore[arg-type]
    assert cluster.targets == {NS: target} and cluster.targets[NS].injector.root_namespace == "mesh-root"
    assert list(workloads) == ["Deployment/w0"]
