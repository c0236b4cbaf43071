"""Whether a revision's injector injects a pod (pure): istiod's injectRequired, from the chart's values."""

from __future__ import annotations

import pytest

from harness.simulation import simulate
from mesh.injection import InjectorPolicy
from tests.test_upgrade_walk import DATA_PLANE

NEVER = {"matchLabels": {"app": "batch"}}
ALWAYS = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["edge", "api"]}]}
VALUES = {"sidecarInjectorWebhook": {"neverInjectSelector": [NEVER], "alwaysInjectSelector": [ALWAYS]}}


def policy(auto_inject: str | None = None) -> InjectorPolicy:
    glob = {"global": {"proxy": {"autoInject": auto_inject}}} if auto_inject else {}
    return InjectorPolicy.from_values({**VALUES, **glob})


@pytest.mark.parametrize(
    ("auto_inject", "labels", "annotations", "refused"),
    [
        (None, {}, {}, None),  # the chart's default policy: enabled
        (None, {"app": "batch"}, {}, "neverInjectSelector {app=batch}"),
        (None, {"app": "batch", "sidecar.istio.io/inject": "true"}, {}, None),  # explicit beats the selectors
        (None, {"app": "batch"}, {"sidecar.istio.io/inject": "true"}, None),
        (None, {"app": "batch"}, {"sidecar.istio.io/inject": "yes"}, "neverInjectSelector"),  # not a value: unset
        (None, {"app": "batch", "tier": "edge"}, {}, "neverInjectSelector"),  # never is checked first
        ("disabled", {}, {}, "global.proxy.autoInject is disabled"),
        ("disabled", {"tier": "api"}, {}, None),
        ("disabled", {"sidecar.istio.io/inject": "true"}, {}, None),
        ("disabled", {"tier": "api", "app": "batch"}, {}, "neverInjectSelector"),
        ("off", {"sidecar.istio.io/inject": "true"}, {}, "neither enabled nor disabled"),
    ],
)
def test_refuses_as_istiod_decides(auto_inject: str | None, labels: dict, annotations: dict,
                                   refused: str | None) -> None:
    why = policy(auto_inject).refuses(labels, annotations)
    assert why is None if refused is None else refused in (why or "")


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {"app": "x"}, False),  # empty: istiod skips it
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, {"a": ""}, False),  # invalid
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, {"a": "2"}, False),  # invalid
        ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)
def test_never_selectors_match_as_label_selectors_do(selector: dict, labels: dict, matches: bool) -> None:
    refused = InjectorPolicy(never=(selector,)).refuses(labels, {})
    assert (refused is not None) is matches


def test_props_round_trip() -> None:
    p = policy("disabled")
    assert InjectorPolicy.from_props(p.props()) == p
    assert InjectorPolicy.from_props(None) == InjectorPolicy()


def test_the_program_hands_each_revisions_injector_to_the_mesh_rollout() -> None:
    config = {"revisions": {"r1": {"version": "1.30.2", "values": {**VALUES, "global": {"proxy": {
        "autoInject": "disabled"}}}}, "r2": {"version": "1.30.2"}}, "namespaces": {"shop": "r1"}}
    injectors = simulate(config)[DATA_PLANE].inputs["injectors"]
    assert injectors == {"r1": policy("disabled").props()}  # r2: nothing moves to it, and its policy is the default
    assert injectors["r1"]["never"] == [NEVER] and injectors["r1"]["root_namespace"] == "istio-system"
    config["namespaces"] = {"shop": "r2"}
    assert simulate(config)[DATA_PLANE].inputs["injectors"] == {}
