"""NamespaceBinding: a namespace's `istio.io/rev` label, and the rollout target that moves its running pods."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import NamespacePatch
from pulumi_kubernetes.meta.v1 import ObjectMetaPatchArgs

from mesh.components.helm import PATCH_FORCE
from mesh.istio_vocabulary import REV_LABEL
from mesh.providers.legacy_label import LegacyInjectionLabel
from mesh.providers.rollout import RolloutSettings, RolloutTarget

FIELD_MANAGER = "istio-mesh"
PATCH_FIELD_MANAGER = "pulumi.com/patchFieldManager"
"""The Kubernetes provider's annotation naming the field manager of its server-side apply patch."""


class NamespaceBinding(pulumi.ComponentResource):
    """Labels an existing namespace without owning it: removing the binding gives the label up, never the
    namespace. The patch's resource name is the namespace's, so rebinding is an in-place update."""

    revision: str
    """The revision the binding resolves to (through its tag, if it names one)."""

    def __init__(self, namespace: str, *, target: str, revision: str, rollout: RolloutSettings,
                 depends_on: list[pulumi.Resource], network_attachment: dict[str, Any] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`target` is the label value as configured (a tag or a revision), `revision` what it resolves to.
        `network_attachment` is the Multus attachment the platform needs in the namespace (OpenShift): created
        before the label (injected pods name it), deleted after it; an attachment of another name is never
        touched."""
        super().__init__("istio-mesh:index:NamespaceBinding", namespace, None, opts)
        self.revision = revision
        self.network_attachment = (
            CustomResource(
                f"{namespace}-network-attachment",
                api_version=network_attachment["apiVersion"],
                kind=network_attachment["kind"],
                metadata=network_attachment["metadata"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            )
            if network_attachment else None
        )
        self.patch = NamespacePatch(
            namespace,
            metadata=ObjectMetaPatchArgs(
                name=namespace,
                labels={REV_LABEL: target},
                annotations={
                    PATCH_FIELD_MANAGER: FIELD_MANAGER,
                    # Take the labels over from whoever set them before (`kubectl label`, istioctl).
                    PATCH_FORCE: "true",
                },
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*depends_on, *([self.network_attachment] if self.network_attachment else [])]
            ),
        )
        # After istio.io/rev is set (pods stay injected throughout) and before any pod is restarted.
        self.legacy_label = LegacyInjectionLabel(
            f"{namespace}-legacy-label", namespace=namespace,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.patch]),
        )
        # Moved by the stack's MeshRollout (Istio collects these), after the labels are set.
        self.rollout_targets = [RolloutTarget(namespace, revision, rollout)]
        self.rollout_after: list[pulumi.Resource] = [self.legacy_label]
        self.register_outputs({"revision": self.revision})
