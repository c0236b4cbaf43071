"""A gateway in a namespace no binding manages, whose own injection label would override the gateway's pod label:
the preview reads the live labels of those namespaces and refuses, naming the label and the fix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from harness.simulation import simulate
from mesh.namespace_labels import GatewayPin, LiveNamespace, gateway_label_conflicts
from mesh.providers import namespace_labels as provider_module
from mesh.providers.namespace_labels import NamespaceLabelsProvider
from tests.test_upgrade_walk import CHART, GATEWAY, LABELS, NAMESPACE_LABELS, k

CONFIG: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
    "tags": {"default": "1-30-2", "stable": "1-30-2", "canary": "1-31-0"},
    "namespaces": {"payments": "stable"},
    "gateways": {
        "ingress": {"namespace": "istio-ingress", "revision": "canary", "service": {"type": "ClusterIP"}},
        "edge": {"namespace": "edge", "revision": "stable", "canary": {"revision": "canary"},
                 "service": {"type": "ClusterIP"}},
        "internal": {"namespace": "payments", "revision": "stable", "service": {"type": "ClusterIP"}},
    },
}


def live(**labels: dict[str, str]) -> dict[str, LiveNamespace]:
    return {ns.replace("_", "-"): LiveNamespace(ns.replace("_", "-"), labels=value) for ns, value in labels.items()}


def conflicts(pins: Mapping[str, GatewayPin], namespaces: Mapping[str, LiveNamespace]) -> dict[str, str]:
    return gateway_label_conflicts(pins, namespaces)


INGRESS = {"ingress": GatewayPin("istio-ingress", "canary")}


# --- the rule ---------------------------------------------------------------------------------------------------


def test_a_legacy_enabled_label_sends_a_gateway_pinned_elsewhere_to_the_default_tag() -> None:
    found = conflicts(INGRESS, live(istio_ingress={"istio-injection": "enabled"}))
    message = found["gateways.ingress.namespace"]
    assert "namespace istio-ingress carries istio-injection=enabled" in message
    assert 'default tag\'s revision, not "canary"' in message
    assert "kubectl label namespace istio-ingress istio-injection-" in message
    assert "namespaces.istio-ingress: canary" in message


def test_the_default_tag_pin_agrees_with_a_legacy_enabled_namespace() -> None:
    pins = {"ingress": GatewayPin("istio-ingress", "default")}
    assert conflicts(pins, live(istio_ingress={"istio-injection": "enabled"})) == {}


def test_a_legacy_label_other_than_enabled_leaves_gateway_pods_without_a_proxy() -> None:
    pins = {"ingress": GatewayPin("istio-ingress", "default")}
    message = conflicts(pins, live(istio_ingress={"istio-injection": "disabled"}))["gateways.ingress.namespace"]
    assert "istio-injection=disabled" in message and "no proxy" in message


def test_a_namespace_rev_label_beats_the_gateway_pod_label_unless_it_is_the_same() -> None:
    message = conflicts(INGRESS, live(istio_ingress={"istio.io/rev": "stable"}))["gateways.ingress.namespace"]
    assert 'carries istio.io/rev=stable, which beats the gateway\'s pod label istio.io/rev=canary' in message
    assert 'its pods would get "stable", not "canary"' in message
    assert "kubectl label namespace istio-ingress istio.io/rev-" in message
    assert conflicts(INGRESS, live(istio_ingress={"istio.io/rev": "canary"})) == {}


def test_a_tag_and_its_revision_are_not_the_same_pin() -> None:
    """A namespace on `1-31-0` keeps the gateway there when the `canary` tag moves on: a conflict today already."""
    assert "gateways.ingress.namespace" in conflicts(INGRESS, live(istio_ingress={"istio.io/rev": "1-31-0"}))


def test_a_canary_needs_a_namespace_without_injection_labels() -> None:
    pins = {"edge": GatewayPin("edge", "stable", canary="canary")}
    found = conflicts(pins, live(edge={"istio.io/rev": "stable"}))
    assert list(found) == ["gateways.edge.canary"], "the gateway itself agrees with the label"
    assert 'its pods would get "stable", not "canary"' in found["gateways.edge.canary"]
    assert "namespaces.edge" not in found["gateways.edge.canary"], "a canary cannot be bound with its namespace"
    assert conflicts(pins, live(edge={"team": "a"})) == {}


def test_a_namespace_not_there_yet_has_nothing_to_override() -> None:
    assert conflicts(INGRESS, live(other={"istio-injection": "enabled"})) == {}


# --- what the stack registers -----------------------------------------------------------------------------------


def test_the_stack_hands_the_check_every_gateway_outside_bound_namespaces_and_gateways_wait_for_it() -> None:
    records = simulate(CONFIG)
    assert records[NAMESPACE_LABELS].inputs["gateways"] == {
        "edge": {"namespace": "edge", "revision": "stable", "canary": "canary"},
        "ingress": {"namespace": "istio-ingress", "revision": "canary"},
    }
    for name in ("ingress", "edge", "internal"):
        chart = records[k((GATEWAY, name), (CHART, name))]
        assert f"{LABELS}::namespace-labels" in chart.dependencies, "never applied when the check refuses"


# --- the preview ------------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> dict[str, LiveNamespace]:
    """The namespaces the provider's check lists, without an API server."""
    namespaces: dict[str, LiveNamespace] = {}

    @contextlib.contextmanager
    def api_client(_settings: Any) -> Iterator[object]:
        yield object()

    monkeypatch.setattr(provider_module.kube, "api_client", api_client)
    monkeypatch.setattr(provider_module, "list_namespaces", lambda _api: namespaces)
    return namespaces


def test_the_preview_refuses_a_gateway_whose_namespace_label_overrides_its_pin(
    cluster: dict[str, LiveNamespace],
) -> None:
    cluster.update(live(payments={}, istio_ingress={"istio-injection": "enabled"}))
    news = simulate(CONFIG)[NAMESPACE_LABELS].inputs
    result = NamespaceLabelsProvider().check({}, dict(news))
    assert [(f.property, f.reason.split(": ")[0]) for f in result.failures] == [
        ("gateways", "istio-mesh:gateways.ingress.namespace")]
    cluster.update(live(istio_ingress={}))
    assert NamespaceLabelsProvider().check({}, dict(news)).failures == []


def test_a_gateway_pin_alone_is_no_change_of_the_labels() -> None:
    old = {"namespaces": {"payments": "stable"}, "drift": {}}
    new = {**old, "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "canary"}}}
    assert not NamespaceLabelsProvider().diff("namespace-labels", old, new).changes
