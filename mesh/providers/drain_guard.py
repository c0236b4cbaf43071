"""DrainGuard: one per revision; its delete refuses while any pod still runs that revision, or any
namespace label or workload pod template still selects it (mesh.drain).

The components make the guard depend on every object of the revision's istiod chart, so when the
revision leaves the config the engine deletes the guard first (reverse dependency order). A
refusal fails that delete, and with it the removal: the revision stays installed and the guard
stays in the state. Create and update touch nothing; they only record the inputs the delete will
run with (delete runs the provider and the properties of the old state).
"""

from __future__ import annotations

from collections.abc import Iterator
from time import monotonic, sleep
from typing import Any

import pulumi
from kubernetes import client
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult

from mesh import kube
from mesh.drain import (
    TEMPLATE_KINDS,
    PodTemplate,
    Selectors,
    pods_using,
    refusal_message,
    selectors_of,
    template_from_object,
)
from mesh.providers import KubeProvider, is_unknown, progress
from mesh.workloads import pod_from_object

POLL_SECONDS = 5.0


class RevisionInUseError(Exception):
    """The revision still has pods; the message says where and how to move them."""


def revision_users(api: client.ApiClient, revision: str) -> dict[str, list[str]]:
    """Pods cluster-wide that use `revision`, by namespace. Annotations cannot be selected on
    server-side, so every pod is listed (page by page) and filtered here."""
    pods = (pod_from_object(p) for p in kube.list_objects(kube.collection(api, "Pod")))
    return pods_using(pods, revision)


def each_template(api: client.ApiClient) -> Iterator[PodTemplate]:
    """The pod template of every workload that makes pods later, cluster-wide: one paged list per kind, read
    as it is used, so a reader that folds them holds one page of workloads at a time."""
    return (template_from_object(kind, obj) for kind in TEMPLATE_KINDS
            for obj in kube.list_objects(kube.collection(api, kind)))


def revision_selectors(api: client.ApiClient, revision: str) -> Selectors:
    """Namespace labels and workload pod templates cluster-wide that still select `revision` (the templates
    folded page by page: only those that select it are kept)."""
    namespaces = {(ns.get("metadata") or {}).get("name", ""): (ns.get("metadata") or {}).get("labels") or {}
                  for ns in kube.list_objects(kube.collection(api, "Namespace"))}
    return selectors_of(revision, namespaces, each_template(api))


class DrainGuardProvider(KubeProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if not news.get("revision"):
            failures.append(CheckFailure("revision", "must not be empty"))
        timeout = news.get("drain_timeout_seconds")
        if not is_unknown(timeout) and (not isinstance(timeout, int | float) or timeout < 0):
            failures.append(CheckFailure("drain_timeout_seconds", f"must be a number >= 0, not {timeout!r}"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A new revision is a new guard; a new drain timeout must reach the state (an update),
        because delete reads it from there."""
        replaces = ["revision"] if olds.get("revision") != news.get("revision") else []
        changed = replaces or olds.get("drain_timeout_seconds") != news.get("drain_timeout_seconds")
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["revision"], outs=_outs(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_outs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Let the revision go once no pod uses it; wait up to the drain timeout, then refuse."""
        revision = props["revision"]
        timeout = float(props.get("drain_timeout_seconds") or 0)
        deadline = monotonic() + timeout
        with kube.api_client(self.kube_settings()) as api:
            while True:
                users = revision_users(api, revision)
                selectors = revision_selectors(api, revision)
                if not users and not selectors:
                    progress(f"revision {revision}: no pod uses it and no label selects it any more; it may be "
                             "removed")
                    return
                left = deadline - monotonic()
                if left <= 0:
                    raise RevisionInUseError(refusal_message(revision, users, selectors))
                count = sum(len(names) for names in users.values())
                where = sorted({*users, *selectors.namespaces, *selectors.templates})
                progress(
                    f"revision {revision}: {count} pod(s) use it, {len(selectors.namespaces)} namespace label(s) "
                    f"and {sum(map(len, selectors.templates.values()))} pod template(s) select it, in "
                    f"{', '.join(where)}; waiting up to {left:.0f}s more for them to move"
                )
                sleep(min(POLL_SECONDS, left))


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    return {"revision": props["revision"], "drain_timeout_seconds": props.get("drain_timeout_seconds") or 0}


class DrainGuard(pulumi.dynamic.Resource, module="mesh", name="DrainGuard"):
    """Keeps revision `revision` installed while pods use it; see module doc."""

    revision: pulumi.Output[str]
    drain_timeout_seconds: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        *,
        revision: pulumi.Input[str],
        drain_timeout_seconds: pulumi.Input[int],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"revision": revision, "drain_timeout_seconds": drain_timeout_seconds}
        super().__init__(DrainGuardProvider(), name, props, opts)
