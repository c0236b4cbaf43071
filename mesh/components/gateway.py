"""Gateway: the `gateway` chart pinned to a tag or revision, and the rollout that moves its pods."""

from __future__ import annotations

import pulumi

from mesh.charts import chart_ref, gateway_values, gateway_version
from mesh.components.helm import install_chart
from mesh.providers.rollout import Rollout
from mesh.proxy_image import proxy_image
from mesh.spec import MeshSpec


class Gateway(pulumi.ComponentResource):
    """Owned by config, not by a revision: removing a revision never takes a gateway with it (istio#35591)."""

    namespace: str
    revision: str

    def __init__(self, name: str, spec: MeshSpec, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("istio-mesh:index:Gateway", name, None, opts)
        gateway = spec.gateways[name]
        self.namespace = gateway.namespace
        self.revision = spec.resolve(gateway.revision)
        self.chart = install_chart(
            name,
            chart_ref(spec.charts, "gateway", gateway_version(spec, gateway)),
            gateway_values(spec, gateway),
            gateway.namespace,
            pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        self.rollout = Rollout(
            f"{name}-rollout",
            namespace=gateway.namespace,
            revision=self.revision,
            proxy_image=proxy_image(spec, self.revision),
            strategy=spec.strategy_of(gateway),
            concurrency=spec.rollout.concurrency,
            timeout_seconds=spec.rollout.timeout_seconds,
            workload=name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart]),
        )
        self.register_outputs({"namespace": self.namespace, "revision": self.revision})
