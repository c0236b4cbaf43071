"""IstioCNI: the istio-cni node agent (chart `cni`), installed once for every revision, like base."""

from __future__ import annotations

from typing import Any

import pulumi

from mesh.charts import ChartRef
from mesh.components.helm import install_chart


class IstioCNI(pulumi.ComponentResource):
    """A DaemonSet that sets up each injected pod's traffic redirection in place of istio-init. It follows the
    newest revision's version (upgraded with base) and must run before any revision injects pods that rely
    on it, so every revision depends on it."""

    namespace: str

    def __init__(self, name: str, *, chart: ChartRef, values: dict[str, Any], namespace: str,
                 depends_on: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("istio-mesh:index:IstioCNI", name, None, opts)
        self.namespace = namespace
        self.chart = install_chart(
            name, chart, values, namespace, pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            # Like base: one per cluster, possibly installed by Helm or istioctl before the takeover.
            owned_outright=True,
        )
        self.register_outputs({"namespace": namespace})
