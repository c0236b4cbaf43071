"""Gateway: the `gateway` chart pinned to a tag or revision, and the rollout that moves its pods."""

from __future__ import annotations

from typing import Any

import pulumi

from mesh.charts import ChartRef
from mesh.components.helm import install_chart
from mesh.providers.rollout import Rollout, RolloutSettings


class Gateway(pulumi.ComponentResource):
    """Owned by config, not by a revision: removing a revision never takes a gateway with it (istio#35591)."""

    namespace: str
    revision: str

    def __init__(self, name: str, *, namespace: str, chart: ChartRef, values: dict[str, Any], revision: str,
                 rollout: RolloutSettings, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`values` pin the pods to the configured tag or revision; `revision` is what that resolves to."""
        super().__init__("istio-mesh:index:Gateway", name, None, opts)
        self.namespace = namespace
        self.revision = revision
        self.chart = install_chart(
            name, chart, values, namespace, pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        )
        self.rollout = Rollout(
            f"{name}-rollout",
            namespace=namespace,
            revision=revision,
            proxy_image=rollout.proxy_image,
            strategy=rollout.strategy,
            concurrency=rollout.concurrency,
            timeout_seconds=rollout.timeout_seconds,
            workload=name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart]),
        )
        self.register_outputs({"namespace": self.namespace, "revision": self.revision})
