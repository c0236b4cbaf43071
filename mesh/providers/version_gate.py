"""VersionGate: refuses an in-place version jump of an existing revision, before anything else changes.

Whether `revisions.<name>.version` may change depends on what it was last deployed as, which only the
engine knows. A dynamic resource's `check` receives exactly that (its previous inputs), so the rule from
`mesh.validation.in_place_changes` runs there, and so does `ownership_changes` (a revision may not switch
between installed by the stack and `external`, input `external`); everything else in the mesh depends on the
gate, so a refused change stops the preview and the update before any cluster object is touched. Its one cluster
read is the API server's version (`GET /version`): a revision below istioctl's minimum Kubernetes for its minor
(`mesh.checks.kubernetes_support`) is refused there too; an unreachable cluster is left to the resources that
need it.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult

from mesh import kube
from mesh.checks import REFUSAL, kubernetes_support
from mesh.providers import KubeProvider
from mesh.validation import in_place_changes, ownership_changes


class VersionGateProvider(KubeProvider):
    def cluster_version(self) -> str | None:
        """The API server's `gitVersion`, None when it cannot be read."""
        from kubernetes import client, config
        from urllib3.exceptions import HTTPError

        try:
            with kube.api_client(self.kube_settings()) as api:
                return kube.server_version(api, timeout=10)
        except (client.exceptions.ApiException, HTTPError, OSError, config.ConfigException):
            return None

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        previous = _olds.get("versions") or {}
        current = news.get("versions") or {}
        failures = [CheckFailure("versions", str(e)) for e in in_place_changes(previous, current)]
        failures += [CheckFailure("external", str(e)) for e in ownership_changes(
            previous, _olds.get("external") or [], current, news.get("external") or [])]
        revisions = {f"revisions.{name}": version for name, version in current.items()}
        found = kubernetes_support.check(self.cluster_version(), revisions)
        failures += [CheckFailure("versions", str(f)) for f in found if f.severity == REFUSAL]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = any((olds.get(k) or {}) != (news.get(k) or {}) for k in ("versions", "external"))
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="versions", outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)


class VersionGate(pulumi.dynamic.Resource, module="mesh", name="VersionGate"):
    """Records each revision's deployed version; its check refuses jumps of more than one minor."""

    versions: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, *, versions: dict[str, str], external: list[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`external`: the revisions installed outside the stack; only set when there are any, so stacks without
        them keep their inputs as they were."""
        props: dict[str, Any] = {"versions": versions, **({"external": external} if external else {})}
        super().__init__(VersionGateProvider(), name, props, opts)
