"""The one place Helm v4 charts are instantiated, so every chart gets the same treatment."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_kubernetes.helm.v4 import Chart, RepositoryOptsArgs

from mesh.charts import ChartRef


def install_chart(name: str, ref: ChartRef, values: dict[str, Any], namespace: str,
                  opts: pulumi.ResourceOptions) -> Chart:
    """An object-level chart: each rendered object is its own resource with its own diff in preview.
    No ignore rules on its children: what istiod writes at run time is either rendered with istiod's
    own value (`failurePolicy`) or never rendered (`caBundle`), see `mesh.charts.FAIL_CLOSED`."""
    return Chart(
        name,
        chart=ref.chart,
        version=ref.version,
        repository_opts=RepositoryOptsArgs(repo=ref.repository) if ref.repository else None,
        namespace=namespace,
        values=values,
        opts=opts,
    )
