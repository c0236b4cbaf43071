"""Planning rules of the Rollout: what to restart, when a rollout is done, when to give up."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pulumi.runtime.rpc import UNKNOWN

from mesh.providers.rollout import POLL_SECONDS, RolloutProvider, roll
from mesh.workloads import (
    INJECT_KEY,
    RESTARTED_AT,
    RESTARTED_FOR,
    UNINJECTED,
    Action,
    Pod,
    RolloutRun,
    Workload,
    attach_pods,
    decide,
    describe_wait,
    pod_from_object,
    restart_patch,
    revision_report,
    waiting_for,
    workload_from_object,
)

NS = "shop"


def pods(*revisions: str | None, owner: str = "uid", **kw: Any) -> tuple[Pod, ...]:
    return tuple(
        Pod(NS, f"p{i}", rev, owner, kw.get("injectable", True), kw.get("live", True), kw.get("problem"))
        for i, rev in enumerate(revisions)
    )


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


def restarting(w: Workload, revision: str) -> Workload:
    """The same workload just after our restart patch, not yet observed by its controller."""
    annotations = {**w.template_annotations, RESTARTED_FOR: revision, RESTARTED_AT: "now"}
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
                "metadata": {"labels": {"app": "web"}, "annotations": {RESTARTED_FOR: "b"}},
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
    assert w.restarted_for == "b"
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
        ({}, {"hostNetwork": True}, {}, False, True),
        ({"deletionTimestamp": "2026-01-01T00:00:00Z"}, {}, {}, True, False),
        ({}, {}, {"phase": "Succeeded"}, True, False),
        ({"labels": {INJECT_KEY: "true"}}, {}, {"phase": "Running"}, True, True),
    ],
)
def test_pod_injectable_and_live(meta: dict, spec: dict, status: dict, injectable: bool, live: bool) -> None:
    pod = pod_from_object({"metadata": {"name": "p", **meta}, "spec": spec, "status": status})
    assert (pod.injectable, pod.live) == (injectable, live)


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
        (restarting(deployment("web", "a"), "b"), Action.WAIT, "already in progress"),
        # a restart for b that completed long ago, pods since recreated elsewhere: restart again
        (replace(deployment("web", "a"), template_annotations={RESTARTED_FOR: "b"}), Action.RESTART, "not on b"),
        # an in-flight restart for another revision does not count as ours
        (restarting(deployment("web", "a"), "c"), Action.RESTART, "not on b"),
    ],
)
def test_decide(workload: Workload, action: Action, reason_part: str) -> None:
    decision = decide(workload, "b")
    assert decision.action is action
    assert reason_part in decision.reason


def test_terminating_and_uninjectable_pods_do_not_need_a_restart() -> None:
    w = replace(
        deployment("web", "b"),
        pods=(*pods("b", owner="x"), Pod(NS, "old", "a", "x", True, False), Pod(NS, "job", None, "x", False, True)),
    )
    assert decide(w, "b").action is Action.SKIP


def test_restart_patch_is_kubectls_plus_our_revision_stamp() -> None:
    assert restart_patch("b", "2026-01-01T00:00:00Z") == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-01-01T00:00:00Z", RESTARTED_FOR: "b"}}}}
    }


# --- the run ---------------------------------------------------------------------------------


def namespace(n: int, revision: str = "a") -> dict[str, Workload]:
    ws = [deployment(f"w{i}", revision) for i in range(n)]
    return {w.key: w for w in ws}


def test_run_keeps_at_most_concurrency_in_flight_and_refills_as_they_finish() -> None:
    snap = namespace(5)
    run = RolloutRun("b", concurrency=2, timeout_seconds=60)
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
    run = RolloutRun("b", concurrency=10, timeout_seconds=60)
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
    run = RolloutRun("b", concurrency=1, timeout_seconds=60)
    run.plan(snap.values(), now=0)
    assert run.skipped == {"Deployment/w0": "all pods already run b"}
    assert list(run.in_flight) == ["Deployment/w1"]
    assert run.tick(snap, now=0) == []  # the one slot is taken by w1's rollout
    snap["Deployment/w1"] = rolled(snap["Deployment/w1"], "b")
    assert [w.name for w in run.tick(snap, now=1)] == ["w2"]
    assert run.restarted == ["Deployment/w2"]


def test_queued_workload_that_moved_meanwhile_is_not_restarted() -> None:
    snap = namespace(2)
    run = RolloutRun("b", concurrency=1, timeout_seconds=60)
    run.plan(snap.values(), now=0)
    run.tick(snap, now=0)
    snap["Deployment/w0"] = rolled(restarting(snap["Deployment/w0"], "b"), "b")
    snap["Deployment/w1"] = rolled(snap["Deployment/w1"], "b")  # someone else restarted it
    assert run.tick(snap, now=1) == []
    assert run.finished
    assert run.skipped == {"Deployment/w1": "all pods already run b"}
    assert run.total == 1


def test_stuck_workload_times_out_stops_new_restarts_and_is_reported() -> None:
    snap = namespace(4)
    run = RolloutRun("b", concurrency=2, timeout_seconds=30)
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


def test_rollout_that_ends_on_the_wrong_revision_fails() -> None:
    snap = namespace(1)
    run = RolloutRun("b", concurrency=1, timeout_seconds=30)
    run.plan(snap.values(), now=0)
    w = run.tick(snap, now=0)[0]
    snap[w.key] = rolled(restarting(w, "b"), "a")  # the namespace label still points at a
    run.tick(snap, now=1)
    assert run.finished
    assert "rolled out, but 1 pods run a instead of b" in run.failed["Deployment/w0"]


def test_manual_workloads_make_the_run_fail_with_a_hint() -> None:
    sts = replace(deployment("db", "a"), kind="StatefulSet", manual_update="updateStrategy OnDelete")
    run = RolloutRun("b", concurrency=1, timeout_seconds=30)
    run.plan([sts], now=0)
    assert run.tick({sts.key: sts}, now=0) == []
    assert run.finished
    assert "StatefulSet/db: 1 pods not on b; updateStrategy OnDelete: delete them" in (run.failure_message(NS) or "")


def test_deleted_workload_counts_as_done() -> None:
    snap = namespace(1)
    run = RolloutRun("b", concurrency=1, timeout_seconds=30)
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
    report = revision_report(found, "b")
    assert (report.on_target, report.on_other) == (1, 3)
    assert report.others() == {"a": 2, UNINJECTED: 1}
    assert report.summary("shop") == (
        "shop: 3 pods still run other revisions ((not injected): 1, a: 2), 1 run b; they move when next recreated"
    )
    assert revision_report(pods("b"), "b").summary("shop") == "shop: all 1 pods run b"


# --- the provider around the plan --------------------------------------------------------------

OLDS = {"namespace": NS, "workload": None, "revision": "a", "strategy": "rolling", "concurrency": 2.0}


@pytest.mark.parametrize(
    ("change", "changes", "replaces"),
    [
        ({}, False, []),
        ({"concurrency": 8.0, "timeout_seconds": 900.0}, False, []),  # shapes the next rollout only
        ({"revision": "b"}, True, []),
        ({"strategy": "natural"}, True, []),
        ({"namespace": "other"}, True, ["namespace"]),
        ({"workload": "gw"}, True, ["workload"]),
        ({"revision": UNKNOWN}, True, []),  # preview of a tag moving to a computed revision
    ],
)
def test_rollout_diff(change: dict, changes: bool, replaces: list[str]) -> None:
    result = RolloutProvider().diff(
        NS, {**OLDS, "timeout_seconds": 300.0}, {**OLDS, "timeout_seconds": 300.0, **change}
    )
    assert (result.changes, result.replaces) == (changes, replaces)


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({}, []),
        ({"strategy": "fast"}, ["strategy"]),
        ({"concurrency": 0.0}, ["concurrency"]),
        ({"timeout_seconds": "soon"}, ["timeout_seconds"]),
        ({"namespace": ""}, ["namespace"]),
        ({"strategy": UNKNOWN, "concurrency": UNKNOWN}, []),
    ],
)
def test_rollout_check(change: dict, failed: list[str]) -> None:
    news = {**OLDS, "timeout_seconds": 300.0, **change}
    assert [f.property for f in RolloutProvider().check({}, news).failures] == failed


def test_strategy_none_never_reaches_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cluster(_settings: object) -> None:
        raise AssertionError("strategy none must not talk to the cluster")

    monkeypatch.setattr("mesh.kube.api_client", no_cluster)
    outs = RolloutProvider().create({**OLDS, "strategy": "none", "timeout_seconds": 300.0}).outs
    assert outs is not None and outs["restarted"] == [] and outs["revision"] == "a"


class FakeNamespace:
    """Stands in for NamespaceReader: a controller that completes a restart `ticks` polls later."""

    namespace, workload = NS, None

    def __init__(self, count: int, ticks: int) -> None:
        self.workloads = namespace(count)
        self.ticks = ticks
        self.pending: dict[str, int] = {}
        self.restarts: list[str] = []
        self.max_in_flight = 0

    def snapshot(self) -> tuple[dict[str, Workload], list[Pod]]:
        for key in list(self.pending):
            self.pending[key] -= 1
            if not self.pending[key]:
                del self.pending[key]
                self.workloads[key] = rolled(self.workloads[key], "b")
        return dict(self.workloads), [p for w in self.workloads.values() for p in w.pods]

    def restart(self, w: Workload, revision: str) -> None:
        self.restarts.append(w.key)
        self.workloads[w.key] = restarting(w, revision)
        self.pending[w.key] = self.ticks
        self.max_in_flight = max(self.max_in_flight, len(self.pending))


def test_roll_keeps_n_in_flight_and_logs_progress(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeNamespace(count=5, ticks=3)
    clock = [0.0]
    roll(fake, RolloutRun("b", 2, 60), clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))  # type: ignore[arg-type]
    assert sorted(fake.restarts) == sorted(namespace(5))
    assert fake.max_in_flight == 2
    # ceil(5/2) = 3 waves of 3 polls each: no idle poll between a completion and the next start
    assert clock[0] == pytest.approx(3 * 3 * POLL_SECONDS)
    err = capsys.readouterr().err
    assert f"info: {NS} -> b: 5 to restart, 0 already restarting, 0 left alone, concurrency 2" in err
    lines = [line for line in err.splitlines() if line.startswith(f"info: {NS}: ")]
    assert lines[:3] == [
        f"info: {NS}: restarted Deployment/w0 (1 restarted, 2 rolling, 3 not started yet)",
        f"info: {NS}: restarted Deployment/w1 (2 restarted, 2 rolling, 3 not started yet)",
        f"info: {NS}: Deployment/w0 runs b (1 of 5 done)",
    ]
    assert lines[-1] == f"info: {NS}: Deployment/w4 runs b (5 of 5 done)"
