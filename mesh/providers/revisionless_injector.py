"""RevisionlessInjectorTakeover: while the default tag exists, the webhook of an earlier revisionless
install selects nothing; removed, the webhook is given its selectors back. Rules: mesh.revisionless_injector.

Create and update deactivate the webhook if it exists (nothing to do on a cluster that never had
one); diff reads it, so an upgrade of the old install that turns it back on shows as a change. The
pods the old istiod still serves are counted with the drain guard's own rule and reported.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CreateResult, DiffResult, UpdateResult
from urllib3.exceptions import HTTPError

from mesh import kube
from mesh.istio_vocabulary import REVISIONLESS
from mesh.providers import KubeProvider, progress
from mesh.providers.drain_guard import revision_users
from mesh.revisionless_injector import (
    REVISIONLESS_INJECTOR,
    deactivated,
    is_deactivated,
    restored,
    revisionless_pods,
)


class RevisionlessInjectorProvider(KubeProvider):
    def _read(self, adm: client.AdmissionregistrationV1Api) -> dict[str, Any] | None:
        try:
            response = adm.read_mutating_webhook_configuration(REVISIONLESS_INJECTOR, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(response.data)

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        try:
            with kube.api_client(self.kube_settings()) as api:
                hook = self._read(client.AdmissionregistrationV1Api(api))
        except (ApiException, HTTPError, OSError, config.ConfigException):
            return DiffResult(changes=False)
        return DiffResult(changes=hook is not None and not is_deactivated(hook), replaces=[])

    def create(self, _props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=REVISIONLESS_INJECTOR, outs=self._deactivate())

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._deactivate())

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        with kube.api_client(self.kube_settings()) as api:
            adm = client.AdmissionregistrationV1Api(api)
            hook = self._read(adm)
            back = restored(hook) if hook else None
            if back:
                adm.replace_mutating_webhook_configuration(REVISIONLESS_INJECTOR, back)
                progress(f"{REVISIONLESS_INJECTOR}: the default tag is gone; the revisionless webhook selects again")

    def _deactivate(self) -> dict[str, Any]:
        with kube.api_client(self.kube_settings()) as api:
            adm = client.AdmissionregistrationV1Api(api)
            hook = self._read(adm)
            if hook is not None and not is_deactivated(hook):
                # A replace carries the resourceVersion just read: a concurrent change fails, never lost.
                adm.replace_mutating_webhook_configuration(REVISIONLESS_INJECTOR, deactivated(hook))
                progress(f"{REVISIONLESS_INJECTOR}: deactivated (selectors kept in the object) so that only the "
                         "default tag injects the pods it selected")
            users = revision_users(api, REVISIONLESS) if hook is not None else {}
        counts = {ns: len(names) for ns, names in users.items()}
        if hook is not None:
            progress(revisionless_pods(counts))
        return {"found": hook is not None, "revisionless_pods": counts}


class RevisionlessInjectorTakeover(pulumi.dynamic.Resource, module="mesh", name="RevisionlessInjectorTakeover"):
    """Keeps an earlier revisionless install's injector switched off while the default tag exists."""

    found: pulumi.Output[bool]
    revisionless_pods: pulumi.Output[dict[str, int]]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"found": None, "revisionless_pods": None}
        super().__init__(RevisionlessInjectorProvider(), name, props, opts)
