"""A stack's health gates, judged from what was read of its cluster after its `up` (and again after the soak).

The data plane gate uses `mesh status`'s own reading (which revision and proxy each pod runs), so the gate and
what a person sees with `mesh status` never disagree. Pods of a namespace bound with strategy `natural` or `none`
are not required on the target (they move on their next deploy), but every workload of a bound namespace must be
ready: an upgrade that leaves a workload unready is what a wave must stop on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mesh.istio_vocabulary import ROLLING, Strategy
from mesh.status import Status
from mesh.webhook_overlap import Overlap
from mesh.workloads import UNINJECTED, Workload

DATA_PLANE, READY, ISTIOD, NODE_AGENTS, OVERLAP, PROMETHEUS = (
    "data plane", "workloads ready", "istiod ready", "node agents", "injector overlap", "prometheus")
SHOWN = 5
"""Items named per failing gate; the rest are counted."""


@dataclass(frozen=True)
class GateResult:
    gate: str
    ok: bool | None
    """None: skipped (the message says why)."""
    message: str


@dataclass(frozen=True)
class Rollout:
    """A Deployment or DaemonSet's rollout numbers (istiod, istio-cni-node, ztunnel)."""

    name: str
    desired: int
    updated: int
    ready: int
    current_generation: bool = True
    """Its controller has seen its newest spec (status.observedGeneration >= metadata.generation)."""

    @property
    def done(self) -> bool:
        return self.current_generation and self.updated >= self.desired and self.ready >= self.desired


@dataclass(frozen=True)
class Facts:
    status: Status
    strategies: Mapping[str, Strategy]
    """Bound namespace -> its strategy (the stack config's)."""
    workloads: Mapping[str, Iterable[Workload]]
    """Bound namespace -> its workloads."""
    istiods: Mapping[str, Rollout]
    """Revision -> its istiod Deployment."""
    node_agents: Iterable[Rollout]
    overlaps: Iterable[Overlap]
    overlaps_before: Iterable[Overlap] | None
    """Read before the stack's `up` (None: the stack was not updated, so every overlap now is old)."""
    prometheus: float | None = None
    prometheus_skipped: str | None = None
    prometheus_max: float | None = None
    prometheus_query: str = ""
    external: frozenset[str] = field(default_factory=frozenset)


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _result(gate: str, problems: list[str], passed: str) -> GateResult:
    return GateResult(gate, not problems, _listed(problems) if problems else passed)


def data_plane(status: Status, strategies: Mapping[str, Strategy]) -> GateResult:
    """Every pod of every namespace bound `rolling` runs its revision, on the proxy that revision injects now."""
    problems = []
    for rev in status.revisions:
        for ns in rev.bound:
            if strategies.get(ns, ROLLING) != ROLLING:
                continue
            for other in status.revisions:
                if other.name != rev.name and ns in other.pods:
                    problems.append(f"`{ns}`: {other.pods[ns].pods} pods on `{other.name}`, bound to `{rev.name}`")
            if ns in rev.pods and rev.pods[ns].stale:
                problems.append(f"`{ns}`: {rev.pods[ns].stale} pods on an older proxy than `{rev.name}` injects")
            for found, n in (status.unmanaged.get(ns) or {}).items():
                what = "not injected" if found == UNINJECTED else f"on `{found}`, which the stack does not manage"
                problems.append(f"`{ns}`: {n} pods {what}, bound to `{rev.name}`")
    bound = sum(len(r.bound) for r in status.revisions)
    return _result(DATA_PLANE, problems, f"every pod of {bound} bound namespace(s) on its revision and proxy")


def workloads_ready(workloads: Mapping[str, Iterable[Workload]]) -> GateResult:
    problems, seen = [], 0
    for ns, found in sorted(workloads.items()):
        for w in found:
            seen += 1
            if w.observed_generation < w.generation or w.updated < w.desired or w.ready < w.desired:
                problems.append(f"`{ns}/{w.key}`: {w.ready}/{w.desired} ready, {w.updated} updated")
    return _result(READY, problems, f"{seen} workload(s) of the bound namespaces ready")


def istiod_ready(status: Status, istiods: Mapping[str, Rollout], external: Iterable[str]) -> GateResult:
    """Every revision the stack installs has its istiod rolled out and ready (an external one is its installer's)."""
    outside = set(external)
    own = [r.name for r in status.revisions if r.in_stack and not r.external and r.name not in outside]
    problems = []
    for name in own:
        found = istiods.get(name)
        if found is None:
            problems.append(f"`{name}`: no istiod Deployment")
        elif not found.done or found.desired == 0:
            problems.append(f"`{name}`: {found.name} {found.ready}/{found.desired} ready, {found.updated} updated")
    return _result(ISTIOD, problems, f"{len(own)} revision(s) ready")


def node_agents(agents: Iterable[Rollout]) -> GateResult:
    found = list(agents)
    problems = [f"{a.name}: {a.ready}/{a.desired} ready, {a.updated} updated" for a in found if not a.done]
    passed = ", ".join(a.name for a in found) + " rolled out" if found else "none installed (no CNI, no ztunnel)"
    return _result(NODE_AGENTS, problems, passed)


def _key(o: Overlap) -> tuple[str, tuple[str, ...]]:
    return o.namespace, tuple(sorted(o.webhooks))


def new_overlaps(now: Iterable[Overlap], before: Iterable[Overlap] | None) -> GateResult:
    """Injector overlaps (IST0139) that were not there before the stack's `up`; older ones are the review's."""
    old = {_key(o) for o in before or []} if before is not None else {_key(o) for o in now}
    new = sorted({_key(o) for o in now} - old)
    problems = [f"`{ns}`: {', '.join(hooks)} would all inject one pod" for ns, hooks in new]
    return _result(OVERLAP, problems, "no new overlap")


def prometheus(value: float | None, skipped: str | None, limit: float | None, query: str) -> GateResult:
    """The query's value at or under the limit; skipped when the stack has no Prometheus, failed when it has one
    that did not answer (`value` NaN): silence is no evidence of health."""
    if value is not None and math.isnan(value):
        return GateResult(PROMETHEUS, False, f"{query}: Prometheus {skipped}")
    if skipped is not None or value is None or limit is None:
        return GateResult(PROMETHEUS, None, skipped or "no Prometheus gate in the fleet file")
    if value > limit:
        return GateResult(PROMETHEUS, False, f"{query} = {value:g}, above {limit:g}")
    return GateResult(PROMETHEUS, True, f"{query} = {value:g} (at most {limit:g})")


def judge(facts: Facts) -> list[GateResult]:
    return [
        data_plane(facts.status, facts.strategies),
        workloads_ready(facts.workloads),
        istiod_ready(facts.status, facts.istiods, facts.external),
        node_agents(facts.node_agents),
        new_overlaps(facts.overlaps, facts.overlaps_before),
        prometheus(facts.prometheus, facts.prometheus_skipped, facts.prometheus_max, facts.prometheus_query),
    ]


def healthy(results: Iterable[GateResult]) -> bool:
    return all(r.ok is not False for r in results)
