"""What a fleet run says: one line per stack, a summary per wave, and, when it stops, where and how to resume.

A run stops at the first stack that fails (its preview, its `up`, or a lock held by another update) or the first
gate that fails; the stacks of later waves are never touched, and the message names them. Resuming is running
the same command again: stacks whose preview shows no change are not updated (only their gates are held again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mesh.fleet.gates import GateResult, healthy
from mesh.fleet.waves import Wave

Outcome = Literal["planned", "converged", "updated", "failed", "locked", "unhealthy"]
STOPS: frozenset[Outcome] = frozenset({"failed", "locked", "unhealthy"})


@dataclass
class StackRun:
    stack: str
    wave: int
    outcome: Outcome = "planned"
    changes: Mapping[str, int] = field(default_factory=dict)
    """The preview's steps by kind, without `same`: empty when the stack has converged."""
    restarts: int | None = None
    """Workloads `up` restarts (the review's count); None when the review could not read the cluster."""
    refusals: list[str] = field(default_factory=list)
    message: str = ""
    gates: list[GateResult] = field(default_factory=list)
    seconds: float | None = None
    """Wall time of its preview, `up` and gates in an `up` run."""

    @property
    def stopped(self) -> bool:
        return self.outcome in STOPS


def changes_text(changes: Mapping[str, int]) -> str:
    return ", ".join(f"{n} to {op}" for op, n in sorted(changes.items())) or "no changes"


def stack_line(run: StackRun) -> str:
    restarts = "" if run.restarts is None else f", {run.restarts} workload(s) to restart"
    line = f"- `{run.stack}`: {run.outcome}: {changes_text(run.changes)}{restarts}"
    if run.message:
        line += f": {run.message}"
    if run.seconds is not None:
        line += f" ({run.seconds:.0f}s)"
    return line


def gate_lines(run: StackRun) -> list[str]:
    marks = {True: "passed", False: "FAILED", None: "skipped"}
    return [f"  - gate {g.gate}: {marks[g.ok]}: {g.message}" for g in run.gates]


def plan_summary(waves: Iterable[Wave], runs: Mapping[str, StackRun], unlisted: Iterable[str]) -> str:
    """The fleet's plan: per wave, what each stack's preview and review say; then the totals."""
    out = ["### Fleet plan", "", "| wave | stack | changes | restarts | refusals |", "|---|---|---|---|---|"]
    for wave in waves:
        for name in wave.stacks:
            r = runs[name]
            restarts = "?" if r.restarts is None else str(r.restarts)
            refused = "; ".join(r.refusals) or ("preview failed: " + r.message if r.outcome == "failed" else "none")
            out.append(f"| {wave.index + 1} | {name} | {changes_text(r.changes)} | {restarts} | {refused} |")
    changing = [r for r in runs.values() if r.changes]
    refusing = [r for r in runs.values() if r.refusals or r.outcome == "failed"]
    out += ["", f"{len(changing)} of {len(runs)} stack(s) change, "
            f"{sum(r.restarts or 0 for r in runs.values())} workload(s) restarted in all, "
            f"{len(refusing)} stack(s) refused."]
    left = list(unlisted)
    if left:
        out.append(f"Not in any wave (a fleet run never touches them): {', '.join(left)}.")
    return "\n".join(out) + "\n"


def stop_message(waves: list[Wave], runs: Mapping[str, StackRun], at: Wave, command: str) -> str:
    """Where the run stopped, why, what it never touched, and the command that resumes it."""
    bad = [runs[s] for s in at.stacks if s in runs and runs[s].stopped]
    why = []
    for r in bad:
        failed = [g for g in r.gates if g.ok is False]
        detail = "; ".join(f"gate {g.gate}: {g.message}" for g in failed) if failed else r.message
        why.append(f"`{r.stack}` {r.outcome}: {detail}")
    later = [w for w in waves if w.index > at.index]
    untouched = [s for s in at.stacks if s not in runs] + [s for w in later for s in w.stacks]
    out = [f"Stopped at {at.label}.", *(f"- {w}" for w in why)]
    out.append(f"Untouched: {', '.join(untouched)}." if untouched else "No later wave.")
    if any(r.outcome == "locked" for r in bad):
        out.append("A locked stack is being updated by someone else: wait for that update to end (never cancel it "
                   "from here), then resume.")
    out.append(f"Fix the cause, then resume with `{command}`: stacks whose preview shows no change are not "
               "updated again, only their gates are held.")
    return "\n".join(out) + "\n"


def wave_healthy(runs: Iterable[StackRun]) -> bool:
    return all(not r.stopped and healthy(r.gates) for r in runs)
