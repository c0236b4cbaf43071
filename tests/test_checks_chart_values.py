"""Rule 4: values the target chart never reads, and its deprecation list, from the real charts."""

from __future__ import annotations

from mesh.chart_files import library
from mesh.checks.chart_values import check, unread
from tests.chart_mirror import NEW, OLD, mirror


def test_keys_the_chart_never_reads_are_named_with_the_chart_version() -> None:
    charts = library(mirror(), [("istiod", NEW), ("gateway", NEW)])
    values = {"pilot": {"resources": {"requests": {"cpu": "1"}}, "envv": {"A": "b"}},
              "meshConfig": {"accessLogFile": "/dev/stdout"}, "global": {"proxy": {"resourcs": {}}},
              "sidecarInjectorWebhook": {"neverInjectSelector": []}, "compatibilityVersion": "1.30"}
    assert unread(values, charts[("istiod", NEW)]) == ["pilot.envv", "global.proxy.resourcs"]
    findings = check([("revisions.r", "istiod", NEW, values),
                      ("gateways.in", "gateway", NEW, {"podAnotations": {}, "kind": "DaemonSet"})], charts)
    warned = {f.key: f.message for f in findings if f.severity == "warning"}
    assert set(warned) == {"revisions.r.values.pilot.envv", "revisions.r.values.global.proxy.resourcs",
                           "gateways.in.values.podAnotations"}
    assert "not read by the gateway chart 1.31.0" in warned["gateways.in.values.podAnotations"]


def test_deprecated_keys_name_the_replacement_and_removed_ones_are_refused() -> None:
    charts = library(mirror(), [("istiod", OLD)])
    findings = check([("revisions.r", "istiod", OLD, {
        "global": {"proxy": {"holdApplicationUntilProxyStarts": True}},
        "telemetry": {"v2": {"prometheus": {"configOverride": {}}}}})], charts)
    by_key = {f.key: f for f in findings}
    deprecated = by_key["revisions.r.values.global.proxy.holdApplicationUntilProxyStarts"]
    assert deprecated.severity == "warning"
    assert "use meshConfig.defaultConfig.holdApplicationUntilProxyStarts instead" in deprecated.message
    assert by_key["revisions.r.values.telemetry.v2.prometheus.configOverride"].severity == "refusal"


def test_values_the_chart_reads_pass() -> None:
    charts = library(mirror(), [("cni", NEW)])
    (finding,) = check([("cni", "cni", NEW, {"ambient": {"enabled": True}, "cniBinDir": "/opt/cni/bin"})], charts)
    assert finding.severity == "passed"
