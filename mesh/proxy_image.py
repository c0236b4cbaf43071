"""The proxy image a revision's injector gives pods now, and whether a running pod has it. Pure.

Istio's rule, from istio/istio: the `istio-proxy` container's `image` in the istiod chart's
`files/injection-template.yaml` and `files/gateway-injection-template.yaml`, and `ProxyImage`,
`imageURL` and `updateImageTypeIfPresent` in `pkg/kube/inject/inject.go`:

- the pod annotation `sidecar.istio.io/proxyImage`, else `global.proxy.image`, is used as is when it
  contains "/" (a full image reference; an annotation without "/" is ignored);
- otherwise the image is `<global.hub>/<global.proxy.image or proxyv2>:<global.tag>`, with the image
  type appended as `-<type>`: the mesh config's `defaultConfig.image.imageType` (the chart's
  `configmap.yaml` fills it from `global.proxy.variant`, else `global.variant`, and a non-empty
  `meshConfig.defaultConfig.image.imageType` value overrides that), else `global.variant`; the pod
  annotation `sidecar.istio.io/proxyImageType` overrides it per pod. A known type already ending the
  tag is replaced, and the type `default` means none.

The image type can also come from ProxyConfig: resources and the pod's `proxy.istio.io/config` annotation
(`configured_image_type`); a pod whose type is its own is compared without type suffixes. A pod template's
own `istio-proxy` container with an image keeps that image (the injector applies the container as an
override and records it in `proxy.istio.io/overrides`): such a proxy is left alone, like a hand-set image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

from mesh.charts import istiod_values
from mesh.istio_vocabulary import (
    AUTO_IMAGE,
    PROXY_CONFIG_ANNOTATION,
    PROXY_CONTAINER,
    PROXY_IMAGE_ANNOTATION,
    PROXY_IMAGE_TYPE_ANNOTATION,
    PROXY_OVERRIDES_ANNOTATION,
    REV_LABEL,
)
from mesh.spec import MeshSpec

KNOWN_IMAGE_TYPES = ("distroless", "debug")
"""The image types Istio publishes (`KnownImageTypes`): the ones replaced when already ending a tag."""
DEFAULT_IMAGE_TYPE = "default"


def _mapping(values: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = values.get(key)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    """A value as Go's `fmt.Sprint` writes it into the template; unset is empty."""
    return "" if value is None else str(value)


def with_image_type(tag: str, image_type: str) -> str:
    """Istio's `updateImageTypeIfPresent`: `1.30.1` + `distroless` -> `1.30.1-distroless`."""
    if not image_type:
        return tag
    for known in KNOWN_IMAGE_TYPES:
        if tag.endswith(f"-{known}"):
            tag = tag.removesuffix(f"-{known}")
            break
    return tag if image_type == DEFAULT_IMAGE_TYPE else f"{tag}-{image_type}"


def proxy_image_from_values(values: Mapping[str, Any]) -> str:
    """The image the injector writes into pods without image annotations, from istiod chart values."""
    glob = _mapping(values, "global")
    name = _text(_mapping(glob, "proxy").get("image")) or "proxyv2"
    if "/" in name:
        return name
    mesh_default = _mapping(_mapping(_mapping(values, "meshConfig"), "defaultConfig"), "image")
    image_type = (
        _text(mesh_default.get("imageType"))
        or _text(_mapping(glob, "proxy").get("variant"))
        or _text(glob.get("variant"))
    )
    return f"{_text(glob.get('hub'))}/{name}:{with_image_type(_text(glob.get('tag')), image_type)}"


EXTERNAL_IMAGE = "external"
"""The `proxy_image` of a MeshRollout entry on an external revision: the stack renders nothing it could be computed
from, so the MeshRollout (and the review) read it from the cluster when the entry moves (mesh.external_revision)."""


def proxy_image(spec: MeshSpec, revision: str) -> str:
    """The image revision `revision` injects now: computed from the values its istiod chart is rendered
    with (hub from `hub` or the revision's `values.global.hub`, tag = its version), never read from the cluster;
    `EXTERNAL_IMAGE` for a revision installed outside the stack."""
    if spec.revisions[revision].external:
        return EXTERNAL_IMAGE
    return proxy_image_from_values(istiod_values(spec, revision))


@dataclass(frozen=True)
class ImageRef:
    """An image reference split as the container runtime reads it, with Docker Hub's short names expanded."""

    repository: str
    tag: str | None
    digest: str | None


def parse_image(ref: str) -> ImageRef:
    """`[registry/]path[:tag][@digest]`; `istio/proxyv2` and `docker.io/istio/proxyv2` are the same repository."""
    name, _, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    repository, tag = (name[:colon], name[colon + 1 :]) if colon > slash else (name, None)
    first, _, rest = repository.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = "docker.io", repository
    if first == "index.docker.io":
        first = "docker.io"
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return ImageRef(f"{first}/{rest}", tag, digest or None)


@dataclass(frozen=True)
class PodProxy:
    """What a pod's spec says about its proxy."""

    image: str | None = None
    """The `istio-proxy` container's image (in containers, or in initContainers as a native sidecar)."""
    pinned: str | None = None
    """A `sidecar.istio.io/proxyImage` the injection template uses as is (it contains "/")."""
    image_type: str | None = None
    """The pod's own image type: its `sidecar.istio.io/proxyImageType`, else ProxyConfig's (`configured_image_type`)."""
    override: str | None = None
    """The image of the pod template's own `istio-proxy` container, which the injector keeps."""


def pod_proxy(spec: Mapping[str, Any], annotations: Mapping[str, str]) -> PodProxy:
    """Read the proxy facts of a pod from its spec and annotations (API dicts); ProxyConfig resources are
    applied later, by whoever read them (`configured_image_type`)."""
    image = None
    for key in ("containers", "initContainers"):
        found = [c.get("image") for c in spec.get(key) or [] if c.get("name") == PROXY_CONTAINER]
        if found:
            image = found[0]
            break
    pinned = annotations.get(PROXY_IMAGE_ANNOTATION)
    return PodProxy(
        image=image,
        pinned=pinned if pinned and "/" in pinned else None,
        image_type=annotations.get(PROXY_IMAGE_TYPE_ANNOTATION) or _image_type_of(_annotation_config(annotations)),
        override=_override(annotations),
    )


def _override(annotations: Mapping[str, str]) -> str | None:
    """The image of the `istio-proxy` container the injector recorded as the template's own, unless `auto`."""
    try:
        overrides = json.loads(annotations.get(PROXY_OVERRIDES_ANNOTATION) or "{}")
    except ValueError:
        return None
    if not isinstance(overrides, Mapping):
        return None
    for key in ("containers", "initContainers"):
        for c in overrides.get(key) or []:
            if not isinstance(c, Mapping) or c.get("name") != PROXY_CONTAINER:
                continue
            if c.get("image") not in (None, "", AUTO_IMAGE):
                return str(c["image"])
    return None


def _annotation_config(annotations: Mapping[str, str]) -> Any:
    """The pod's `proxy.istio.io/config` (YAML); one istiod cannot parse counts as absent, as istiod ignores it."""
    raw = annotations.get(PROXY_CONFIG_ANNOTATION)
    if not raw:
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return None


def _image_type_of(config: Any) -> str | None:
    """`image.imageType` of a ProxyConfig resource's spec or an annotation's config, if set."""
    image = config.get("image") if isinstance(config, Mapping) else None
    image_type = image.get("imageType") if isinstance(image, Mapping) else None
    return str(image_type) if image_type else None


def proxy_configs_for(objects: Iterable[Mapping[str, Any]], revision: str) -> list[Mapping[str, Any]]:
    """The ProxyConfig resources a revision's istiod reads (no `istio.io/rev` label, or its own), oldest first,
    the order in which istiod picks the first of a rank."""
    mine = [o for o in objects if ((o.get("metadata") or {}).get("labels") or {}).get(REV_LABEL) in (None, revision)]
    return sorted(mine, key=lambda o: str((o.get("metadata") or {}).get("creationTimestamp") or ""))


def configured_image_type(namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str],
                          proxy_configs: list[Mapping[str, Any]], root_namespace: str) -> str | None:
    """The image type a pod gets from ProxyConfig, None when none sets one (then the revision's values decide).

    As istio/istio `pilot/pkg/model/proxy_config.go` `EffectiveProxyConfig` ranks them: the oldest resource of
    the pod's namespace whose `selector.matchLabels` its labels include, then the pod's `proxy.istio.io/config`
    annotation, then the oldest resource without a selector in its namespace, then in the root namespace. The
    pod's `sidecar.istio.io/proxyImageType` beats all of them (`ProxyImage`).
    """

    def first(ns: str, selected: bool) -> Any:
        """The oldest resource of `ns` of a rank: matchLabels the pod's labels include, or no selector at all."""
        for pc in proxy_configs:
            if (pc.get("metadata") or {}).get("namespace") != ns:
                continue
            spec = pc.get("spec") or {}
            wanted = (spec.get("selector") or {}).get("matchLabels") or {}
            if selected and wanted and all(labels.get(k) == v for k, v in wanted.items()):
                return spec
            if not selected and spec.get("selector") is None:
                return spec
        return None

    ranks = [first(namespace, True), _annotation_config(annotations),
             first(namespace, False) if namespace != root_namespace else None, first(root_namespace, False)]
    pod_type = annotations.get(PROXY_IMAGE_TYPE_ANNOTATION)
    return pod_type or next((t for t in map(_image_type_of, ranks) if t), None)


class ProxyState(Enum):
    CURRENT = "runs the expected proxy image"
    STALE = "runs another proxy image"
    NO_PROXY = "has no istio-proxy container to compare"
    PINNED = f"proxy image set by hand ({PROXY_IMAGE_ANNOTATION})"
    OVERRIDDEN = f"proxy image set by the pod template's own {PROXY_CONTAINER} container, which the injector keeps"
    DIGEST_ONLY = "proxy image given by digest alone (no tag to compare)"


def _base_tag(tag: str | None, image_type: str) -> str:
    """The tag without an image type suffix, for pods that choose their own type (any known type, or theirs)."""
    tag = tag or "latest"
    for suffix in (image_type, *KNOWN_IMAGE_TYPES):
        if suffix not in ("", DEFAULT_IMAGE_TYPE) and tag.endswith(f"-{suffix}"):
            return tag.removesuffix(f"-{suffix}")
    return tag


def proxy_state(proxy: PodProxy, expected: str) -> ProxyState:
    """Whether a pod runs `expected`, the image its revision injects now.

    Digests: an expected image with a digest needs that digest (the injector writes it, so a pod
    without it was injected from other values); a pod image `name:tag@digest` (a tag pinned to a
    digest by an admission policy) is compared by name and tag; a pod image with a digest and no tag
    cannot be compared and is left alone, like a hand-set proxy: restarting it would not change it.
    A pod with its own image type is compared without type suffixes (exact for the types Istio
    publishes; a custom `global.variant` then counts as part of the tag).
    """
    if proxy.image is None:
        return ProxyState.NO_PROXY
    if proxy.pinned is not None:
        return ProxyState.PINNED
    if proxy.override is not None:
        return ProxyState.OVERRIDDEN
    want, have = parse_image(expected), parse_image(proxy.image)
    if want.repository != have.repository:
        return ProxyState.STALE
    if want.digest:
        return ProxyState.CURRENT if have.digest == want.digest else ProxyState.STALE
    if have.tag is None and have.digest:
        return ProxyState.DIGEST_ONLY
    if proxy.image_type is not None:
        same = _base_tag(want.tag, proxy.image_type) == _base_tag(have.tag, proxy.image_type)
    else:
        same = (want.tag or "latest") == (have.tag or "latest")
    return ProxyState.CURRENT if same else ProxyState.STALE
