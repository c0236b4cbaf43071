"""IstioRevisionTag: a tag's own injection webhook (and Service), pointing at one revision's istiod."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
from pulumi_kubernetes.admissionregistration.v1 import MutatingWebhookConfiguration
from pulumi_kubernetes.core.v1 import Service

from mesh.components.helm import PATCH_FORCE
from mesh.istio_vocabulary import DEFAULT_TAG
from mesh.providers.revisionless_injector import PreviousDefaultTag, RevisionlessInjectorTakeover
from mesh.revision_tag_webhook import service_name, tag_service, tag_webhook, webhook_name


class IstioRevisionTag(pulumi.ComponentResource):
    """Resource names depend on the tag only, so moving a tag updates the same webhook in place."""

    revision: str

    def __init__(self, tag: str, *, revision: str, version: str | None, revision_values: Mapping[str, Any],
                 installed: pulumi.Input[Sequence[pulumi.Resource]],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`revision` is the revision the tag points at, at `version`, rendered with `revision_values` (its
        injector settings are the tag's too); `installed` is what must be done before the tag sends pods to it
        (the revision when its chart changes in this `up`, see `mesh.components.istio`). An external
        revision has no version here: its tag gets no Service (its version, and so whether it has one, is its
        installer's), only the webhook, which calls `istiod-<revision>` (its ExternalRevision checks that)."""
        super().__init__("istio-mesh:index:IstioRevisionTag", tag, None, opts)
        self.revision = revision
        # Only once the target istiod is installed may pods be sent to it.
        child = pulumi.ResourceOptions(parent=self, depends_on=installed)
        # istiod fills in `caBundle` at run time; it is never rendered here, so never applied over istiod's.
        hook = tag_webhook(tag, revision, revision_values)
        webhook_opts = child
        if tag == DEFAULT_TAG:
            # `istioctl install` and `istioctl tag set default` make this webhook under their own field managers:
            # it is kept first, then taken over (forced apply, no conflict); when the tag goes, the kept one is put
            # back in its place (or ours deleted) by PreviousDefaultTag, so the engine must leave the object alone.
            previous = PreviousDefaultTag("default-tag-previous-webhook", opts=pulumi.ResourceOptions(parent=self))
            hook["metadata"]["annotations"] = {PATCH_FORCE: "true"}
            webhook_opts = pulumi.ResourceOptions(
                parent=self, depends_on=pulumi.Output.from_input(installed).apply(lambda deps: [*deps, previous]),
                retain_on_delete=True,
            )
        self.webhook = MutatingWebhookConfiguration(
            webhook_name(tag), metadata=hook["metadata"], webhooks=hook["webhooks"], opts=webhook_opts
        )
        svc = tag_service(tag, revision, version) if version is not None else None
        service_opts = child
        if svc and tag == DEFAULT_TAG:
            # istioctl makes the default tag's Service too: taken over and given back like the webhook.
            svc["metadata"]["annotations"] = {PATCH_FORCE: "true"}
            service_opts = webhook_opts
        self.service = (
            Service(service_name(tag), metadata=svc["metadata"], spec=svc["spec"], opts=service_opts) if svc else None
        )
        # What pods sent to the tag wait for: its webhook (and, for the default tag, the takeover), not the
        # Service, which the webhook does not call (it names `istiod-<revision>`) and whose endpoint await
        # would hold up every restart.
        self.injecting: pulumi.Resource = self.webhook
        if tag == DEFAULT_TAG:
            # Once the default tag injects, an earlier revisionless install's injector must stop (IST0139).
            self.takeover = RevisionlessInjectorTakeover(
                "revisionless-injector-takeover",
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.webhook]),
            )
            self.injecting = self.takeover
        self.register_outputs({"revision": self.revision})
