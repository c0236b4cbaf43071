"""The fleet file: which stacks go in which wave, how many at once, how long to soak, which gates to hold.

    project: .                      # the Pulumi project, relative to this file (default: its folder)
    waves:                          # in order; a wave starts only when the one before is healthy
      - [dev]
      - [staging-eu, staging-us]
      - ["prod-*"]                  # shell-style patterns over the project's stacks
    parallel: 2                     # stacks of one wave updated at the same time
    soakSeconds: 300                # wait after a wave's updates, then hold the gates again
    protected: ["prod-*"]           # stacks whose update needs CI's protected environment (the last waves)
    prometheus:                     # optional gate: the query's value must stay at or under `max`
      query: sum(rate(istio_requests_total{response_code=~"5.."}[5m]))
      max: 0.5
      urls: {"prod-*": "http://prometheus.example:9090"}   # stack pattern -> Prometheus, first match wins

Every problem is reported at once, each naming its key, before any stack is previewed.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class FleetError(Exception):
    """Every problem of a fleet file (or of its stacks), each as `<file>: <key>: <what to do>`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {source}: {p}" for p in problems)
        super().__init__(f"the fleet file has {len(problems)} problem(s):\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Prometheus(_Model):
    """A health query per stack; stacks without a URL skip it, saying so."""

    query: str = Field(min_length=1)
    max: float
    urls: dict[str, str] = Field(default_factory=dict)

    def url_for(self, stack: str) -> str | None:
        return next((url for pattern, url in self.urls.items() if fnmatchcase(stack, pattern)), None)


class FleetFile(_Model):
    project: str = "."
    waves: list[list[str]] = Field(min_length=1)
    parallel: int = Field(default=1, ge=1)
    soak_seconds: int = Field(default=0, ge=0)
    protected: list[str] = Field(default_factory=list)
    prometheus: Prometheus | None = None


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_fleet(data: Any, source: str = "fleet.yaml") -> FleetFile:
    """The fleet file's model, or a FleetError naming every bad key (an empty wave, a wave that is not a list)."""
    if not isinstance(data, Mapping):
        raise FleetError(source, ["(top level): must be a mapping with at least `waves`, e.g. waves: [[dev], [prod]]"])
    try:
        fleet = FleetFile.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            hint = ' (list stack names or patterns, e.g. ["prod-*"])' if err["loc"][:1] == ("waves",) else ""
            problems.append(f"{_key(err['loc'])}: {err['msg']}{hint}")
        raise FleetError(source, problems) from None
    empty = [f"waves[{i}]: an empty wave: list at least one stack or pattern, or remove it"
             for i, wave in enumerate(fleet.waves) if not wave]
    if empty:
        raise FleetError(source, empty)
    return fleet


def load_fleet(text: str, source: str) -> FleetFile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FleetError(source, [f"(top level): not YAML: {str(e).splitlines()[0]}"]) from None
    return parse_fleet(data, source)
