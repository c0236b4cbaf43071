"""Istio's own words: the label and annotation keys, values and names the program reads and writes.

They are Istio's wire contract, not ours to choose: a typo in one silently selects nothing. Defined
once here, so every module (webhooks, bindings, rollouts, the drain guard, the review) means the same
key by the same name, and a reader finds what Istio decides in one place
(istio-revisions.md describes the rules behind them). Names and values only; the rules that use them
live with their users.
"""

from __future__ import annotations

from typing import Literal, get_args

ISTIO_NAMESPACE = "istio-system"
"""Where istiod, base and the tag webhooks' Services live (`global.istioNamespace`)."""

REV_LABEL = "istio.io/rev"
"""Namespace or pod label asking for a tag or revision; also on istiod's pods and the tag webhooks."""
REV_ANNOTATION = "istio.io/rev"
"""Annotation the injector puts on every pod it injects: the revision whose proxy the pod runs."""
TAG_LABEL = "istio.io/tag"
"""Label naming the tag a tag webhook or Service belongs to."""

LEGACY_INJECTION_LABEL = "istio-injection"
"""The namespace label from before revisions; it beats `istio.io/rev` (`enabled` goes to the default tag)."""
LEGACY_INJECTION_ENABLED = "enabled"

INJECT_KEY = "sidecar.istio.io/inject"
"""Pod label (or legacy annotation): "false" opts a pod out of injection, "true" opts a revisionless pod in."""

DEFAULT_TAG = "default"
"""The tag that also serves the legacy `istio-injection=enabled` label and decides `defaultRevision`."""
REVISIONLESS = "default"
"""The revision name a revisionless istiod writes into the `istio.io/rev` annotation of the pods it injects."""

NEVER_INJECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "local-path-storage")
"""Namespaces Istio never injects: the istiod chart's `auto.` webhook entry leaves them out (in this order,
as rendered into existing webhooks: reordering would change them)."""

PROXY_CONTAINER = "istio-proxy"
"""The sidecar container the injector adds."""
PROXY_IMAGE_ANNOTATION = "sidecar.istio.io/proxyImage"
"""Set on a pod (template) by hand to choose its proxy image: the rollout leaves such pods alone."""
PROXY_IMAGE_TYPE_ANNOTATION = "sidecar.istio.io/proxyImageType"
"""Chooses a pod's image type (`debug`, `distroless`, `default`): the version still follows the revision."""
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
"""A pod's own ProxyConfig (YAML); its `image.imageType` ranks below a workload ProxyConfig resource's."""
PROXY_OVERRIDES_ANNOTATION = "proxy.istio.io/overrides"
"""Written by the injector: the pod template's own `istio-proxy` container (JSON), whose image it keeps."""
AUTO_IMAGE = "auto"
"""The image a template's `istio-proxy` container names to take the injected one (gateways)."""


def istiod_service(revision: str) -> str:
    """The Service in front of a revision's istiod (the istiod chart names it so)."""
    return f"istiod-{revision}"


Strategy = Literal["rolling", "natural", "none"]
"""How running pods move after their binding changes: `rolling` restarts workloads now, `natural` waits
for their next deploy, `none` only labels. Istio never restarts running pods itself: these are the
program's words, kept here beside the labels whose change they follow."""
ROLLING: Strategy = "rolling"
NATURAL: Strategy = "natural"
NONE: Strategy = "none"
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
