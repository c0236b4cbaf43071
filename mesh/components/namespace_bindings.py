"""NamespaceBindings: every bound namespace's `istio.io/rev` label, and the rollout targets that move its pods.

One resource for all bindings (mesh.providers.namespace_labels), not one per namespace: a stack of 1,000
bound namespaces registers the same few resources as a stack of one, and the preview still shows per
namespace what moves (`namespaces.team-a: "stable" => "canary"`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from mesh.namespace_labels import GatewayPin
from mesh.providers.namespace_labels import NamespaceLabels
from mesh.providers.rollout import RolloutSettings, RolloutTarget

EARLIER_BINDING_TYPE = "istio-mesh:index:NamespaceBinding"
"""The per-namespace component of earlier versions, the parent its network attachment was registered under."""


@dataclass(frozen=True)
class BoundNamespace:
    """One binding, resolved: the label value as configured (a tag or a revision), what it resolves to, and how
    its running pods move."""

    target: str
    revision: str
    rollout: RolloutSettings


class NamespaceBindings(pulumi.ComponentResource):
    """Labels existing namespaces without owning them: removing a binding gives its label up, never the
    namespace. `network_attachments` are the Multus attachments the platform needs in each bound namespace
    (OpenShift): created before the labels (injected pods name them), deleted after; an attachment of another
    name is never touched."""

    revisions: dict[str, str]
    """Bound namespace -> the revision its binding resolves to (through its tag, if it names one)."""

    def __init__(self, name: str, *, bindings: Mapping[str, BoundNamespace], created: list[str],
                 gateways: Mapping[str, GatewayPin], depends_on: pulumi.Input[Sequence[pulumi.Resource]],
                 network_attachments: Mapping[str, dict[str, Any]], opts: pulumi.ResourceOptions | None = None) -> None:
        """`created` are the namespaces the program itself creates in the same run (they need not exist yet);
        `gateways` are the gateways in namespaces no binding manages, whose labels the preview checks against
        their pins; `depends_on` is whatever must exist before pods are sent to any binding's target."""
        super().__init__("istio-mesh:index:NamespaceBindings", name, None, opts)
        self.revisions = {ns: b.revision for ns, b in bindings.items()}
        self.network_attachments = [
            CustomResource(
                f"{ns}-network-attachment",
                api_version=attachment["apiVersion"],
                kind=attachment["kind"],
                metadata=attachment["metadata"],
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=depends_on,
                    # Earlier versions registered it under a component per namespace: the same object, kept.
                    aliases=[pulumi.Alias(parent=pulumi.create_urn(ns, EARLIER_BINDING_TYPE, parent=opts.parent
                                                                    if opts else None))],
                ),
            )
            for ns, attachment in sorted(network_attachments.items())
        ]
        self.labels = NamespaceLabels(
            "namespace-labels",
            namespaces={ns: b.target for ns, b in sorted(bindings.items())},
            created=created,
            gateways=gateways,
            opts=pulumi.ResourceOptions(parent=self, depends_on=pulumi.Output.from_input(depends_on).apply(
                lambda deps: [*deps, *self.network_attachments])),
        )
        # Moved by the stack's MeshRollout (Istio collects these), after the labels are set.
        self.rollout_targets = [RolloutTarget(ns, b.revision, b.rollout) for ns, b in sorted(bindings.items())]
        self.rollout_after: list[pulumi.Resource] = [self.labels]
        self.register_outputs({"revisions": self.revisions})
