"""Rule 3: behaviour changes between Istio minors, from the target chart's own compatibility profiles.

Each chart ships `files/profile-compatibility-version-X.Y.yaml`: the flags whose default changed after X.Y, set
back to their X.Y values. A revision (or istio-cni) that moves from X.Y to a newer minor gets exactly the flags of
the target chart's X.Y profile flipped; `values.compatibilityVersion: "X.Y"` keeps the old behaviour, and a flag
set in `values` keeps its value whatever the profile. A `compatibilityVersion` with no profile in the chart makes
Helm fail to render (`unknown compatibility version`): refused, naming the accepted values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mesh.charts import ChartName
from mesh.checks import Finding, passed, refusal, warning
from mesh.checks.chart_facts import ROOT_ALIASES, ChartFacts, Flag, leaves, minor_key
from mesh.checks.steps import Step, minor

RULE = "behaviour-changes"
KEY = "compatibilityVersion"

Library = Mapping[tuple[str, str], ChartFacts]
"""(chart, version) -> its facts, for the charts that could be read."""


def compatibility_versions(uses: Iterable[tuple[str, ChartName, str, Mapping[str, Any]]],
                           library: Library) -> list[Finding]:
    """Every `values.compatibilityVersion` against the profiles its chart ships (refused when it has none)."""
    findings = []
    for key, chart, version, values in uses:
        if KEY not in values or (facts := library.get((chart, version))) is None:
            continue
        wanted, accepted = values[KEY], facts.accepted_compatibility
        if isinstance(wanted, str) and wanted in facts.compatibility:
            findings.append(passed(RULE, f"{key}.values.{KEY}", f"{chart} chart {version} ships the {wanted} profile"))
            continue
        quote = (f' (YAML read the number {wanted}: quote it, "{wanted}" is not "1.30")'
                 if isinstance(wanted, float) else "")
        offered = f"one of {', '.join(accepted)}" if accepted else "none: this chart ships no compatibility profile"
        findings.append(refusal(
            RULE, f"{key}.values.{KEY}",
            f"is {wanted!r}{quote}, but the {chart} chart {version} accepts {offered} (Helm fails with "
            "`unknown compatibility version`): set one of those, or remove the key", accepted=accepted))
    return findings


def flips(step: Step, facts: ChartFacts) -> tuple[Flag, ...] | None:
    """The flags that flip when `step` moves its chart from `before`'s minor to `after`'s (the target chart's
    profile for the old minor); None when the chart keeps no profile for it."""
    assert step.before is not None
    return facts.compatibility.get(minor(step.before))


def check(steps: Iterable[Step], values: Mapping[str, Mapping[str, Any]], library: Library) -> list[Finding]:
    """`values`: config key -> the user's values for that step's chart (`revisions.<r>` -> its values)."""
    findings = []
    for step in steps:
        if step.before is None or step.minors <= 0:
            continue
        facts = library.get((step.chart, step.after))
        if facts is None:
            continue
        old = minor(step.before)
        found = flips(step, facts)
        own = values.get(step.key) or {}
        if found is None:
            findings.append(warning(
                RULE, step.key,
                f"moves {step.before} -> {step.after}, but the {step.chart} chart {step.after} keeps no compatibility "
                f"profile for {old} (it has {', '.join(facts.accepted_compatibility) or 'none'}): read the upgrade "
                "notes of every minor in between", before=step.before, after=step.after))
            continue
        kept = own.get(KEY)
        if isinstance(kept, str) and kept in facts.compatibility and minor_key(kept) <= minor_key(old):
            findings.append(passed(
                RULE, f"{step.key}.values.{KEY}",
                f"moves {step.before} -> {step.after} keeping {kept}'s behaviour (compatibilityVersion {kept})",
                flags=[f.path for f in found]))
            continue
        pinned = _set_in_values(own, step.chart)
        changing = [f for f in found if f.path not in pinned]
        if not changing:
            findings.append(passed(RULE, step.key, f"moves {step.before} -> {step.after}; every flag that changes "
                                   f"after {old} is set in its values"))
            continue
        listed = ", ".join(f"{f.path} ({old}: {_show(f.value)}{f', changed in {f.changed_in}' if f.changed_in else ''})"
                           for f in changing)
        findings.append(warning(
            RULE, step.key,
            f"moves {step.before} -> {step.after}, which changes the default of {listed}: to keep {old}'s behaviour "
            f'set {step.key}.values.{KEY} to "{old}" (or set a flag in values), and drop it once tested',
            before=step.before, after=step.after, keep=old,
            flags={f.path: {"old": f.value, "changed_in": f.changed_in} for f in changing}))
    return findings


def _set_in_values(values: Mapping[str, Any], chart: str) -> set[str]:
    """The leaf paths the user's values set, with a chart's root aliases (istiod's `pilot.`) both ways."""
    paths = {path for path, _ in leaves(values)}
    for alias in ROOT_ALIASES.get(chart, ()):
        prefix = alias + "."
        paths |= {p.removeprefix(prefix) for p in paths if p.startswith(prefix)}
        paths |= {prefix + p for p in list(paths) if not p.startswith(prefix)}
    return paths


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
