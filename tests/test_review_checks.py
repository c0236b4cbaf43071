"""The review's "Checks" section (Markdown and `--json`): every rule of mesh.checks over the change, with the real
charts of the mirror; refusals make the review exit 2, as the preview would refuse."""

from __future__ import annotations

from typing import Any

import pytest

import mesh.__main__ as cli
from mesh.review import Deployed, proxy_pods
from mesh.workloads import pod_from_object
from tests.chart_mirror import NEW, OLD, mirror

DEPLOYED = Deployed.from_outputs({
    "revisions": {"stable": {"version": OLD, "proxy": f"docker.io/istio/proxyv2:{OLD}"}},
    "tags": {}, "namespaces": {"payments": "stable"}, "gateways": {},
})


def config(values: dict[str, Any]) -> dict[str, Any]:
    """The stable revision moved in place to the next minor, charts from the mirror."""
    return {
        "istio-mesh:charts": {"path": mirror().path},
        "istio-mesh:revisions": {"stable": {"version": NEW, "values": values}},
        "istio-mesh:namespaces": {"payments": "stable"},
    }


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "kube_settings", lambda _raw: None)


def test_an_in_place_minor_shows_the_flags_that_flip_and_the_unread_values_in_checks() -> None:
    code, review = cli.build_review("dev", config({"pilot": {"envv": {"A": "b"}}}), DEPLOYED)
    assert code == 0 and not isinstance(review, str)
    md = review.markdown()
    checks = md.split("#### Checks\n", 1)[1]
    assert "- warning: `istio-mesh:revisions.stable`: moves 1.30.0 -> 1.31.0, which changes the default of " \
           "pilot.env.PILOT_ENABLE_STRICT_GATEWAY_MERGING" in checks
    unread = "- warning: `istio-mesh:revisions.stable.values.pilot.envv`: is not read by the istiod chart 1.31.0"
    assert unread in checks
    assert "- skipped: Kubernetes support and proxy skew: no kubeconfig" in checks
    data = review.to_json()["checks"]
    assert data["refusals"] == []
    flags = next(w for w in data["warnings"] if w["rule"] == "behaviour-changes")
    assert flags["key"] == "revisions.stable" and flags["details"]["keep"] == "1.30"
    assert {p["rule"] for p in data["passed"]} >= {"version-skew"}


def test_a_compatibility_version_the_chart_does_not_accept_is_a_refusal_and_exit_2() -> None:
    code, review = cli.build_review("dev", config({"compatibilityVersion": "1.31"}), DEPLOYED)
    assert code == 2 and not isinstance(review, str)
    (refused,) = review.to_json()["checks"]["refusals"]
    assert refused["key"] == "revisions.stable.values.compatibilityVersion"
    assert "accepts one of 1.25, 1.26, 1.27, 1.28, 1.29, 1.30" in refused["message"]
    assert "- refused: `istio-mesh:revisions.stable.values.compatibilityVersion`" in review.markdown()


def test_charts_from_a_repository_skip_the_chart_checks_and_say_so() -> None:
    raw = config({}) | {"istio-mesh:charts": {"repository": "https://charts.example.com"}}
    code, review = cli.build_review("dev", raw, DEPLOYED)
    assert code == 0 and not isinstance(review, str)
    skipped = review.to_json()["checks"]["skipped"]
    assert any("charts come from https://charts.example.com" in s for s in skipped)


def test_proxy_pods_are_the_live_injected_pods_with_their_proxy_version() -> None:
    def pod(name: str, image: str, rev: str | None = "stable") -> Any:
        return pod_from_object({
            "metadata": {"namespace": "payments", "name": name, "annotations": {"istio.io/rev": rev} if rev else {}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "istio-proxy", "image": image}]},
            "status": {"phase": "Running"}})
    found = proxy_pods([pod("a", "docker.io/istio/proxyv2:1.29.1"), pod("b", "x@sha256:00"),
                        pod("c", "docker.io/istio/proxyv2:1.30.0", rev=None)])
    assert [(p.name, p.revision, p.proxy_version) for p in found] == [("a", "stable", "1.29.1")]


def test_markdown_and_json_carry_the_same_checks_in_the_same_order() -> None:
    """Every finding of every severity and every skipped rule, once in each form: a reader of either sees the same."""
    code, review = cli.build_review("dev", config({"compatibilityVersion": "1.31", "pilot": {"envv": {"A": "b"}}}),
                                    DEPLOYED)
    assert code == 2 and not isinstance(review, str)
    data = review.to_json()["checks"]
    assert all(data[part] for part in ("refusals", "warnings", "passed", "skipped")), data
    rules = {f["rule"] for part in ("refusals", "warnings", "passed") for f in data[part]}
    assert rules >= {"behaviour-changes", "chart-values", "version-skew"}, rules
    section = review.markdown().split("#### Checks\n", 1)[1].splitlines()
    from_json = [f"- {label}: `istio-mesh:{f['key']}`: {f['message']}"
                 for label, part in (("refused", "refusals"), ("warning", "warnings"), ("passed", "passed"))
                 for f in data[part]] + [f"- skipped: {why}" for why in data["skipped"]]
    assert section == from_json
