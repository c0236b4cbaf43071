"""Rule 2: version skew, owned by mesh.checks.version_skew (validation and the version gate read it)."""

from __future__ import annotations

from mesh import validation
from mesh.checks.steps import Step
from mesh.checks.version_skew import ProxyPod, canary_skew, check, in_place_changes, proxy_version


def pods(*specs: tuple[str, str, str]) -> list[ProxyPod]:
    return [ProxyPod(ns, f"{ns}-{i}", rev, v) for i, (ns, rev, v) in enumerate(specs)]


def test_validation_and_the_version_gate_use_the_one_rule() -> None:
    assert validation.in_place_changes is in_place_changes
    (error,) = canary_skew({"a": "1.29.0", "b": "1.32.0"})
    assert error.key == "revisions.b.version" and "3 minors ahead" in error.message


def test_an_in_place_jump_of_two_minors_is_refused_in_the_review_too() -> None:
    step = Step("revisions.r", "istiod", "1.29.3", "1.31.0", "in place")
    findings = check({"r": "1.31.0"}, {"r": "1.29.3"}, [step], None, [])
    refused = [f for f in findings if f.severity == "refusal"]
    assert [f.key for f in refused] == ["revisions.r.version"]
    assert "more than 1 minor at a time" in refused[0].message


def test_pods_an_in_place_minor_leaves_out_of_skew_are_named_with_where_they_run() -> None:
    step = Step("revisions.r", "istiod", "1.30.2", "1.31.0", "in place")
    live = pods(("payments", "r", "1.29.4"), ("payments", "r", "1.30.2"), ("legacy", "r", "1.29.4"),
                ("other", "s", "1.28.0"), ("newer", "r", "1.32.0"))
    (skewed,) = [f for f in check({"r": "1.31.0"}, {"r": "1.30.2"}, [step], None, live, {"payments"})
                 if f.severity == "warning"]
    assert skewed.key == "revisions.r.version"
    assert skewed.details["pods"] == {"legacy": ["legacy-2"], "newer": ["newer-4"], "payments": ["payments-0"]}
    assert skewed.details["restarted"] == ["payments"]
    assert "payments: 1 pods (proxy 1.29.4; this up restarts them)" in skewed.message
    assert "legacy: 1 pods (proxy 1.29.4; restart them after the up)" in skewed.message


def test_a_pod_whose_proxy_a_restart_keeps_is_not_said_to_be_restarted() -> None:
    """A pod with its own proxy image (sidecar.istio.io/proxyImage) in a namespace this `up` restarts comes back
    on that image: the warning says so, and the namespace counts as restarted only for its other pods."""
    step = Step("revisions.r", "istiod", "1.30.2", "1.31.0", "in place")
    live = pods(("payments", "r", "1.29.4"), ("payments", "r", "1.29.4"), ("pinned", "r", "1.29.0"))
    kept = {("payments", "payments-0"): "proxy image set by hand", ("pinned", "pinned-2"): "proxy image set by hand"}
    (skewed,) = [f for f in check({"r": "1.31.0"}, {"r": "1.30.2"}, [step], None, live, {"payments", "pinned"}, kept)
                 if f.severity == "warning"]
    assert skewed.details["restarted"] == ["payments"]
    assert skewed.details["kept"] == {"payments": {"payments-0": "proxy image set by hand"},
                                      "pinned": {"pinned-2": "proxy image set by hand"}}
    assert ("payments: 2 pods (proxy 1.29.4; 1: a restart keeps their proxy (proxy image set by hand): change that to "
            "move them, 1: this up restarts them)") in skewed.message
    assert ("pinned: 1 pods (proxy 1.29.0; a restart keeps their proxy (proxy image set by hand): change that to move "
            "them)") in skewed.message


def test_a_proxy_one_minor_behind_is_in_skew() -> None:
    step = Step("revisions.r", "istiod", "1.30.2", "1.31.0", "in place")
    findings = check({"r": "1.31.0"}, {"r": "1.30.2"}, [step], None, pods(("a", "r", "1.30.2")))
    assert {f.severity for f in findings} == {"passed"}


def test_cni_more_than_one_minor_from_a_revision_warns() -> None:
    findings = check({"old": "1.29.0", "new": "1.31.0"}, {}, [], "1.31.0", None)
    (cni,) = [f for f in findings if f.key == "cni.enabled"]
    assert cni.severity == "warning" and "revision old (1.29.0)" in cni.message
    assert not [f for f in check({"old": "1.30.0", "new": "1.31.0"}, {}, [], "1.31.0", None) if f.key == "cni.enabled"]


def test_proxy_versions_from_images() -> None:
    assert proxy_version("docker.io/istio/proxyv2:1.30.2-distroless") == "1.30.2"
    assert proxy_version("docker.io/istio/proxyv2@sha256:abc") is None
    assert proxy_version(None) is None
