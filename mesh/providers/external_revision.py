"""ExternalRevision: a revision installed outside the stack, checked in the cluster, never installed or deleted.

One per `revisions.<r>: {external: true}`, in place of an IstioRevision: bindings, gateways and tags on it wait for
it as they wait for an installed revision. `check` (so at preview) reads every MutatingWebhookConfiguration once and
the revision's injector ConfigMap, and refuses when no injection webhook of the revision exists, or when a tag of
the stack points at it while its webhook calls something the tag's webhook would not (mesh.external_revision).
What it read (webhook, what it calls, version, proxy image, injector policy) becomes its outputs, so the preview
shows the version its installer moved it to. Create and update read again (the cluster may have changed since the
preview); delete touches nothing: the revision is not the stack's.
"""

from __future__ import annotations

from typing import Any

import pulumi
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult

from mesh import kube
from mesh.external_revision import (
    ExternalFacts,
    configmap_namespace,
    external_facts,
    find_injector,
    injector_configmap,
    missing_message,
    tag_target_problem,
)
from mesh.providers import KubeProvider, is_unknown
from mesh.providers.namespace_labels import UNREACHABLE

FACTS = ("webhook", "calls", "version", "proxy_image", "injector")
"""What `check` reads from the cluster into the resource's properties."""


class ExternalRevisionMissingError(Exception):
    """The external revision's injection webhook is not in the cluster; the message says what is missing."""


def read_webhooks(api: client.ApiClient) -> dict[str, dict[str, Any]]:
    """Every MutatingWebhookConfiguration, by name (one list)."""
    found = kube.list_objects(kube.collection(api, "MutatingWebhookConfiguration"))
    return {hook["metadata"]["name"]: hook for hook in found}


def read_configmap(api: client.ApiClient, name: str, namespace: str) -> dict[str, Any] | None:
    """A ConfigMap as a plain dict, None when absent."""
    return kube.find(api, "ConfigMap", name, namespace)


def read_external(api: client.ApiClient, revision: str,
                  webhooks: dict[str, dict[str, Any]] | None = None) -> tuple[ExternalFacts | None, dict[str, Any]]:
    """The revision's facts (None when it has no injection webhook) and the webhook they were read from."""
    hooks = read_webhooks(api) if webhooks is None else webhooks
    hook = find_injector(revision, hooks)
    if hook is None:
        return None, {}
    configmap = read_configmap(api, injector_configmap(revision), configmap_namespace(hook))
    return external_facts(revision, hook, configmap), dict(hook)


class ExternalRevisionProvider(KubeProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        revision, tags = news.get("revision"), news.get("tags") or []
        if is_unknown(revision) or is_unknown(tags):
            return CheckResult(news, [])
        try:
            with kube.api_client(self.kube_settings()) as api:
                facts, hook = read_external(api, revision)
        except (ApiException, *UNREACHABLE):
            return CheckResult(news, [])  # nothing known to refuse on: create/update read again
        if facts is None:
            return CheckResult(news, [CheckFailure("revision", missing_message(revision))])
        failures = [CheckFailure("tags", problem) for tag in sorted(tags)
                    if (problem := tag_target_problem(tag, revision, hook))]
        return CheckResult({**news, **{k: facts.props()[k] for k in FACTS}}, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Its tags, or what the cluster says of it (a version its installer moved it to), changed."""
        changed = any(olds.get(k) != news.get(k) for k in ("revision", "tags", *FACTS) if k in news)
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"external-{props['revision']}", outs=self._read(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._read(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """The revision is its installer's: nothing of it is ever deleted."""

    def _read(self, props: dict[str, Any]) -> dict[str, Any]:
        revision = props["revision"]
        with kube.api_client(self.kube_settings()) as api:
            facts, hook = read_external(api, revision)
        if facts is None:
            raise ExternalRevisionMissingError(missing_message(revision))
        problems = [p for tag in sorted(props.get("tags") or []) if (p := tag_target_problem(tag, revision, hook))]
        if problems:
            raise ExternalRevisionMissingError("; ".join(problems))
        return {"revision": revision, "tags": props.get("tags") or [], **{k: facts.props()[k] for k in FACTS}}


class ExternalRevision(pulumi.dynamic.Resource, module="mesh", name="ExternalRevision"):
    """A revision installed outside the stack, as the cluster shows it; see module doc."""

    revision: pulumi.Output[str]
    version: pulumi.Output[str]
    """Its version as the cluster says ("" when unknown)."""
    proxy_image: pulumi.Output[str]
    """The proxy image its injector writes now ("" when unknown: a remote injector)."""

    def __init__(self, name: str, *, revision: str, tags: list[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`tags` are the stack's tags pointing at it, whose webhooks must reach the same injector."""
        props: dict[str, Any] = {"revision": revision, "tags": sorted(tags), **dict.fromkeys(FACTS)}
        super().__init__(ExternalRevisionProvider(), name, props, opts)
