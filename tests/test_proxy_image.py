"""The proxy image a revision injects (Istio's injection template rule) and whether a pod runs it."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.proxy_image import (
    ImageRef,
    PodProxy,
    ProxyState,
    configured_image_type,
    parse_image,
    pod_proxy,
    proxy_configs_for,
    proxy_image,
    proxy_image_from_values,
    proxy_state,
    with_image_type,
)
from mesh.spec import load_spec
from mesh.workloads import Pod, Target, is_stale

# --- what the injector writes -------------------------------------------------------------------


def spec(hub: str | None = None, **values: Any) -> Any:
    config: dict[str, Any] = {"revisions": {"stable": {"version": "1.30.1", "values": values}}}
    if hub is not None:
        config["hub"] = hub
    return load_spec(config)


@pytest.mark.parametrize(
    ("hub", "values", "image"),
    [
        (None, {}, "docker.io/istio/proxyv2:1.30.1"),
        ("mirror.example:5000/istio", {}, "mirror.example:5000/istio/proxyv2:1.30.1"),
        # the revision's own global.hub wins over the stack's hub (it is merged over the program's values)
        ("mirror.example/istio", {"global": {"hub": "other.example/mesh"}}, "other.example/mesh/proxyv2:1.30.1"),
        (None, {"global": {"variant": "distroless"}}, "docker.io/istio/proxyv2:1.30.1-distroless"),
        (None, {"global": {"proxy": {"variant": "debug"}, "variant": "distroless"}},
         "docker.io/istio/proxyv2:1.30.1-debug"),  # the chart's mesh config takes proxy.variant first
        (None, {"meshConfig": {"defaultConfig": {"image": {"imageType": "debug"}}},
                "global": {"variant": "distroless"}},
         "docker.io/istio/proxyv2:1.30.1-debug"),  # meshConfig values override the chart's mesh config
        (None, {"global": {"variant": "default"}}, "docker.io/istio/proxyv2:1.30.1"),
        (None, {"global": {"proxy": {"image": "proxyv2-fips"}}}, "docker.io/istio/proxyv2-fips:1.30.1"),
        # a full reference (it contains "/") is used as is: no hub, no tag, no variant
        (None, {"global": {"proxy": {"image": "registry.example/istio/proxyv2:1.30.1-fips"}, "variant": "debug"}},
         "registry.example/istio/proxyv2:1.30.1-fips"),
        (None, {"global": {"proxy": {"image": "registry.example/istio/proxyv2@sha256:0f1e"}}},
         "registry.example/istio/proxyv2@sha256:0f1e"),
        # a ":" without "/" is not a full reference to the template: hub and tag are still added, as istiod does
        (None, {"global": {"proxy": {"image": "proxyv2:custom"}}}, "docker.io/istio/proxyv2:custom:1.30.1"),
    ],
)
def test_the_image_a_revision_injects(hub: str | None, values: dict[str, Any], image: str) -> None:
    assert proxy_image(spec(hub, **values), "stable") == image


def test_the_tag_is_the_revision_version_and_a_version_or_hub_change_changes_the_image() -> None:
    before = load_spec({"revisions": {"stable": {"version": "1.30.1"}, "canary": {"version": "1.31.0"}}})
    after = load_spec({"revisions": {"stable": {"version": "1.30.2"}, "canary": {"version": "1.31.0"}}})
    assert proxy_image(before, "stable") == "docker.io/istio/proxyv2:1.30.1"
    assert proxy_image(after, "stable") == "docker.io/istio/proxyv2:1.30.2"
    assert proxy_image(before, "canary") == proxy_image(after, "canary")


def test_values_without_a_hub_give_what_istiod_would_write() -> None:
    assert proxy_image_from_values({"global": {"tag": "1.30.1"}}) == "/proxyv2:1.30.1"


@pytest.mark.parametrize(
    ("tag", "image_type", "result"),
    [
        ("1.30.1", "", "1.30.1"),
        ("1.30.1", "distroless", "1.30.1-distroless"),
        ("1.30.1-distroless", "debug", "1.30.1-debug"),  # a known type already there is replaced
        ("1.30.1-distroless", "default", "1.30.1"),
        ("1.30.1-asm.1", "distroless", "1.30.1-asm.1-distroless"),
    ],
)
def test_image_types_as_istio_appends_them(tag: str, image_type: str, result: str) -> None:
    assert with_image_type(tag, image_type) == result


# --- reading references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("docker.io/istio/proxyv2:1.30.1", ImageRef("docker.io/istio/proxyv2", "1.30.1", None)),
        ("istio/proxyv2:1.30.1", ImageRef("docker.io/istio/proxyv2", "1.30.1", None)),
        ("index.docker.io/istio/proxyv2", ImageRef("docker.io/istio/proxyv2", None, None)),
        ("busybox", ImageRef("docker.io/library/busybox", None, None)),
        ("localhost/istio/proxyv2:1", ImageRef("localhost/istio/proxyv2", "1", None)),
        ("mirror.example:5000/istio/proxyv2", ImageRef("mirror.example:5000/istio/proxyv2", None, None)),
        ("mirror.example:5000/istio/proxyv2:1.30.1@sha256:ab",
         ImageRef("mirror.example:5000/istio/proxyv2", "1.30.1", "sha256:ab")),
        ("gcr.io/istio/proxyv2@sha256:ab", ImageRef("gcr.io/istio/proxyv2", None, "sha256:ab")),
    ],
)
def test_parse_image(ref: str, parsed: ImageRef) -> None:
    assert parse_image(ref) == parsed


# --- whether a pod runs it --------------------------------------------------------------------------

NOW = "docker.io/istio/proxyv2:1.30.2"


@pytest.mark.parametrize(
    ("proxy", "expected", "state"),
    [
        (PodProxy("docker.io/istio/proxyv2:1.30.2"), NOW, ProxyState.CURRENT),
        (PodProxy("istio/proxyv2:1.30.2"), NOW, ProxyState.CURRENT),  # the same image, written short
        (PodProxy("docker.io/istio/proxyv2:1.30.1"), NOW, ProxyState.STALE),  # a version change
        (PodProxy("docker.io/istio/proxyv2:1.30.2"), "mirror.example/istio/proxyv2:1.30.2", ProxyState.STALE),  # hub
        (PodProxy("docker.io/istio/proxyv2:1.30.2"), f"{NOW}-distroless", ProxyState.STALE),  # variant
        (PodProxy("docker.io/istio/proxyv2"), NOW, ProxyState.STALE),  # latest
        # a tag pinned to its digest by an admission policy is still that tag
        (PodProxy("docker.io/istio/proxyv2:1.30.2@sha256:aa"), NOW, ProxyState.CURRENT),
        (PodProxy("docker.io/istio/proxyv2:1.30.1@sha256:aa"), NOW, ProxyState.STALE),
        # a digest alone cannot be compared with a tag: left alone, since a restart would not change it
        (PodProxy("docker.io/istio/proxyv2@sha256:aa"), NOW, ProxyState.DIGEST_ONLY),
        (PodProxy("docker.io/istio/proxyv2@sha256:aa"), "mirror.example/istio/proxyv2:1.30.2", ProxyState.STALE),
        # an expected digest (a full global.proxy.image) must be there
        (PodProxy("r.example/istio/proxyv2@sha256:aa"), "r.example/istio/proxyv2@sha256:aa", ProxyState.CURRENT),
        (PodProxy("r.example/istio/proxyv2:1@sha256:aa"), "r.example/istio/proxyv2@sha256:aa", ProxyState.CURRENT),
        (PodProxy("r.example/istio/proxyv2@sha256:bb"), "r.example/istio/proxyv2@sha256:aa", ProxyState.STALE),
        (PodProxy("r.example/istio/proxyv2:1"), "r.example/istio/proxyv2:1@sha256:aa", ProxyState.STALE),
        # set by hand: whatever it runs is the owner's choice
        (PodProxy("docker.io/istio/proxyv2:1.29.0", pinned="registry.example/own/proxyv2:1.29.0"), NOW,
         ProxyState.PINNED),
        # a pod that chose its own image type follows the version, whatever the type
        (PodProxy("docker.io/istio/proxyv2:1.30.2-debug", image_type="debug"), NOW, ProxyState.CURRENT),
        (PodProxy("docker.io/istio/proxyv2:1.30.2", image_type="default"), f"{NOW}-distroless", ProxyState.CURRENT),
        (PodProxy("docker.io/istio/proxyv2:1.30.1-debug", image_type="debug"), NOW, ProxyState.STALE),
        (PodProxy(), NOW, ProxyState.NO_PROXY),  # e.g. a proxyless gRPC template: the revision decides
    ],
)
def test_proxy_state(proxy: PodProxy, expected: str, state: ProxyState) -> None:
    assert proxy_state(proxy, expected) is state


def test_a_pod_injected_by_another_revision_is_told_apart_by_its_revision_not_its_image() -> None:
    """Two revisions at one version inject the same image: the image says nothing about the revision,
    so the planner compares the revision annotation first (mesh.workloads.is_stale)."""
    same_image = PodProxy(NOW)
    other = Pod("ns", "p", "canary", None, True, True, proxy=same_image)
    assert proxy_state(same_image, NOW) is ProxyState.CURRENT
    assert is_stale(other, Target("stable", NOW))
    assert not is_stale(Pod("ns", "p", "stable", None, True, True, proxy=same_image), Target("stable", NOW))


@pytest.mark.parametrize(
    ("annotations", "pinned"),
    [
        ({"sidecar.istio.io/proxyImage": "registry.example/own/proxyv2:1"}, "registry.example/own/proxyv2:1"),
        ({"sidecar.istio.io/proxyImage": "proxyv2-own"}, None),  # without "/" the template ignores it
        ({}, None),
    ],
)
def test_only_a_full_proxy_image_annotation_pins_the_proxy(annotations: dict[str, str], pinned: str | None) -> None:
    spec = {"containers": [{"name": "istio-proxy", "image": NOW}]}
    assert pod_proxy(spec, annotations) == PodProxy(NOW, pinned)


def proxy_config(name: str, namespace: str, image_type: str | None, match: dict | None = None,
                 created: str = "2026-01-01T00:00:00Z", revision: str | None = None) -> dict:
    spec: dict = {"image": {"imageType": image_type}} if image_type else {"concurrency": 2}
    if match is not None:
        spec["selector"] = {"matchLabels": match}
    labels = {"istio.io/rev": revision} if revision else {}
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created, "labels": labels},
            "spec": spec}


ROOT = proxy_config("mesh", "istio-system", "distroless")
SHOP = proxy_config("shop", "shop", "debug")
WEB = proxy_config("web", "shop", "default", {"app": "web"})
ANNOTATED = {"proxy.istio.io/config": "image:\n  imageType: distroless\n"}


@pytest.mark.parametrize(
    ("configs", "labels", "annotations", "expected"),
    [
        ([], {}, {}, None),
        ([ROOT], {}, {}, "distroless"),
        ([ROOT, SHOP], {}, {}, "debug"),  # the namespace's beats the root namespace's
        ([ROOT, SHOP], {}, ANNOTATED, "distroless"),  # the annotation beats the namespace's
        ([ROOT, SHOP, WEB], {"app": "web"}, ANNOTATED, "default"),  # a workload resource beats the annotation
        ([WEB], {"app": "api"}, {}, None),  # its selector does not match
        ([ROOT, proxy_config("no-image", "shop", None)], {}, {}, "distroless"),  # the first sets no image: next rank
        ([proxy_config("new", "shop", "debug", created="2026-02-01T00:00:00Z"),
          proxy_config("old", "shop", "distroless", created="2026-01-01T00:00:00Z")], {}, {}, "distroless"),
        ([ROOT], {}, {"sidecar.istio.io/proxyImageType": "debug"}, "debug"),  # the pod's own type beats all
        ([proxy_config("other", "shop", "debug", revision="1-29-0")], {}, {}, None),  # another revision's
        ([proxy_config("mine", "shop", "debug", revision="b")], {}, {}, "debug"),
    ],
)
def test_configured_image_type_ranks_as_istiod_merges_proxy_config(
    configs: list, labels: dict, annotations: dict, expected: str | None
) -> None:
    found = configured_image_type("shop", labels, annotations, proxy_configs_for(configs, "b"), "istio-system")
    assert found == expected
