"""One restart budget for every namespace and gateway a `pulumi up` moves (pure, no I/O).

`rollout.concurrency` limits the workloads restarting at the same time across the whole stack, and
`rollout.perNamespace` (optional) those of one namespace. The `MeshRollout` provider
(mesh/providers/rollout.py) keeps one `RolloutRun` per moving entry (a namespace, or one gateway
Deployment `<namespace>/<name>`) and lets `Schedule.tick` hand out the free slots round-robin, one per
entry per pass starting after the last entry served, so no namespace waits for another to finish.
A restarted workload takes one slot until its own rollout completes; its pods follow its own rollout
strategy (maxUnavailable and the like).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mesh.workloads import RolloutRun, Workload, off_target, waiting_for


def namespace_of(entry: str) -> str:
    """`team-a` and `istio-ingress/ingress` (a gateway Deployment) -> the namespace."""
    return entry.split("/", 1)[0]


def gateway_workloads(entries: Iterable[str]) -> dict[str, dict[str, str]]:
    """Namespace -> {`<Kind>/<name>`: its gateway entry} (an entry `<namespace>/<name>` is a Deployment). A
    gateway in a bound namespace is also a workload of the namespace's entry; its own entry plans it and the
    namespace's leaves it out, so one `up` never patches it twice or gives it two slots."""
    found: dict[str, dict[str, str]] = {}
    for entry in entries:
        ns, _, workload = entry.partition("/")
        if workload:
            found.setdefault(ns, {})[workload if "/" in workload else f"Deployment/{workload}"] = entry
    return found


@dataclass
class Schedule:
    """The runs of one `up`, advanced together under the budget.

    The first failure anywhere (a workload stuck past its timeout, or rolled out onto the wrong proxy)
    stops new restarts everywhere: a revision that breaks one workload should not be rolled onto more.
    Restarts in flight are still waited on, and the next `up` resumes the rest.
    """

    runs: dict[str, RolloutRun]
    concurrency: int
    per_namespace: int | None = None
    _cursor: int = field(default=0, repr=False)

    @property
    def in_flight(self) -> int:
        return sum(len(run.in_flight) for run in self.runs.values())

    @property
    def failed(self) -> bool:
        return any(run.failed for run in self.runs.values())

    @property
    def finished(self) -> bool:
        if any(run.in_flight for run in self.runs.values()):
            return False
        return self.failed or not any(run.queue for run in self.runs.values())

    @property
    def total(self) -> int:
        return sum(run.total for run in self.runs.values())

    @property
    def done(self) -> int:
        return sum(len(run.done) for run in self.runs.values())

    def active(self) -> list[str]:
        """Entries with work queued or in flight: the ones the next tick needs a snapshot of."""
        return [key for key, run in self.runs.items() if run.queue or run.in_flight]

    def wanted(self, width: int) -> list[str]:
        """The entries the next tick reads: each with a workload in flight (to account for it) and the next
        `width` that could start one, in round-robin order from where the last tick stopped. The tick starts
        nothing in an entry it has no snapshot of, so a reader need not follow every entry with work left."""
        order = sorted(self.runs)
        flying = {key for key in order if self.runs[key].in_flight}
        if self.failed or not order:
            return sorted(flying)
        turn = [order[(self._cursor + i) % len(order)] for i in range(len(order))]
        return sorted(flying | set([key for key in turn if self.runs[key].can_start][:width]))

    def unconfirmed(self, snapshots: Mapping[str, Mapping[str, Workload]]) -> list[str]:
        """Entries whose snapshot shows a workload in flight complete but with pods off target: the tick would
        fail it. Read from watches, a workload can be a moment ahead of its pods, so such an entry is read again
        afresh first; only a fresh read fails a workload."""
        return [key for key, run in self.runs.items()
                if any((w := snapshots.get(key, {}).get(wk)) is not None and waiting_for(w) is None
                       and off_target(w, run.target) for wk in run.in_flight)]

    def tick(self, snapshots: Mapping[str, Mapping[str, Workload]], now: float) -> list[tuple[str, Workload]]:
        """Account every run against its snapshot, then fill the free slots round-robin (only in entries
        `snapshots` has).

        Returns (entry, workload) pairs to patch now; they already count as in flight.
        """
        for key, run in self.runs.items():
            if key in snapshots:
                run.account(snapshots[key], now)
        if self.failed:
            return []
        per_ns = Counter({ns: 0 for ns in map(namespace_of, self.runs)})
        for key, run in self.runs.items():
            per_ns[namespace_of(key)] += len(run.in_flight)
        order = sorted(self.runs)
        starts: list[tuple[str, Workload]] = []
        busy = self.in_flight
        moved = True
        while busy < self.concurrency and moved:
            moved = False
            first = self._cursor
            for step in range(len(order)):
                if busy >= self.concurrency:
                    break
                index = (first + step) % len(order)
                key = order[index]
                run, ns = self.runs[key], namespace_of(key)
                if key not in snapshots or not run.can_start or (
                        self.per_namespace and per_ns[ns] >= self.per_namespace):
                    continue
                took_slot, w = run.start_next(snapshots.get(key, {}), now)
                moved = True
                if took_slot:
                    busy += 1
                    per_ns[ns] += 1
                    self._cursor = index + 1
                if w is not None:
                    starts.append((key, w))
        return starts

    def failure_message(self) -> str | None:
        """Every entry's stuck workloads and what they wait for, and what was not started because of them."""
        parts = [msg for key, run in sorted(self.runs.items()) if (msg := run.failure_message(key))]
        if not parts:
            return None
        if self.failed:
            held = {key: run.queue for key, run in sorted(self.runs.items()) if run.queue and not run.failed}
            if held:
                parts.append("not restarted after the failure: " + "; ".join(
                    f"{key}: {', '.join(queue)}" for key, queue in held.items()))
        return "\n".join(parts)

    def restarted(self) -> dict[str, list[str]]:
        """Entry -> the workloads this run restarted, for the final line and the outputs."""
        return {key: list(run.restarted) for key, run in sorted(self.runs.items()) if run.restarted}


def duration(seconds: float) -> str:
    """45s, 4m, 1h05m: coarse on purpose, an ETA is an estimate."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{math.ceil(s / 60)}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the pace so far, None before anything finished (no pace yet)."""
    if done <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / done


def progress_line(done: int, total: int, waiting: int, elapsed: float) -> str:
    """`moved 120/480 workloads, 3 waiting on readiness, eta 4m`."""
    left = eta(done, total, elapsed)
    return (f"moved {done}/{total} workloads, {waiting} waiting on readiness, "
            f"eta {duration(left) if left is not None else 'unknown'}")


def final_line(restarted: Mapping[str, list[str]]) -> str:
    """What was restarted where, on one line."""
    if not restarted:
        return "restarted nothing"
    count = sum(len(keys) for keys in restarted.values())
    where = "; ".join(f"{entry}: {', '.join(keys)}" for entry, keys in restarted.items())
    return f"restarted {count} workloads in {len(restarted)} namespaces/gateways: {where}"


@dataclass
class Throttle:
    """At most one progress line per `interval` seconds: a run of 1,000 workloads must not flood the log."""

    interval: float
    _last: float | None = None

    def due(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True
