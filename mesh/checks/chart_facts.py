"""What a chart itself says about the values it takes, parsed from its files (text in, data out; the files are
read by `mesh.chart_files`). Nothing here is kept by hand: a new chart version brings its own facts.

- `defaults`: the chart's `values.yaml` (from Istio 1.24 under `_internal_defaults_do_not_set`, unwrapped here).
- `references`: every `.Values.<path>` its templates and files name (the injection templates in `files/` are
  rendered by istiod from the same values, so they read them too); a whole map named so (`toYaml
  .Values.meshConfig`) is read with every key below it.
- `compatibility`: its `files/profile-compatibility-version-<X.Y>.yaml` profiles, what `compatibilityVersion`
  accepts: each sets the behaviour flags that changed after X.Y back to their X.Y values.
- `deprecated` / `removed`: the deprecation lists of its `NOTES.txt` (istiod's `$deps` and `$failDeps`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

INTERNAL_DEFAULTS = "_internal_defaults_do_not_set"
COMPATIBILITY_PROFILE = re.compile(r"^profile-compatibility-version-(\d+\.\d+)\.yaml$")
_REFERENCE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_CHANGED_IN = re.compile(r"#\s*(\d+\.\d+)\s+behaviou?ral changes")
_LEAF = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*\S")
_GENERIC = ("zzz_profile.yaml", "zzy_descope_legacy.yaml", "NOTES.txt")
"""Templates that touch whole value maps generically (profiles, aliases, null-safe lookups of the deprecation
list): a map with keys of its own that they name is not thereby read whole (their other names count)."""
_DICT = r"\$%s\s*:=\s*dict(.*?)}}"
_QUOTED = re.compile(r'"([^"]*)"')

ROOT_ALIASES: Mapping[str, tuple[str, ...]] = {"istiod": ("pilot",)}
"""Keys a chart copies onto its root before rendering (istiod's `zzy_descope_legacy.yaml` merges `.pilot` into
`.`), so `pilot.env.X` and `env.X` are one value."""


@dataclass(frozen=True)
class Flag:
    """One value a compatibility profile sets: its path, the old value it restores, the minor it changed in."""

    path: str
    value: Any
    changed_in: str | None


@dataclass(frozen=True)
class ChartFacts:
    chart: str
    version: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    references: frozenset[str] = frozenset()
    compatibility: Mapping[str, tuple[Flag, ...]] = field(default_factory=dict)
    deprecated: Mapping[str, str] = field(default_factory=dict)
    """Path -> what replaces it (the chart renders, with a warning)."""
    removed: frozenset[str] = frozenset()
    """Paths the chart refuses to render with (`fail ... is removed`)."""

    @property
    def accepted_compatibility(self) -> list[str]:
        """The values `compatibilityVersion` takes, oldest first (anything else fails to render)."""
        return sorted(self.compatibility, key=minor_key)


def minor_key(minor: str) -> tuple[int, ...]:
    return tuple(int(p) for p in minor.split("."))


def parse_chart(chart: str, version: str, values_yaml: str, texts: Mapping[str, str]) -> ChartFacts:
    """The facts of one chart from its `values.yaml` and the text of its templates and files (name -> text)."""
    raw = yaml.safe_load(values_yaml) or {}
    defaults = {k: v for k, v in raw.items() if k != INTERNAL_DEFAULTS}
    defaults.update(raw.get(INTERNAL_DEFAULTS) or {})
    references: set[str] = set()
    compatibility: dict[str, tuple[Flag, ...]] = {}
    deprecated: dict[str, str] = {}
    removed: set[str] = set()
    for name, text in texts.items():
        base = name.rsplit("/", 1)[-1]
        if match := COMPATIBILITY_PROFILE.match(base):
            compatibility[match.group(1)] = parse_profile(text)
            continue
        named = {m.group(1)[1:] for m in _REFERENCE.finditer(text.replace("(", " ").replace(")", ""))}
        references.update(named if base not in _GENERIC else {r for r in named if not _structured(defaults, r)})
        if base == "NOTES.txt":
            deprecated.update(_dict_literal(text, "deps"))
            removed.update(_dict_literal(text, "failDeps"))
    return ChartFacts(chart, version, defaults, frozenset(references), compatibility, deprecated, frozenset(removed))


def _structured(defaults: Mapping[str, Any], path: str) -> bool:
    """Whether `path` is a map with keys of its own in the chart's defaults."""
    node: Any = defaults
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return isinstance(node, Mapping) and bool(node)


def parse_profile(text: str) -> tuple[Flag, ...]:
    """A compatibility profile's leaves, each with the minor its `# X.Y behavioral changes` comment names."""
    changed_in: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if match := _CHANGED_IN.search(line):
            current = match.group(1)
        elif (match := _LEAF.match(line)) and current:
            changed_in.setdefault(match.group(1), current)
    values = yaml.safe_load(text) or {}
    return tuple(Flag(path, value, changed_in.get(path.rsplit(".", 1)[-1])) for path, value in leaves(values))


def leaves(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a values tree as (`a.b.c`, value); an empty mapping is a leaf."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaves(value, path + ".")
        else:
            yield path, value


def _dict_literal(text: str, name: str) -> dict[str, str]:
    """A Helm `$name := dict "k" "v" ...` literal as a mapping."""
    match = re.search(_DICT % re.escape(name), text, re.S)
    if not match:
        return {}
    words = _QUOTED.findall(match.group(1))
    return dict(zip(words[::2], words[1::2], strict=False))
