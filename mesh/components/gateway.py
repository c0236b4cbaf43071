"""Gateway: the `gateway` chart pinned to a tag or revision, the rollout that moves its pods, and
optionally a canary: a second release of the chart on another revision behind the same Service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from mesh.charts import CANARY_SUFFIX, ChartRef
from mesh.components.helm import install_chart
from mesh.providers.rollout import RolloutSettings, RolloutTarget


@dataclass(frozen=True)
class CanaryRelease:
    """A gateway's canary, resolved: its chart (at the canary revision's version), its values (Deployment
    only, the gateway's selector labels; `mesh.charts.canary_values`), and what must exist first."""

    chart: ChartRef
    values: dict[str, Any]
    revision: str
    rollout: RolloutSettings
    depends_on: list[pulumi.Resource]

    @property
    def workload(self) -> str:
        """The canary Deployment's name, as its values give it to the chart."""
        return str(self.values["name"])


class Gateway(pulumi.ComponentResource):
    """Owned by config, not by a revision: removing a revision never takes a gateway with it (istio#35591)."""

    namespace: str
    revision: str

    def __init__(self, name: str, *, namespace: str, chart: ChartRef, values: dict[str, Any], revision: str,
                 workload: str, kind: str, rollout: RolloutSettings, depends_on: list[pulumi.Resource],
                 canary: CanaryRelease | None = None, opts: pulumi.ResourceOptions | None = None) -> None:
        """`values` pin the pods to the configured tag or revision; `revision` is what that resolves to;
        `workload` and `kind` are what the chart renders from them (`values.name`, `values.kind`)."""
        super().__init__("istio-mesh:index:Gateway", name, None, opts)
        self.namespace = namespace
        self.revision = revision
        self.chart = install_chart(
            name, chart, values, namespace, pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        )
        # Its workload is moved by the stack's MeshRollout once the chart is applied.
        self.rollout_targets = [RolloutTarget(namespace, revision, rollout, workload=workload, kind=kind)]
        self.rollout_after: list[pulumi.Resource] = [self.chart]
        # Promoting deletes the canary, and the engine deletes only after every create and update is done:
        # the gateway's Deployment has rolled to the canary's revision by then.
        self.canary = canary.revision if canary else None
        self.canary_chart = install_chart(
            name + CANARY_SUFFIX, canary.chart, canary.values, namespace,
            pulumi.ResourceOptions(parent=self, depends_on=[*canary.depends_on, self.chart]),
        ) if canary else None
        if canary and self.canary_chart:
            # Its pods start on the canary revision, so a new canary restarts nothing; the entry moves them
            # when that revision's proxy image changes without its chart version (an in-place hub change).
            self.rollout_targets.append(
                RolloutTarget(namespace, canary.revision, canary.rollout, workload=canary.workload)
            )
            self.rollout_after.append(self.canary_chart)
        self.register_outputs({"namespace": self.namespace, "revision": self.revision,
                               **({"canary": self.canary} if self.canary else {})})
