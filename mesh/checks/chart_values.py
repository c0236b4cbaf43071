"""Rule 4: values the target chart never reads, and the ones its own deprecation list names.

A key is read when the chart's `values.yaml` has it (a free-form default, `{}` or `[]`, takes any keys below it),
or when a template or injection file names `.Values.<key>` (or a map above it, whole); istiod reads `pilot.<key>`
as `<key>`. Anything else is silently ignored by Helm: a warning naming the key and the chart version. istiod's
`NOTES.txt` lists deprecated keys (rendered with a warning: ours names the replacement) and removed ones (Helm
fails: refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mesh.charts import ChartName
from mesh.checks import Finding, passed, refusal, warning
from mesh.checks.chart_facts import ROOT_ALIASES, ChartFacts, leaves

RULE = "chart-values"

Library = Mapping[tuple[str, str], ChartFacts]


def unread(values: Mapping[str, Any], facts: ChartFacts) -> list[str]:
    """The paths in `values` the chart never reads (the shortest such path of each subtree)."""
    found: list[str] = []
    aliases = ROOT_ALIASES.get(facts.chart, ())
    for key, value in values.items():
        if key in aliases and isinstance(value, Mapping):
            _walk(value, facts.defaults, (), key + ".", facts, found)
        else:
            _walk({key: value}, facts.defaults, (), "", facts, found)
    return found


def _walk(values: Mapping[str, Any], defaults: Any, path: tuple[str, ...], shown: str, facts: ChartFacts,
          found: list[str]) -> None:
    for key, value in values.items():
        here = (*path, key)
        dotted = ".".join(here)
        default = defaults.get(key, _MISSING) if isinstance(defaults, Mapping) else _MISSING
        if default is not _MISSING:
            whole = dotted in facts.references
            if isinstance(default, Mapping) and default and isinstance(value, Mapping) and not whole:
                _walk(value, default, here, shown, facts, found)
            continue
        below = any(r.startswith(dotted + ".") for r in facts.references)
        if dotted in facts.references and not below:
            continue
        if below and isinstance(value, Mapping):
            _walk(value, None, here, shown, facts, found)
        elif dotted not in facts.references:
            found.append(shown + dotted)


_MISSING = object()


def check(uses: Iterable[tuple[str, ChartName, str, Mapping[str, Any]]], library: Library) -> list[Finding]:
    """`uses`: (config key, chart, version, the user's values) for every chart release the config renders."""
    findings = []
    for key, chart, version, values in uses:
        facts = library.get((chart, version))
        if facts is None or not values:
            continue
        problems = []
        for path in unread(values, facts):
            problems.append(warning(
                RULE, f"{key}.values.{path}",
                f"is not read by the {chart} chart {version} (not in its values.yaml, named by no template): Helm "
                "ignores it; check the spelling against the chart's values.yaml, or remove it",
                chart=chart, version=version))
        set_paths = {p for p, _ in leaves(values)}
        for path in sorted(facts.removed):
            if any(p == path or p.startswith(path + ".") for p in set_paths):
                problems.append(refusal(
                    RULE, f"{key}.values.{path}",
                    f"is removed in the {chart} chart {version} (it fails to render: `{path} is removed`): remove it",
                    chart=chart, version=version))
        for path, instead in sorted(facts.deprecated.items()):
            if any(p == path or p.startswith(path + ".") for p in set_paths):
                problems.append(warning(
                    RULE, f"{key}.values.{path}",
                    f"is deprecated in the {chart} chart {version}: use {instead} instead", chart=chart,
                    version=version, instead=instead))
        findings += problems or [passed(RULE, f"{key}.values", f"every key is read by the {chart} chart {version}")]
    return findings
