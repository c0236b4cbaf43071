"""The fleet file's waves as stack names: every pattern resolved against the project's stacks, once.

A stack belongs to one wave only (two waves would update it twice, the second time without its own gate),
and a pattern that matches nothing is an error, not an empty wave: a typo must not skip a cluster. Protected
stacks come last: CI runs them in a second job behind its protected environment, after the first job's waves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from mesh.fleet.fleet_file import FleetError, FleetFile
from mesh.spec import closest

Part = Literal["all", "unprotected", "protected"]


@dataclass(frozen=True)
class Wave:
    index: int
    """Its place in the fleet file (0-based), so a message says `waves[2]` even when CI runs a part."""
    stacks: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"wave {self.index + 1} ({', '.join(self.stacks)})"


def _matches(pattern: str, stacks: Iterable[str]) -> list[str]:
    return sorted(s for s in stacks if fnmatchcase(s, pattern))


def resolve(fleet: FleetFile, stacks: Iterable[str], source: str = "fleet.yaml") -> list[Wave]:
    """The waves as stack names, in order; FleetError naming each pattern that matches nothing (with the closest
    stack), each stack listed in two waves, and each protected stack that comes before an unprotected one."""
    known = sorted(set(stacks))
    problems: list[str] = []
    placed: dict[str, int] = {}
    waves = []
    for i, patterns in enumerate(fleet.waves):
        names: list[str] = []
        for j, pattern in enumerate(patterns):
            found = _matches(pattern, known)
            if not found:
                near = closest(pattern, known)
                hint = f' (did you mean "{near}"?)' if near else ""
                problems.append(f'waves[{i}][{j}]: "{pattern}" matches no stack of the project{hint}; '
                                f"stacks: {', '.join(known) or 'none'}")
            for name in found:
                if name in placed and placed[name] != i:
                    problems.append(f'waves[{i}][{j}]: stack "{name}" is already in waves[{placed[name]}]: '
                                    "a stack belongs to one wave")
                elif name not in names:
                    placed[name] = i
                    names.append(name)
        waves.append(Wave(i, tuple(names)))
    for j, pattern in enumerate(fleet.protected):
        if not _matches(pattern, known):
            problems.append(f'protected[{j}]: "{pattern}" matches no stack of the project; '
                            f"stacks: {', '.join(known) or 'none'}")
    guarded = protected(fleet, placed)
    last_open = max((placed[s] for s in placed if s not in guarded), default=-1)
    for name in sorted(guarded, key=lambda s: placed[s]):
        if placed[name] < last_open:
            problems.append(f'protected: stack "{name}" (waves[{placed[name]}]) comes before unprotected stacks '
                            f"(waves[{last_open}]): CI updates protected stacks after all others, so move them "
                            "to the last waves")
    if problems:
        raise FleetError(source, problems)
    return waves


def protected(fleet: FleetFile, stacks: Iterable[str]) -> set[str]:
    return {s for s in stacks if any(fnmatchcase(s, p) for p in fleet.protected)}


def part(fleet: FleetFile, waves: list[Wave], which: Part) -> list[Wave]:
    """The waves a run covers: all, or (CI's two jobs) only the unprotected or only the protected stacks."""
    if which == "all":
        return waves
    guarded = protected(fleet, (s for w in waves for s in w.stacks))
    keep = (lambda s: s in guarded) if which == "protected" else (lambda s: s not in guarded)
    out = [Wave(w.index, tuple(s for s in w.stacks if keep(s))) for w in waves]
    return [w for w in out if w.stacks]


def unlisted(waves: list[Wave], stacks: Iterable[str]) -> list[str]:
    """The project's stacks no wave names: the plan says so, since a fleet run never touches them."""
    listed = {s for w in waves for s in w.stacks}
    return sorted(set(stacks) - listed)
