"""IstioRevision: one istiod (chart `istiod` with `revision: <name>`) and the guard that keeps it while in use."""

from __future__ import annotations

from typing import Any

import pulumi

from mesh.charts import ChartRef
from mesh.components.helm import install_chart
from mesh.istio_vocabulary import ISTIO_NAMESPACE, istiod_service
from mesh.providers.drain_guard import DrainGuard


class IstioRevision(pulumi.ComponentResource):
    """A whole control plane revision. Removing it from config deletes its guard first, which refuses
    while pods still run this revision; a refusal leaves every object of the revision in place."""

    version: str
    service: str

    def __init__(self, name: str, *, version: str, chart: ChartRef, values: dict[str, Any],
                 drain_timeout_seconds: int, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("istio-mesh:index:IstioRevision", name, None, opts)
        self.version = version
        self.service = f"{istiod_service(name)}.{ISTIO_NAMESPACE}.svc"
        self.chart = install_chart(
            f"istiod-{name}",
            chart,
            values,
            ISTIO_NAMESPACE,
            pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        # Deletes run in reverse dependency order, and the engine counts a dependency on a (remote)
        # component as one on each of its children: the guard is deleted before any rendered object.
        self.guard = DrainGuard(
            f"{name}-drain-guard",
            revision=name,
            drain_timeout_seconds=drain_timeout_seconds,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart]),
        )
        self.register_outputs({"version": self.version, "service": self.service})
