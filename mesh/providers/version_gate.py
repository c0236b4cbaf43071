"""VersionGate: refuses an in-place version jump of an existing revision, before anything else changes.

Whether `revisions.<name>.version` may change depends on what it was last deployed as, which only the
engine knows. A dynamic resource's `check` receives exactly that (its previous inputs), so the rule from
`mesh.validation.in_place_changes` runs there; everything else in the mesh depends on the gate, so a
refused change stops the preview and the update before any cluster object is touched. No cluster I/O.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

from mesh.validation import in_place_changes


class VersionGateProvider(ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        previous = _olds.get("versions") or {}
        current = news.get("versions") or {}
        failures = [CheckFailure("versions", str(e)) for e in in_place_changes(previous, current)]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = (olds.get("versions") or {}) != (news.get("versions") or {})
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="versions", outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)


class VersionGate(pulumi.dynamic.Resource, module="mesh", name="VersionGate"):
    """Records each revision's deployed version; its check refuses jumps of more than one minor."""

    versions: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, *, versions: dict[str, str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(VersionGateProvider(), name, {"versions": versions}, opts)
