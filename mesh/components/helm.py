"""The one place Helm v4 charts are instantiated, so every chart gets the same treatment."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_kubernetes.helm.v4 import Chart, RepositoryOptsArgs

from mesh.charts import WEBHOOK_FIELDS_PATCHED_BY_ISTIOD, ChartRef

_WEBHOOK_TYPES = (
    "kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration",
    "kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration",
)


def ignore_istiod_patched_fields(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """Transform for chart children: webhooks ignore the fields istiod rewrites, so re-runs show no drift."""
    if args.type_ not in _WEBHOOK_TYPES:
        return None
    extra = pulumi.ResourceOptions(ignore_changes=list(WEBHOOK_FIELDS_PATCHED_BY_ISTIOD))
    return pulumi.ResourceTransformResult(props=args.props, opts=pulumi.ResourceOptions.merge(args.opts, extra))


def install_chart(name: str, ref: ChartRef, values: dict[str, Any], namespace: str,
                  opts: pulumi.ResourceOptions) -> Chart:
    """An object-level chart: each rendered object is its own resource with its own diff in preview."""
    return Chart(
        name,
        chart=ref.chart,
        version=ref.version,
        repository_opts=RepositoryOptsArgs(repo=ref.repository) if ref.repository else None,
        namespace=namespace,
        values=values,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transforms=[ignore_istiod_patched_fields])),
    )
