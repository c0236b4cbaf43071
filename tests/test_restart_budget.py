"""The stack-wide restart budget (pure): the cap, round-robin fairness, the per-namespace cap, resume,
failures, and the progress lines."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mesh.restart_budget import (
    Schedule,
    Throttle,
    duration,
    eta,
    final_line,
    gateway_workloads,
    namespace_of,
    progress_line,
)
from mesh.workloads import RolloutRun, Workload
from tests.test_workloads import B, deployment, namespace, pods, restarting, rolled

Snapshots = dict[str, dict[str, Workload]]


def cluster(**sizes: int) -> Snapshots:
    """Entry -> its workloads, all on revision a (entries with a `/` are a gateway's Deployment)."""
    return {entry: {k: replace(w, namespace=namespace_of(entry)) for k, w in namespace(n).items()}
            for entry, n in sizes.items()}


def schedule(snaps: Snapshots, concurrency: int, per_namespace: int | None = None, timeout: float = 60) -> Schedule:
    runs = {}
    for entry, ws in snaps.items():
        run = RolloutRun(B, concurrency, timeout)
        run.plan(ws.values(), now=0)
        runs[entry] = run
    return Schedule(runs, concurrency, per_namespace)


def restart(snaps: Snapshots, starts: list[tuple[str, Workload]]) -> None:
    for entry, w in starts:
        snaps[entry][w.key] = restarting(w, "b")


def finish(snaps: Snapshots, entry: str, key: str) -> None:
    snaps[entry][key] = rolled(snaps[entry][key], "b")


def restarting_now(snaps: Snapshots) -> int:
    """What a watcher of the cluster counts: workloads restarted whose rollout has not completed."""
    return sum(1 for ws in snaps.values() for w in ws.values() if w.observed_generation < w.generation)


def test_the_cap_holds_across_namespaces_and_every_workload_moves_once() -> None:
    snaps = cluster(**{f"ns{i}": 5 for i in range(8)})
    s = schedule(snaps, concurrency=6)
    now, restarted, peak = 0.0, [], 0
    while not s.finished:
        starts = s.tick(snaps, now)
        restart(snaps, starts)
        restarted += [(e, w.key) for e, w in starts]
        peak = max(peak, restarting_now(snaps))
        # the oldest in-flight restart of each tick completes
        for entry, run in sorted(s.runs.items()):
            if run.in_flight:
                finish(snaps, entry, next(iter(run.in_flight)))
                break
        now += 1
    assert peak == 6
    assert len(restarted) == len(set(restarted)) == 40
    assert s.done == s.total == 40
    assert s.failure_message() is None


def test_slots_go_round_robin_so_no_namespace_waits_for_another_to_finish() -> None:
    snaps = cluster(a=10, b=10, c=10)
    s = schedule(snaps, concurrency=4)
    first = s.tick(snaps, 0)
    restart(snaps, first)
    assert [e for e, _ in first] == ["a", "b", "c", "a"]
    finish(snaps, "a", "Deployment/w0")
    finish(snaps, "b", "Deployment/w0")
    second = s.tick(snaps, 1)
    # the next slots continue after the last namespace served (a), not from the start
    assert [(e, w.name) for e, w in second] == [("b", "w1"), ("c", "w1")]


def test_a_namespace_with_one_workload_is_served_in_the_first_round() -> None:
    snaps = cluster(big=50, small=1)
    s = schedule(snaps, concurrency=2)
    assert [e for e, _ in s.tick(snaps, 0)] == ["big", "small"]


def test_per_namespace_cap_counts_a_gateway_with_its_namespace() -> None:
    snaps = cluster(a=6, **{"a/gw": 1}, b=6)
    s = schedule(snaps, concurrency=10, per_namespace=2)
    starts = s.tick(snaps, 0)
    by_ns = {ns: sum(namespace_of(e) == ns for e, _ in starts) for ns in ("a", "b")}
    assert by_ns == {"a": 2, "b": 2}
    assert len(starts) == 4  # the free 6 slots of the budget stay free: every namespace is at its cap


def test_resume_waits_on_in_flight_restarts_and_counts_them_against_the_cap() -> None:
    """After an interrupted up: a's w0 finished, a's w1 and b's w0 still rolling from the first run."""
    snaps = cluster(a=3, b=3)
    finish(snaps, "a", "Deployment/w0")
    snaps["a"]["Deployment/w0"] = rolled(restarting(snaps["a"]["Deployment/w0"], "b"), "b")
    snaps["a"]["Deployment/w1"] = restarting(snaps["a"]["Deployment/w1"], "b")
    snaps["b"]["Deployment/w0"] = restarting(snaps["b"]["Deployment/w0"], "b")
    s = schedule(snaps, concurrency=3)
    assert s.runs["a"].skipped == {"Deployment/w0": f"all pods already run {B}"}
    assert s.in_flight == 2
    starts = s.tick(snaps, 0)
    assert len(starts) == 1  # only one slot left; the two in flight are waited on, not restarted
    restart(snaps, starts)
    finish(snaps, "a", "Deployment/w1")
    finish(snaps, "b", "Deployment/w0")
    restart(snaps, s.tick(snaps, 1))
    assert {w for run in s.runs.values() for w in run.restarted} == {"Deployment/w2", "Deployment/w1"}
    assert "Deployment/w0" not in s.runs["a"].restarted + s.runs["b"].restarted


def test_a_failure_stops_new_restarts_everywhere_and_names_namespace_and_workload() -> None:
    snaps = cluster(a=3, b=3)
    s = schedule(snaps, concurrency=2, timeout=30)
    restart(snaps, s.tick(snaps, 0))  # a/w0, b/w0
    stuck = snaps["a"]["Deployment/w0"]
    snaps["a"]["Deployment/w0"] = replace(stuck, observed_generation=stuck.generation, updated=0,
                                          pods=pods("a", owner=stuck.uid, problem="Unschedulable: no node"))
    finish(snaps, "b", "Deployment/w0")
    refill = s.tick(snaps, 10)  # the freed slot goes on round-robin (to a, after b) while a's w0 may still finish
    assert [(e, w.name) for e, w in refill] == [("a", "w1")]
    restart(snaps, refill)
    assert s.tick(snaps, 31) == []  # a's w0 timed out: the free slot stays free, in b too
    assert not s.finished  # a's w1 is waited for
    finish(snaps, "a", "Deployment/w1")
    assert s.tick(snaps, 32) == [] and s.finished
    message = s.failure_message()
    assert message is not None
    assert "rollout of namespace a to revision b did not complete" in message
    assert "Deployment/w0: timed out after 30s: 0 of 1 replicas updated; pod p0: Unschedulable: no node" in message
    assert "not restarted after the failure: b: Deployment/w1, Deployment/w2" in message
    assert s.runs["b"].restarted == ["Deployment/w0"]


def test_a_gateway_that_ends_on_the_wrong_revision_is_named_by_its_entry() -> None:
    snaps = {"edge/ingress": {"Deployment/ingress": replace(deployment("ingress", "a"), namespace="edge")}}
    s = schedule(snaps, concurrency=1)
    [(entry, w)] = s.tick(snaps, 0)
    snaps[entry][w.key] = rolled(restarting(w, "b"), "a")
    s.tick(snaps, 1)
    assert "rollout of namespace edge/ingress to revision b did not complete" in (s.failure_message() or "")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (44.2, "45s"), (60, "1m"), (230, "4m"), (3900, "1h05m")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_progress_line_and_eta_from_the_pace_so_far() -> None:
    assert eta(0, 480, 10) is None
    assert eta(120, 480, 80) == pytest.approx(240)
    assert progress_line(120, 480, 3, 80) == "moved 120/480 workloads, 3 waiting on readiness, eta 4m"
    assert progress_line(0, 480, 20, 5) == "moved 0/480 workloads, 20 waiting on readiness, eta unknown"


def test_final_line_lists_what_was_restarted_where() -> None:
    assert final_line({}) == "restarted nothing"
    assert final_line({"a": ["Deployment/w0", "Deployment/w1"], "edge/ingress": ["Deployment/ingress"]}) == (
        "restarted 3 workloads in 2 namespaces/gateways: a: Deployment/w0, Deployment/w1; "
        "edge/ingress: Deployment/ingress"
    )


def test_throttle_lets_one_line_through_per_interval() -> None:
    t = Throttle(5)
    assert [t.due(now) for now in (0, 1, 4.9, 5, 6, 10.5)] == [True, False, False, True, False, True]


def test_gateway_workloads_are_keyed_as_the_namespace_entry_sees_them() -> None:
    assert gateway_workloads(["shop", "edge/ingress", "edge/DaemonSet/node-gw", "other/egress"]) == {
        "edge": {"Deployment/ingress": "edge/ingress", "DaemonSet/node-gw": "edge/DaemonSet/node-gw"},
        "other": {"Deployment/egress": "other/egress"},
    }
