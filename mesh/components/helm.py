"""The one place Helm v4 charts are instantiated, so every chart gets the same treatment."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_kubernetes.helm.v4 import Chart, RepositoryOptsArgs

from mesh.charts import ChartRef

PATCH_FORCE = "pulumi.com/patchForce"
"""The Kubernetes provider's annotation: its server-side apply takes fields over from other managers."""


def take_over_fields(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult:
    """Transform for the children of a chart the program owns outright (base): fields another installer
    set before (Helm's or istioctl's manager, on a cluster taken over) are taken over, not a conflict."""
    # New dicts where changed, nothing copied deeply: the chart's own props may hold Outputs (its values).
    props = dict(args.props)
    metadata = dict(props.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), PATCH_FORCE: "true"}
    props["metadata"] = metadata
    return pulumi.ResourceTransformResult(props=props, opts=args.opts)


def install_chart(name: str, ref: ChartRef, values: pulumi.Input[dict[str, Any]], namespace: str,
                  opts: pulumi.ResourceOptions, *, owned_outright: bool = False) -> Chart:
    """An object-level chart: each rendered object is its own resource with its own diff in preview.
    No ignore rules on its children: what istiod writes at run time is either rendered with istiod's
    own value (`failurePolicy`) or never rendered (`caBundle`), see `mesh.charts.FAIL_CLOSED`."""
    transforms = [take_over_fields] if owned_outright else []
    return Chart(
        name,
        chart=ref.chart,
        version=ref.version,
        repository_opts=RepositoryOptsArgs(repo=ref.repository) if ref.repository else None,
        namespace=namespace,
        values=values,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transforms=transforms)),
    )
