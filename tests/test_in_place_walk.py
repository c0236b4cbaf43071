"""In-place upgrades as simulated previews: a revision's new version, hub or variant updates its istiod chart
and exactly the MeshRollout entries of what is bound to it (directly or through a tag), each with the new proxy
image.

Two revisions side by side, so "exactly" has something to exclude: `stable` (tags `prod` and `default`) and
`canary`, each with namespaces bound to it by tag and by name, of every strategy, and a gateway each.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.simulation import Registration, diff, simulate
from tests.test_upgrade_walk import BASE, CHART, DATA_PLANE, GATE, GATEWAY, REVISION, entries, k, moved

STEADY: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "revisions": {"stable": {"version": "1.30.1"}, "canary": {"version": "1.31.0"}},
    "tags": {"default": "stable", "prod": "stable", "next": "canary"},
    "namespaces": {
        "shop": "prod",  # through a tag
        "billing": "stable",  # by revision name
        "reports": {"revision": "prod", "strategy": "natural"},
        "legacy": {"revision": "stable", "strategy": "none"},
        "beta": "next",
        "beta-batch": {"revision": "canary", "strategy": "natural"},
    },
    "gateways": {
        "ingress": {"namespace": "istio-ingress", "revision": "prod", "service": {"type": "ClusterIP"}},
        "beta-ingress": {"namespace": "beta-ingress", "revision": "next", "service": {"type": "ClusterIP"}},
    },
}
STABLE_NAMESPACES = ("shop", "billing", "reports", "legacy")
CANARY_NAMESPACES = ("beta", "beta-batch")


def changed(**edits: Any) -> dict[str, Any]:
    """STEADY with `edits` applied, each at the path its keyword spells with `__` (`revisions__stable__version`)."""
    config = copy.deepcopy(STEADY)
    for path, value in edits.items():
        *parents, leaf = path.split("__")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


GATEWAY_ENTRIES = {"ingress": "istio-ingress/ingress", "beta-ingress": "beta-ingress/beta-ingress"}


def rollouts(namespaces: tuple[str, ...], gateway: str) -> set[str]:
    """The MeshRollout entries of these namespaces and this gateway."""
    return {*namespaces, GATEWAY_ENTRIES[gateway]}


def istiod_chart(revision: str) -> str:
    return k((REVISION, revision), (CHART, f"istiod-{revision}"))


def gateway_chart(gateway: str) -> str:
    return k((GATEWAY, gateway), (CHART, gateway))


def proxy_images(records: dict[str, Registration]) -> dict[str, str]:
    """MeshRollout entry -> the proxy image it moves pods onto."""
    return {e: t["proxy_image"] for e, t in entries(records).items()}


@pytest.fixture(scope="module")
def steady() -> dict[str, Registration]:
    return simulate(STEADY)


def test_every_rollout_carries_the_image_its_revision_injects(steady: dict[str, Registration]) -> None:
    images = proxy_images(steady)
    stable, canary = "docker.io/istio/proxyv2:1.30.1", "docker.io/istio/proxyv2:1.31.0"
    assert images == {
        **{ns: stable for ns in STABLE_NAMESPACES},
        **{ns: canary for ns in CANARY_NAMESPACES},
        "istio-ingress/ingress": stable,
        "beta-ingress/beta-ingress": canary,
    }


def test_a_patch_version_in_place_updates_the_revision_and_exactly_its_rollouts(
    steady: dict[str, Registration],
) -> None:
    after = simulate(changed(revisions__stable__version="1.30.2"))
    d = diff(steady, after)
    assert d.added == set() and d.deleted == set()
    assert d.updated == (
        {istiod_chart("stable"), GATE, DATA_PLANE}
        | {gateway_chart("ingress")}  # the gateway chart follows its revision's version
    )
    assert moved(steady, after) == rollouts(STABLE_NAMESPACES, "ingress")
    for key in rollouts(STABLE_NAMESPACES, "ingress"):
        before, now = entries(steady)[key], entries(after)[key]
        assert (before["proxy_image"], now["proxy_image"]) == (
            "docker.io/istio/proxyv2:1.30.1", "docker.io/istio/proxyv2:1.30.2")
        assert {n for n in now if now[n] != before.get(n)} == {"proxy_image"}, "the revision did not move"


def test_a_minor_version_in_place_also_moves_base_when_it_becomes_the_newest(steady: dict[str, Registration]) -> None:
    after = simulate(changed(revisions__canary__version="1.32.0"))
    assert diff(steady, after).updated == {istiod_chart("canary"), GATE, BASE, gateway_chart("beta-ingress"),
                                           DATA_PLANE}
    assert moved(steady, after) == rollouts(CANARY_NAMESPACES, "beta-ingress")


def test_a_hub_change_updates_every_revision_and_every_rollout_but_no_gateway_chart(
    steady: dict[str, Registration],
) -> None:
    """Gateway pods get their image by injection (`image: auto`): the gateway chart does not carry the hub."""
    after = simulate(changed(hub="mirror.example/istio"))
    d = diff(steady, after)
    assert d.updated == {istiod_chart("stable"), istiod_chart("canary"), DATA_PLANE}
    assert moved(steady, after) == rollouts(STABLE_NAMESPACES, "ingress") | rollouts(CANARY_NAMESPACES, "beta-ingress")
    assert set(proxy_images(after).values()) == {
        "mirror.example/istio/proxyv2:1.30.1", "mirror.example/istio/proxyv2:1.31.0"}


@pytest.mark.parametrize(
    "values",
    [
        {"global": {"hub": "mirror.example/istio"}},
        {"global": {"variant": "distroless"}},
        {"global": {"proxy": {"image": "registry.example/istio/proxyv2-fips:1.30.1"}}},
    ],
    ids=["hub", "variant", "full image"],
)
def test_a_revisions_own_image_values_update_only_its_chart_and_rollouts(
    steady: dict[str, Registration], values: dict[str, Any]
) -> None:
    after = simulate(changed(revisions__stable__values=values))
    assert diff(steady, after).updated == {istiod_chart("stable"), DATA_PLANE}
    assert moved(steady, after) == rollouts(STABLE_NAMESPACES, "ingress")
    assert proxy_images(after)["beta"] == proxy_images(steady)["beta"]


def test_moving_a_tag_to_a_revision_of_another_version_moves_revision_and_image_together(
    steady: dict[str, Registration],
) -> None:
    after = simulate(changed(tags={**STEADY["tags"], "prod": "canary"}))
    shop = entries(after)["shop"]
    assert (shop["revision"], shop["proxy_image"]) == ("canary", "docker.io/istio/proxyv2:1.31.0")
    assert "billing" not in moved(steady, after), "bound to stable by name: stays"


@pytest.mark.parametrize(
    "config",
    [changed(revisions__stable__version="1.30.2"), changed(hub="mirror.example/istio")],
    ids=["version", "hub"],
)
def test_rolling_back_an_in_place_change_is_its_inverse(steady: dict[str, Registration], config: dict) -> None:
    after = simulate(config)
    assert diff(after, steady) == diff(steady, after).inverse()
