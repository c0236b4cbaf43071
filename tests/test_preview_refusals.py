"""What `pulumi preview` refuses from the chart files of a local mirror (mesh.checks.run.preview_refusals),
before any resource is registered: the same messages the review's Checks section gives."""

from __future__ import annotations

import pulumi
import pytest

from mesh.program import spec_from_config
from tests.chart_mirror import OLD, mirror


def raw(values: dict[str, object]) -> dict[str, object]:
    return {"charts": {"path": mirror().path}, "revisions": {"r": {"version": OLD, "values": values}}}


def test_a_compatibility_version_the_chart_does_not_ship_fails_the_preview_naming_key_and_accepted_values() -> None:
    with pytest.raises(pulumi.RunError) as refused:
        spec_from_config(raw({"compatibilityVersion": "1.30"}))
    message = str(refused.value)
    assert "istio-mesh:revisions.r.values.compatibilityVersion: is '1.30'" in message
    assert "accepts one of 1.25, 1.26, 1.27, 1.28, 1.29" in message


def test_a_value_the_chart_removed_fails_the_preview_and_accepted_values_pass() -> None:
    with pytest.raises(pulumi.RunError) as refused:
        spec_from_config(raw({"telemetry": {"v2": {"prometheus": {"configOverride": {}}}}}))
    assert "istio-mesh:revisions.r.values.telemetry.v2.prometheus.configOverride: is removed" in str(refused.value)
    assert spec_from_config(raw({"compatibilityVersion": "1.29"})).revisions["r"].version == OLD


def test_the_version_gate_refuses_a_revision_below_istioctls_minimum_kubernetes_at_preview() -> None:
    from mesh.providers.version_gate import VersionGateProvider

    class OldCluster(VersionGateProvider):
        def cluster_version(self) -> str | None:
            return "v1.31.6"

    (failure,) = OldCluster().check({}, {"versions": {"r": "1.31.0"}}).failures
    assert failure.property == "versions"
    assert failure.reason.startswith("istio-mesh:revisions.r.version: Istio 1.31.0 needs Kubernetes 1.32 or newer")

    class Unreachable(VersionGateProvider):
        def cluster_version(self) -> str | None:
            return None

    assert Unreachable().check({}, {"versions": {"r": "1.31.0"}}).failures == []
