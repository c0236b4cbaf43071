"""LegacyInjectionLabel: removes `istio-injection` from a bound namespace, and gives it back on unbinding.

Check (preview) proves a present label can be removed, with a server-side dry run of the removal, so
a binding that cannot take effect is refused before anything changes. Diff reads the namespace, so a
label set again by hand shows as a change and the next `up` removes it. Rules: mesh.legacy_label.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult
from urllib3.exceptions import HTTPError

from mesh import kube
from mesh.istio_vocabulary import LEGACY_INJECTION_ENABLED, LEGACY_INJECTION_LABEL, REV_LABEL
from mesh.legacy_label import kept_value, legacy_value, removal_patch, restore_patch
from mesh.providers import KubeProvider, is_unknown, progress

_UNREACHABLE = (HTTPError, OSError, config.ConfigException)
"""No cluster to ask (e.g. a preview without credentials): the check is left to `up`."""


class LegacyInjectionLabelProvider(KubeProvider):
    def _read(self, core: client.CoreV1Api, namespace: str) -> dict[str, Any] | None:
        try:
            return json.loads(core.read_namespace(namespace, _preload_content=False).data)
        except ApiException as e:
            if e.status == 404:
                return None  # created later in the same run (gateway namespaces), so it has no label
            raise

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        namespace = news.get("namespace")
        if not namespace:
            return CheckResult(news, [CheckFailure("namespace", "must not be empty")])
        if is_unknown(namespace):
            return CheckResult(news, [])
        try:
            with kube.api_client(self.kube_settings()) as api:
                core = client.CoreV1Api(api)
                found = self._read(core, namespace)
                value = legacy_value(found) if found else None
                problem = _dry_run_removal(core, namespace, value) if value is not None else None
        except (ApiException, *_UNREACHABLE):
            return CheckResult(news, [])  # nothing known to refuse on: `up` does the real thing
        if problem:
            return CheckResult(news, [CheckFailure("namespace", (
                f"namespace {namespace} carries {LEGACY_INJECTION_LABEL}={value}, which beats {REV_LABEL}, "
                f"and it cannot be removed ({problem}); bound, its pods would keep going "
                f"{'to the default tag' if value == LEGACY_INJECTION_ENABLED else 'uninjected'}: allow the identity "
                "that runs pulumi to patch namespaces, or remove the label yourself, then preview again"))])
        return CheckResult(news, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds.get("namespace") != news.get("namespace"):
            return DiffResult(changes=True, replaces=["namespace"], delete_before_replace=True)
        try:
            with kube.api_client(self.kube_settings()) as api:
                found = self._read(client.CoreV1Api(api), news["namespace"])
        except (ApiException, *_UNREACHABLE):
            return DiffResult(changes=False)
        return DiffResult(changes=bool(found and legacy_value(found) is not None), replaces=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        removed = self._remove(props["namespace"])
        return CreateResult(id_=props["namespace"], outs={"namespace": props["namespace"], "previous": removed})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        removed = self._remove(news["namespace"])
        previous = kept_value(olds.get("previous"), removed)
        return UpdateResult(outs={"namespace": news["namespace"], "previous": previous})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        namespace = props["namespace"]
        with kube.api_client(self.kube_settings()) as api:
            core = client.CoreV1Api(api)
            found = self._read(core, namespace)
            patch = restore_patch(found, props.get("previous")) if found else None
            if patch:
                core.patch_namespace(namespace, patch)
                progress(f"namespace {namespace}: unbound; {LEGACY_INJECTION_LABEL}={props['previous']} given back")

    def _remove(self, namespace: str) -> str | None:
        """Remove the label if present; the value removed, or None."""
        with kube.api_client(self.kube_settings()) as api:
            core = client.CoreV1Api(api)
            found = self._read(core, namespace)
            value = legacy_value(found) if found else None
            if value is not None:
                core.patch_namespace(namespace, removal_patch(value))
                progress(
                    f"namespace {namespace}: removed {LEGACY_INJECTION_LABEL}={value}, which would beat {REV_LABEL}"
                )
            return value


def _dry_run_removal(core: client.CoreV1Api, namespace: str, value: str) -> str | None:
    """Why the API server would refuse to remove the label (RBAC, an admission policy), or None."""
    try:
        core.patch_namespace(namespace, removal_patch(value), dry_run="All")
    except ApiException as e:
        try:
            message = json.loads(e.body or "{}").get("message") or e.body
        except ValueError:
            message = e.body
        return f"{e.status} {e.reason}: {message}"
    return None


class LegacyInjectionLabel(pulumi.dynamic.Resource, module="mesh", name="LegacyInjectionLabel"):
    """Keeps `istio-injection` off namespace `namespace` while it is bound; see module doc."""

    namespace: pulumi.Output[str]
    previous: pulumi.Output[str | None]

    def __init__(self, name: str, *, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(LegacyInjectionLabelProvider(), name, {"namespace": namespace, "previous": None}, opts)
