"""NamespaceLabels: the `istio.io/rev` label of every bound namespace, one resource for the whole stack.

Inputs: `namespaces` (namespace -> the label value: a tag or revision), `created` (the namespaces this
program creates in the same run, which need not exist yet) and `gateways` (the gateways in namespaces no
binding manages, with the tag or revision their pods ask for). `check` lists the cluster's namespaces once:
it refuses a bound namespace that does not exist, proves with a server-side dry run that a legacy
`istio-injection` label can be removed, and refuses a gateway whose unbound namespace carries an injection
label that would override its pods' (mesh.namespace_labels.gateway_label_conflicts), so a binding or a
gateway that cannot take effect is refused before anything changes (gateway charts wait for this
resource); and it records in `drift` what the cluster has that the bindings do not say (a label set by
hand since), so `diff` (pure) shows that as a change and the next `up` puts it right. `create`/`update`
list the namespaces again and patch only those that differ (mesh.namespace_labels decides); a failed or
interrupted run is simply planned again. Delete gives every label up, and every removed legacy label and
replaced hand-set `istio.io/rev` back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pulumi
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult
from urllib3.exceptions import HTTPError

from mesh import kube
from mesh.istio_vocabulary import LEGACY_INJECTION_ENABLED, LEGACY_INJECTION_LABEL, REV_LABEL
from mesh.namespace_labels import (
    FIELD_MANAGER,
    RESTORE_MANAGER,
    Change,
    GatewayPin,
    LiveNamespace,
    drift,
    gateway_label_conflicts,
    keep_patch,
    label_apply,
    live_namespace,
    plan,
    release_patch,
    removal_patch,
    restore_apply,
)
from mesh.providers import KubeProvider, is_unknown, progress
from mesh.spec import PROJECT

UNREACHABLE = (HTTPError, OSError, config.ConfigException)
"""No cluster to ask (e.g. a preview without credentials): the checks are left to `up`."""
LISTED_EACH = 20
"""Up to this many namespaces changed, each gets its own log line; more get one summary line."""


def list_namespaces(api: client.ApiClient) -> dict[str, LiveNamespace]:
    """Every namespace of the cluster, in one paged list: one call serves any number of bindings."""
    return {ns.name: ns for ns in map(live_namespace, kube.list_objects(kube.collection(api, "Namespace")))}


def api_message(e: ApiException) -> str:
    """The API server's reason for refusing a request."""
    try:
        message = json.loads(e.body or "{}").get("message") or e.body
    except ValueError:
        message = e.body
    return f"{e.status} {e.reason}: {message}"


def _key(namespace: str) -> str:
    return f"{PROJECT}:namespaces.{namespace}"


def _pins(value: Any) -> dict[str, GatewayPin]:
    """The `gateways` input (gateway -> {namespace, revision, canary?}); unknown during a preview: none to check."""
    if is_unknown(value) or not isinstance(value, Mapping):
        return {}
    return {name: GatewayPin(pin["namespace"], pin["revision"], pin.get("canary")) for name, pin in value.items()}


def _is_text_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


class NamespaceLabelsProvider(KubeProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        bound, created = news.get("namespaces"), news.get("created") or []
        if is_unknown(bound) or not _is_text_map(bound):
            return CheckResult({**news, "drift": {}}, [] if is_unknown(bound) else [
                CheckFailure("namespaces", "must map each namespace to its tag or revision")])
        try:
            with kube.api_client(self.kube_settings()) as api:
                live = list_namespaces(api)
                refusals = {ns: problem for ns in sorted(bound)
                            if ns in live and live[ns].legacy is not None
                            and (problem := _dry_run_removal(api, live[ns]))}
        except (ApiException, *UNREACHABLE):
            return CheckResult({**news, "drift": {}}, [])  # nothing known to refuse on: `up` does the real thing
        failures = [
            CheckFailure("namespaces", (
                f"{_key(ns)}: namespace {ns} does not exist in the cluster; the program never creates or deletes "
                "a namespace it binds: create it first, or remove the binding"))
            for ns in sorted(bound) if ns not in live and ns not in created
        ]
        failures += [
            CheckFailure("namespaces", (
                f"{_key(ns)}: namespace {ns} carries {LEGACY_INJECTION_LABEL}={live[ns].legacy}, which beats "
                f"{REV_LABEL}, and it cannot be removed ({problem}); bound, its pods would keep going "
                f"{'to the default tag' if live[ns].legacy == LEGACY_INJECTION_ENABLED else 'uninjected'}: allow "
                "the identity that runs pulumi to patch namespaces, or remove the label yourself, then preview again"))
            for ns, problem in refusals.items()
        ]
        failures += [
            CheckFailure("gateways", f"{PROJECT}:{key}: {problem}")
            for key, problem in gateway_label_conflicts(_pins(news.get("gateways")), live).items()
        ]
        return CheckResult({**news, "drift": drift(bound, live)}, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A binding added, moved or removed, or a label changed by hand since (`drift`, found by `check`)."""
        changed = olds.get("namespaces") != news.get("namespaces") or bool(news.get("drift"))
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._apply(props["namespaces"], released=())
        return CreateResult(id_="namespace-labels", outs=self._outs(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._apply(news["namespaces"], released=olds.get("namespaces") or {})
        return UpdateResult(outs=self._outs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self._apply({}, released=props.get("namespaces") or {})

    @staticmethod
    def _outs(props: Mapping[str, Any]) -> dict[str, Any]:
        """What the cluster now has: the bindings, and no drift."""
        return {"namespaces": props["namespaces"], "created": props.get("created") or [], "drift": {}}

    def _apply(self, bound: Mapping[str, str], released: Iterable[str]) -> None:
        with kube.api_client(self.kube_settings()) as api:
            todo = plan(bound, released, list_namespaces(api))
            if todo.missing:
                raise RuntimeError(
                    "bound namespaces do not exist: " + ", ".join(todo.missing)
                    + "; the program never creates a namespace it binds: create them, or remove their bindings")
            for change in todo.changes:
                _change(api, change)
                if len(todo.changes) <= LISTED_EACH:
                    progress(f"namespace {change.namespace}: {_describe(change)}")
        bound_now = sum(1 for c in todo.changes if c.label)
        released_now = sum(1 for c in todo.changes if c.release or c.restore_legacy or c.forget_legacy or c.forget_rev)
        progress(f"namespace labels: {bound_now} set, {released_now} given up, "
                 f"{len(bound) - bound_now} of {len(bound)} bound namespaces already right")


def _change(api: client.ApiClient, change: Change) -> None:
    ns = change.namespace
    if (keep := keep_patch(change)) is not None:
        kube.patch(api, "Namespace", ns, keep)  # remembered before the label is taken over: nothing lost
    if (back := restore_apply(change)) is not None:
        # Applied by another manager before ours lets go: the label is never absent in between.
        kube.patch(api, "Namespace", ns, back, content_type=kube.APPLY, field_manager=RESTORE_MANAGER, force=True)
    if change.label is not None or change.release:
        kube.patch(api, "Namespace", ns, label_apply(ns, change.label), content_type=kube.APPLY,
                   field_manager=FIELD_MANAGER, force=True)
    if change.remove_legacy is not None:
        # Read again after the apply: the JSON patch's annotation step depends on what is there now.
        now = live_namespace(kube.read(api, "Namespace", ns))
        kube.patch(api, "Namespace", ns, removal_patch(now, change.remove_legacy))
    if (patch := release_patch(change)) is not None:
        kube.patch(api, "Namespace", ns, patch)


def _describe(change: Change) -> str:
    parts = []
    if change.label is not None:
        parts.append(f"{REV_LABEL}={change.label}")
    if change.release:
        parts.append(f"unbound, {REV_LABEL} given up")
    if change.remove_legacy is not None:
        parts.append(f"removed {LEGACY_INJECTION_LABEL}={change.remove_legacy}, which would beat {REV_LABEL}")
    if change.keep_rev is not None:
        parts.append(f"hand-set {REV_LABEL}={change.keep_rev} kept, to be given back on unbinding")
    if change.restore_rev is not None:
        parts.append(f"hand-set {REV_LABEL}={change.restore_rev} given back")
    if change.restore_legacy is not None:
        parts.append(f"{LEGACY_INJECTION_LABEL}={change.restore_legacy} given back")
    return "; ".join(parts)


def _dry_run_removal(api: client.ApiClient, namespace: LiveNamespace) -> str | None:
    """Why the API server would refuse to remove the legacy label (RBAC, an admission policy), or None."""
    try:
        kube.patch(api, "Namespace", namespace.name, removal_patch(namespace, namespace.legacy or ""), dry_run="All")
    except ApiException as e:
        return api_message(e)
    return None


class NamespaceLabels(pulumi.dynamic.Resource, module="mesh", name="NamespaceLabels"):
    """Every bound namespace's `istio.io/rev` label; see module doc."""

    namespaces: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, *, namespaces: Mapping[str, str], created: list[str],
                 gateways: Mapping[str, GatewayPin], opts: pulumi.ResourceOptions | None = None) -> None:
        """`gateways` are checked, never labelled: a change of them alone is no change (`diff`)."""
        pins = {name: {"namespace": p.namespace, "revision": p.revision, **({"canary": p.canary} if p.canary else {})}
                for name, p in sorted(gateways.items())}
        super().__init__(NamespaceLabelsProvider(), name,
                         {"namespaces": dict(namespaces), "created": created, "gateways": pins, "drift": None}, opts)
