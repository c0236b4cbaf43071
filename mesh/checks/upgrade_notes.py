"""Rule 5: Istio's upgrade notes between the deployed and the target version of each step.

Istio keeps one file per change in `releasenotes/notes/*.yaml` (`upgradeNotes: [{title, content}]` where an
upgrade needs attention); its release tooling lists a release's notes as those in its tree and not in the
previous release's. The same here: the notes of a step are those present at `after` and absent at `before`,
each version's set read from the chart mirror (`<charts>/releasenotes/notes`) or the istio.io/istio snapshot its
`SOURCE` names (`mesh.chart_files`). What it cannot know: versions whose notes are not there, and a step
between two versions of one snapshot (both have the same notes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from mesh.checks import Finding, passed, warning
from mesh.checks.steps import Step

RULE = "upgrade-notes"


@dataclass(frozen=True)
class Note:
    """One release-note file's upgrade notes (`title`, `content`), with its kind and area."""

    id: str
    kind: str
    area: str
    upgrade: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def parse_note(note_id: str, text: str) -> Note:
    data = yaml.safe_load(text) or {}
    upgrade = tuple((str(u.get("title") or "").strip(), str(u.get("content") or "").strip())
                    for u in data.get("upgradeNotes") or [] if isinstance(u, Mapping))
    return Note(note_id, str(data.get("kind") or ""), str(data.get("area") or ""), upgrade)


def between(before: frozenset[str], after: frozenset[str]) -> list[str]:
    """The note files new at `after`: Istio's own definition of a release's notes."""
    return sorted(after - before)


def to_read(steps: Iterable[Step], available: Mapping[str, frozenset[str]]) -> dict[str, set[str]]:
    """Version -> the note files to parse from its snapshot: those new in some step (for a downgrade, those the
    step takes back, which the snapshot of `before` holds)."""
    wanted: dict[str, set[str]] = {}
    for step in steps:
        if step.before in available and step.after in available and step.before != step.after:
            old, new = available[step.before], available[step.after]
            holder, ids = (step.after, between(old, new)) if step.minors >= 0 else (step.before, between(new, old))
            wanted.setdefault(holder, set()).update(ids)
    return wanted


def check(steps: Iterable[Step], available: Mapping[str, frozenset[str]],
          notes: Mapping[str, Note]) -> list[Finding]:
    """`available`: version -> the note files its snapshot carries (versions without any are absent);
    `notes`: the parsed notes of the files new in some step (`between`)."""
    findings = []
    for step in steps:
        if step.before is None or step.before == step.after:
            continue
        old, new = available.get(step.before), available.get(step.after)
        if old is None or new is None:
            missing = ", ".join(v for v in (step.before, step.after) if v not in available)
            findings.append(warning(
                RULE, step.key,
                f"moves {step.before} -> {step.after}, and no release notes are at hand for {missing}: read "
                f"https://istio.io/latest/news/releases/ for each version in between, or add them to the chart "
                "mirror (see the README, \"Checks\")", before=step.before, after=step.after))
            continue
        ids = between(old, new) if step.minors >= 0 else between(new, old)
        upgrade: dict[str, Any] = {i: notes[i] for i in ids if i in notes and notes[i].upgrade}
        if old == new:
            findings.append(warning(
                RULE, step.key, f"moves {step.before} -> {step.after}, whose notes come from the same Istio snapshot, "
                "so none can be told apart: read the patch release's announcement", before=step.before,
                after=step.after))
        elif not upgrade:
            findings.append(passed(RULE, step.key, f"{step.before} -> {step.after}: {len(ids)} release notes, none "
                                   "with upgrade notes", notes=len(ids)))
        else:
            titles = "; ".join(f"{t} ({n.area})" for n in upgrade.values() for t, _ in n.upgrade)
            findings.append(warning(
                RULE, step.key,
                f"moves {step.before} -> {step.after}: Istio's upgrade notes say: {titles}",
                before=step.before, after=step.after,
                notes=[{"id": n.id, "area": n.area, "title": t, "content": c}
                       for n in upgrade.values() for t, c in n.upgrade]))
    return findings
