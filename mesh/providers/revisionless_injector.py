"""RevisionlessInjectorTakeover: while the default tag exists, the webhook of an earlier revisionless
install selects nothing; removed, the webhook is given its selectors back. Rules: mesh.revisionless_injector.

PreviousDefaultTag, created before the default tag's webhook and Service are applied: keeps (in its outputs)
the `istio-revision-tag-default` webhook and `istiod-revision-tag-default` Service an `istioctl install` or
`istioctl tag set default` made, and, when the tag is removed, puts them back in place of the program's
(replaced, so no moment without one), or deletes the program's if there were none. The webhook and Service
resources themselves are retained on delete for that reason.

Create and update deactivate the webhook if it exists (nothing to do on a cluster that never had
one); diff reads it, so an upgrade of the old install that turns it back on shows as a change. The
pods the old istiod still serves are counted with the drain guard's own rule and reported.
"""

from __future__ import annotations

from typing import Any

import pulumi
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CreateResult, DiffResult, UpdateResult
from urllib3.exceptions import HTTPError

from mesh import kube
from mesh.istio_vocabulary import DEFAULT_TAG, ISTIO_NAMESPACE, REVISIONLESS
from mesh.providers import KubeProvider, progress
from mesh.providers.drain_guard import revision_users
from mesh.revision_tag_webhook import previous_tag_webhook, service_name, webhook_name
from mesh.revisionless_injector import (
    REVISIONLESS_INJECTOR,
    TagRollback,
    deactivated,
    is_deactivated,
    restored,
    revisionless_pods,
    tag_rollback,
    tag_service_rollback,
)

DEFAULT_TAG_WEBHOOK = webhook_name(DEFAULT_TAG)
DEFAULT_TAG_SERVICE = service_name(DEFAULT_TAG)


WEBHOOK = "MutatingWebhookConfiguration"


def apply_step(api: client.ApiClient, kind: str, name: str, namespace: str | None, step: TagRollback) -> None:
    """Carry out a rollback step (`mesh.revisionless_injector`): replace, create or delete the object."""
    if step.action == "replace":
        kube.replace(api, kind, name, step.body, namespace)
    elif step.action == "create":
        kube.create(api, kind, step.body, namespace)
    elif step.action == "delete":
        kube.delete(api, kind, name, namespace)


class DefaultTagRemovalRefusedError(Exception):
    """Removing the default tag would leave legacy-labelled namespaces without an injecting webhook."""


class RevisionlessInjectorProvider(KubeProvider):
    @staticmethod
    def _read(api: client.ApiClient) -> dict[str, Any] | None:
        return kube.find(api, WEBHOOK, REVISIONLESS_INJECTOR)

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        try:
            with kube.api_client(self.kube_settings()) as api:
                hook = self._read(api)
        except (ApiException, HTTPError, OSError, config.ConfigException):
            return DiffResult(changes=False)
        return DiffResult(changes=hook is not None and not is_deactivated(hook), replaces=[])

    def create(self, _props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=REVISIONLESS_INJECTOR, outs=self._deactivate())

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._deactivate())

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        with kube.api_client(self.kube_settings()) as api:
            hook = self._read(api)
            back = restored(hook) if hook else None
            if back:
                kube.replace(api, WEBHOOK, REVISIONLESS_INJECTOR, back)
                progress(f"{REVISIONLESS_INJECTOR}: the default tag is gone; the revisionless webhook selects again")

    def _deactivate(self) -> dict[str, Any]:
        with kube.api_client(self.kube_settings()) as api:
            hook = self._read(api)
            if hook is not None and not is_deactivated(hook):
                # A replace carries the resourceVersion just read: a concurrent change fails, never lost.
                kube.replace(api, WEBHOOK, REVISIONLESS_INJECTOR, deactivated(hook))
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


class PreviousDefaultTagProvider(KubeProvider):
    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        """What was found is kept from the first `up` on: nothing to change later."""
        return DiffResult(changes=False)

    def create(self, _props: dict[str, Any]) -> CreateResult:
        with kube.api_client(self.kube_settings()) as api:
            previous = previous_tag_webhook(kube.find(api, WEBHOOK, DEFAULT_TAG_WEBHOOK))
            previous_service = previous_tag_webhook(kube.find(api, "Service", DEFAULT_TAG_SERVICE, ISTIO_NAMESPACE))
        for name, found in ((DEFAULT_TAG_WEBHOOK, previous), (DEFAULT_TAG_SERVICE, previous_service)):
            if found is not None:
                progress(f"{name}: found (made outside the program, e.g. by istioctl); kept, to be put back if "
                         "the default tag is removed")
        return CreateResult(id_=DEFAULT_TAG_WEBHOOK, outs={"previous": previous, "previous_service": previous_service})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        with kube.api_client(self.kube_settings()) as api:
            step = tag_rollback(props.get("previous"), kube.find(api, WEBHOOK, DEFAULT_TAG_WEBHOOK),
                                kube.find(api, WEBHOOK, REVISIONLESS_INJECTOR))
            if step.refusal:
                raise DefaultTagRemovalRefusedError(step.refusal)
            apply_step(api, WEBHOOK, DEFAULT_TAG_WEBHOOK, None, step)
            service = tag_service_rollback(props.get("previous_service"),
                                           kube.find(api, "Service", DEFAULT_TAG_SERVICE, ISTIO_NAMESPACE))
            apply_step(api, "Service", DEFAULT_TAG_SERVICE, ISTIO_NAMESPACE, service)
        for name, done in ((DEFAULT_TAG_WEBHOOK, step), (DEFAULT_TAG_SERVICE, service)):
            if done.action in ("replace", "create"):
                progress(f"{name}: put back as it was before the program took the default tag over")


class PreviousDefaultTag(pulumi.dynamic.Resource, module="mesh", name="PreviousDefaultTag"):
    """The default tag webhook found before the program's own, given back when the default tag goes."""

    previous: pulumi.Output[dict[str, Any] | None]

    previous_service: pulumi.Output[dict[str, Any] | None]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(PreviousDefaultTagProvider(), name, {"previous": None, "previous_service": None}, opts)
